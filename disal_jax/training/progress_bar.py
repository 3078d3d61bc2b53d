"""One progress bar per training cycle on a terminal; per-epoch log lines elsewhere.

On a terminal (stderr is a TTY) a cycle shows as one tqdm bar over its epochs with the last
epoch's loss, accuracy and images/s and tqdm's ETA; the per-epoch figures still go to
metrics.jsonl and TensorBoard. Redirected to a file (a batch job, the tests) the trainer
writes its per-epoch log lines instead, which a log keeps better than a redrawn bar.
"""

from __future__ import annotations

import sys
from typing import Optional, TextIO

import jax
from tqdm import tqdm


def on_terminal(stream: Optional[TextIO] = None) -> bool:
  """Whether bars should be drawn on `stream` (stderr by default): a TTY, and this process
  is the one that prints (process 0 of a multi-host run)."""
  stream = sys.stderr if stream is None else stream
  return bool(getattr(stream, "isatty", lambda: False)()) and jax.process_index() == 0


class CycleBar:
  """The bar of one cycle; `update` after each epoch, `close` at its end (idempotent)."""

  def __init__(
    self, tag: str, cycle: int, epochs: int, done: int = 0, stream: Optional[TextIO] = None
  ):
    stream = sys.stderr if stream is None else stream
    label = f"[{tag}] cycle {cycle}" if tag else f"cycle {cycle}"
    self._bar = tqdm(
      total=epochs,
      initial=done,
      desc=label,
      unit="epoch",
      file=stream,
      dynamic_ncols=True,
      leave=True,
    )

  def update(self, metrics: dict[str, float]) -> None:
    """Advances the bar one epoch, showing its loss, accuracy and images per second."""
    postfix = {
      "loss": f"{metrics['loss']:.4f}",
      "acc": f"{metrics['accuracy']:.3f}",
      "img/s": f"{metrics['images_per_second']:.0f}",
    }
    self._bar.set_postfix(postfix, refresh=False)
    self._bar.update(1)

  def close(self) -> None:
    """Closes the bar."""
    self._bar.close()

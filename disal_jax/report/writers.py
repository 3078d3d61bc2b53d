"""Metric writers: a JSONL file (read by reports and tests) and TensorBoard event files.

TensorBoard files come from tensorboardX (pure Python + protobuf) rather than clu's
metric_writers, which import TensorFlow at import time (docs/design.md: design notes).
"""

from __future__ import annotations

import json
import math
import pathlib
import time
from typing import Any


class NullWriter:
  """What a non-primary process of a multi-host run writes: nothing (disal_jax.distributed)."""

  def write(self, step: int, scalars: dict[str, Any], **context) -> None:
    """Writes nothing."""
    del step, scalars, context

  def close(self) -> None:
    """Nothing to close."""
    pass


class MetricWriter:
  """Writes scalars to `<dir>/metrics.jsonl` and, if enabled, TensorBoard under `<dir>/tb`."""

  def __init__(self, directory: str | pathlib.Path, tensorboard: bool = True):
    self.directory = pathlib.Path(directory)
    self.directory.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(self.directory / "metrics.jsonl", "a", encoding="utf-8")
    self._tb = None
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel

      self._tb = SummaryWriter(str(self.directory / "tb"))

  def write(self, step: int, scalars: dict[str, Any], **context) -> None:
    """Appends one JSON line of `scalars` (and `context`) at `step`; TensorBoard too where
    enabled."""
    row = {
      "step": int(step),
      "time": time.time(),
      **context,
      **{k: _plain(v) for k, v in scalars.items()},
    }
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for key, value in scalars.items():
        if isinstance(value, (int, float)) and math.isfinite(value):
          self._tb.add_scalar(key, value, int(step))

  def close(self) -> None:
    """Closes the JSON lines file and the TensorBoard writer."""
    self._jsonl.close()
    if self._tb is not None:
      self._tb.close()


def _plain(value):
  return value if isinstance(value, (str, int, type(None))) else float(value)

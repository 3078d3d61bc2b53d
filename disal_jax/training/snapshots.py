"""Per-epoch copies of the model's variables during a cycle (TracInCP's checkpoints).

Where they live is a config choice (`tracin.store`): 'device' memory (fastest to replay,
costs accelerator memory), 'host' memory, or 'disk' (one .npz per epoch in a folder that is
deleted on close). The store counts the bytes it holds and the seconds it spends, because
that cost is the point of comparing TracInCP with DISAL.
"""

from __future__ import annotations

import pathlib
import shutil
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from disal_jax.training import sharding
from disal_jax.training.state import TrainState

STORES = ("device", "host", "disk")


class SnapshotStore:
  """Keeps {'params', 'batch_stats'} after each epoch from `first_epoch` on, with its lr.

  Use as the trainer's epoch callback: `store(state, epoch, lr)`.
  """

  def __init__(self, where: str, directory: pathlib.Path, first_epoch: int = 0):
    if where not in STORES:
      raise ValueError(f"snapshot store {where!r}: expected one of {STORES}")
    self.where = where
    self.directory = pathlib.Path(directory)
    self.first_epoch = first_epoch
    self.learning_rates: list[float] = []
    self.epochs: list[int] = []
    self._items: list[Any] = []
    self._treedef = None
    self.nbytes = 0
    self.seconds = 0.0

  def __call__(self, state: TrainState, epoch: int, lr: float) -> None:
    if epoch < self.first_epoch:
      return
    t0 = time.perf_counter()
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    leaves, self._treedef = jax.tree.flatten(variables)
    if self.where == "device":
      item = [jnp.copy(x) for x in leaves]  # the state is donated to the next step
      jax.block_until_ready(item)
    else:
      item = [np.asarray(x) for x in jax.device_get(leaves)]
      if self.where == "disk":
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"epoch{epoch:04d}.npz"
        np.savez(path, *item)
        item = path
    self.nbytes += sum(int(x.size) * x.dtype.itemsize for x in leaves)
    self._items.append(item)
    self.learning_rates.append(float(lr))
    self.epochs.append(epoch)
    self.seconds += time.perf_counter() - t0

  def __len__(self) -> int:
    return len(self._items)

  def variables(self, i: int, mesh: Mesh) -> Any:
    """Snapshot i as {'params', 'batch_stats'}, replicated on the mesh."""
    item = self._items[i]
    if self.where == "disk":
      with np.load(item) as f:
        item = [f[f"arr_{j}"] for j in range(len(f.files))]
    return sharding.put_replicated(jax.tree.unflatten(self._treedef, item), mesh)

  def metrics(self) -> dict[str, float]:
    """The snapshots' count, bytes and seconds spent storing them."""
    return {
      "snapshots": float(len(self)),
      "snapshot_bytes": float(self.nbytes),
      "snapshot_seconds": self.seconds,
    }

  def close(self) -> None:
    """Drops the snapshots (and their folder, when stored on disk)."""
    self._items.clear()
    if self.where == "disk" and self.directory.exists():
      shutil.rmtree(self.directory)

"""What every benchmark shares: machine facts, timing, peak memory, the JSON record."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import time
from importlib import metadata
from typing import Any, Callable

import jax
import numpy as np
import optax
from absl import flags

from disal_jax.experiment import base_config
from disal_jax.loop import model_config
from disal_jax.models.registry import build_model
from disal_jax.strategies.base import ScoringContext, scoring_data
from disal_jax.training import record as record_lib
from disal_jax.training import sharding
from disal_jax.training.snapshots import SnapshotStore
from disal_jax.training.trainer import CycleResult, Trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
# The real CIFAR-10 as an image-folder archive, where this project's machines keep it.
CIFAR10_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
_DATA_DIR = flags.DEFINE_string(
    "data_dir", str(CIFAR10_ARCHIVE),
    "Image folder (root/<split>/<class>/<image>) or its .tar.gz the benchmarks read.")


def cifar_config(num_train: int, width: int, cache_dir: str):
  """The paper's config on the first-drawn `num_train` training images of --data_dir (the
  real CIFAR-10 JPEGs by default)."""
  config = base_config()
  config.data.name = "image_folder"
  config.data.data_dir = _DATA_DIR.value
  config.data.cache_dir = cache_dir
  config.data.max_train = num_train
  config.data.max_test = 100
  config.model.width = width
  return config


def scoring_context(config, dataset, mesh, strategy, labeled, candidates, key, workdir
                    ) -> tuple[Trainer, ScoringContext]:
  """A strategy's ScoringContext after a stand-in cycle: random weights, start parameters
  0.01 away, one recorded epoch, one TracInCP checkpoint (throughput does not depend on the
  values)."""
  trainer = Trainer(config, build_model(model_config(config, strategy), dataset.num_classes),
                    dataset, mesh)
  state = trainer.init_state(jax.random.key(0))
  start = jax.tree.map(lambda x: x + 0.01 * jax.random.normal(key, x.shape), state.params)
  pool_length = trainer.padded_pool_length(len(candidates), 0)
  probs = trainer.pool_probs(state, candidates, pool_length)
  record = record_lib.PoolRecord(probs, np.float32(1), np.int32(1), None, None)
  padded = np.zeros(pool_length, np.int32)
  padded[:len(candidates)] = candidates
  pool_index = jax.device_put(padded, sharding.along_data(mesh))
  result = CycleResult(state, start, record, pool_index, {}, [], 0.0, 0.0)
  callback = None
  if strategy.make_epoch_callback is not None:
    callback = SnapshotStore("device", workdir)
    callback(state, 0, 0.1)
  return trainer, ScoringContext(config, scoring_data(trainer), result, candidates, labeled, key, 0,
                                 callback)


def plain_train_step(net, tx):
  """(params, batch_stats, opt_state, images, labels) -> the three updated: one cross-entropy
  step of a linen classifier with BatchNorm in train mode (the yardstick the benchmarks share)."""
  def train_step(params, batch_stats, opt_state, inputs, y):
    def objective(p):
      out, updates = net.apply({"params": p, "batch_stats": batch_stats}, inputs, train=True,
                               mutable=["batch_stats"])
      return optax.softmax_cross_entropy_with_integer_labels(out["logits"], y).mean(), updates
    grads, updates = jax.grad(objective, has_aux=True)(params)
    new_updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, new_updates), updates["batch_stats"], opt_state
  return train_step


def machine() -> dict[str, Any]:
  versions = {}
  for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "device_count": jax.device_count(),
          "versions": versions, "xla_flags": os.environ.get("XLA_FLAGS", ""),
          "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def timed(fn: Callable[[], Any]) -> float:
  """Wall seconds of fn(), waiting for JAX's asynchronous work to finish."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def best_time(fn: Callable[[], Any], rerun_below: float = 30.0) -> float:
  """timed(fn), and the faster of two runs when the first takes under `rerun_below` seconds
  (a first full-size call also compiles the small eager ops around the jitted ones)."""
  first = timed(fn)
  return min(first, timed(fn)) if first < rerun_below else first


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(name: str, payload: dict[str, Any], out_dir: str) -> pathlib.Path:
  path = pathlib.Path(out_dir) / f"{name}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
  return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
  def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)
  cells = [[fmt(v) for v in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
  line = lambda r: "| " + " | ".join(v.rjust(w) for v, w in zip(r, widths)) + " |"
  return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                    *map(line, cells)])

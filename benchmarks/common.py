"""What every benchmark shares: machine facts, timing, peak memory, the JSON record."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Callable, Optional

import jax
import numpy as np
import optax
from absl import flags

from disal_jax.data.dataset import Dataset
from disal_jax.experiment import base_config
from disal_jax.loop import model_config
from disal_jax.models.registry import build_model
from disal_jax.strategies import disal
from disal_jax.strategies import registry as strategy_registry
from disal_jax.strategies.base import ScoringContext, scoring_data
from disal_jax.training import record as record_lib
from disal_jax.training import sharding
from disal_jax.training.snapshots import SnapshotStore
from disal_jax.training.trainer import CycleResult, Recording, Trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
# The real CIFAR-10 as an image-folder archive, where this project's machines keep it.
CIFAR10_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
_DATA_DIR = flags.DEFINE_string(
  "data_dir",
  str(CIFAR10_ARCHIVE),
  "Image folder (root/<split>/<class>/<image>) or its .tar.gz the benchmarks read.",
)


def data_dir() -> str:
  """--data_dir: the image folder or archive the benchmarks read (the real CIFAR-10 JPEGs by
  default)."""
  return _DATA_DIR.value


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
  # Benchmarks time DISAL's own training and scoring at any size: neither of its small-budget
  # guards may swap in plain training or Random's picks (docs/disal.md).
  config.disal.loss_guard = "off"
  config.disal.cold_start_labels_per_class = 0.0
  return config


def scoring_context(
  config, dataset, mesh, strategy, labeled, candidates, key, workdir
) -> tuple[Trainer, ScoringContext]:
  """A strategy's ScoringContext after a stand-in cycle: random weights, start parameters
  0.01 away, one recorded epoch, one TracInCP checkpoint (throughput does not depend on the
  values)."""
  trainer = Trainer(
    config, build_model(model_config(config, strategy), dataset.num_classes), dataset, mesh
  )
  state = trainer.init_state(jax.random.key(0))
  start = jax.tree.map(lambda x: x + 0.01 * jax.random.normal(key, x.shape), state.params)
  pool_length = trainer.padded_pool_length(len(candidates), 0)
  probs = trainer.pool_probs(state, candidates, pool_length)
  record = record_lib.PoolRecord(probs, np.float32(1), np.int32(1))
  padded = np.zeros(pool_length, np.int32)
  padded[: len(candidates)] = candidates
  pool_index = jax.device_put(padded, sharding.along_data(mesh))
  result = CycleResult(state, start, record, pool_index, {}, [], 0.0, 0.0)
  callback = None
  if strategy.make_epoch_callback is not None:
    callback = SnapshotStore("device", workdir)
    callback(state, 0, 0.1)
  return trainer, ScoringContext(
    config, scoring_data(trainer), result, candidates, labeled, key, 0, callback
  )


def synthetic_dataset(
  num_train: int, num_test: int, image_size: int = 32, num_classes: int = 10, seed: int = 0
) -> Dataset:
  """Uniform random uint8 images (image_size x image_size x 3) with random labels: CIFAR's
  shapes where only throughput, memory and compilations are measured (they do not depend on
  the pixel values)."""
  rng = np.random.default_rng(seed)
  shape = (image_size, image_size, 3)
  return Dataset(
    "synthetic",
    rng.integers(0, 256, (num_train, *shape), np.uint8),
    rng.integers(0, num_classes, num_train).astype(np.int32),
    rng.integers(0, 256, (num_test, *shape), np.uint8),
    rng.integers(0, num_classes, num_test).astype(np.int32),
    tuple(str(c) for c in range(num_classes)),
  )


def disal_branch_config(config, **overrides):
  """`config` with DISAL's branch in every epoch (the timed ones included) and the given
  config.disal overrides."""
  config = config.copy_and_resolve_references()
  config.disal.branch_start_fraction = 0.0
  for key, value in overrides.items():
    config.disal[key] = value
  return config


def train_cycle(config, dataset, mesh, labeled, pool, hook=None) -> tuple[Trainer, CycleResult]:
  """One cycle of the real trainer from fresh weights: config.train.epochs epochs on the
  `labeled` rows (L,), recording the `pool` rows (P,) as `hook` needs (DISAL's hook or None).
  Returns the trainer and its result; the first epoch compiles."""
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, mesh, hook=hook
  )
  level = "none" if hook is None else disal.record_level(config)
  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    labeled,
    pool,
    (0, 0),
    cycle=0,
    recording=Recording(level),
  )
  return trainer, result


def steady_images_per_second(result: CycleResult) -> float:
  """The fastest epoch's labeled images/s after the first (which compiles): the trainer's
  wall time over the steps (host work included, the recording pass excluded)."""
  return max(e["images_per_second"] for e in result.epochs[1:])


def forward_seconds(config, dataset, mesh, labeled, candidates, workdir) -> float:
  """Seconds of one forward pass (softmax outputs) over the `candidates` rows, compiled
  beforehand on one batch: the floor every scorer is compared with."""
  trainer, ctx = scoring_context(
    config,
    dataset,
    mesh,
    strategy_registry.get_strategy("random"),
    labeled,
    candidates,
    jax.random.key(1),
    workdir,
  )
  length = trainer.padded_pool_length(len(candidates), 0)
  batch = config.train.eval_batch_size
  trainer.pool_probs(ctx.result.state, candidates[:batch], length)  # compile
  return best_time(lambda: trainer.pool_probs(ctx.result.state, candidates, length))


def scorer_seconds(
  config, dataset, mesh, name: str, labeled, candidates, k: int, workdir: str
) -> float:
  """Seconds of strategy `name`'s real scoring path (score + select of k) over the
  `candidates` rows after a stand-in cycle (`scoring_context`), compiled beforehand on one
  batch of config.train.eval_batch_size candidates."""
  strategy = strategy_registry.get_strategy(name)
  _, ctx = scoring_context(
    config, dataset, mesh, strategy, labeled, candidates, jax.random.key(1), workdir
  )
  small = dataclasses.replace(ctx, candidates=candidates[: config.train.eval_batch_size])
  strategy.select(strategy.score(small), small, 1)  # compile on one batch
  return best_time(lambda: strategy.select(strategy.score(ctx), ctx, k))


class CompileLog:
  """Records XLA compilations while active (jit's cache misses, eager ops included; a hit in
  the persistent compilation cache counts too): the compiled functions' names in order, and
  the count at marks the caller sets (`mark(name)`)."""

  EVENT = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.names: list[str] = []
    self.marks: dict[str, int] = {}

  def _listen(self, event: str, _seconds: float, **kwargs) -> None:
    if event == self.EVENT:
      self.names.append(str(kwargs.get("fun_name", "?")))

  def mark(self, name: str) -> None:
    self.marks[name] = len(self.names)

  def __enter__(self) -> "CompileLog":
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listen)


FIGURES_PREFIX = "FIGURES "  # a child process's last line of this prefix holds its JSON


def print_figures(figures: dict[str, Any]) -> None:
  """A child process's figures, as `run_child` reads them."""
  print(FIGURES_PREFIX + json.dumps(figures), flush=True)


def run_child(module: str, args: list[str], env: Optional[dict[str, str]] = None) -> dict[str, Any]:
  """Runs `python -m module *args` (its peak memory and compilations its own) and returns
  the figures it printed with `print_figures`; raises with its stderr's end if it failed."""
  out = subprocess.run(
    [sys.executable, "-m", module, *args], capture_output=True, text=True, check=False, env=env
  )
  lines = [line for line in out.stdout.splitlines() if line.startswith(FIGURES_PREFIX)]
  if out.returncode != 0 or not lines:
    raise RuntimeError(f"{module} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
  return json.loads(lines[-1][len(FIGURES_PREFIX) :])


def plain_train_step(net, tx):
  """(params, batch_stats, opt_state, images, labels) -> the three updated: one cross-entropy
  step of a linen classifier with BatchNorm in train mode (the yardstick the benchmarks share)."""

  def train_step(params, batch_stats, opt_state, inputs, y):
    def objective(p):
      out, updates = net.apply(
        {"params": p, "batch_stats": batch_stats}, inputs, train=True, mutable=["batch_stats"]
      )
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
  return {
    "platform": platform.platform(),
    "python": platform.python_version(),
    "cpu_count": os.cpu_count(),
    "jax_backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "device_count": jax.device_count(),
    "versions": versions,
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
    "time": time.strftime("%Y-%m-%d %H:%M:%S"),
  }


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
  return write_json_to(pathlib.Path(out_dir) / f"{name}.json", payload)


def write_json_to(path: pathlib.Path, payload: dict[str, Any]) -> pathlib.Path:
  """Writes {'machine': machine(), **payload} to `path` (its folder made if needed)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
  return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
  def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)

  cells = [[fmt(v) for v in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
  line = lambda r: "| " + " | ".join(v.rjust(w) for v, w in zip(r, widths)) + " |"
  return "\n".join(
    [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)]
  )

"""One command for the day an accelerator is lent: the figures docs/performance.md lacks.

  python -m benchmarks.device_check [--json=PATH] [--sections=train,cycle,scoring]
  timeout 540 python -m benchmarks.device_check     # on the GPU machine (docs/performance.md)
  python -m benchmarks.device_check --smoke         # the same code paths, toy sizes, on CPU

Sized for about 8 minutes on one H100/H200-class GPU. Three sections, each printed as a
table when it ends; the JSON is rewritten after every row, so a run cut short keeps what it
measured, and a section that fails is recorded with its error while the others still run
(the exit status is then 1). The JSON goes to --json, else $OUT/device_check.json when $OUT
is set, else ./device_check.json; "complete" is true once every section ran.

train: the trainer's train step (CIFAR ResNet-18 at --width, batch --batch_size, 32x32
  synthetic images: throughput does not depend on the pixels) in float32 and bfloat16
  (model.dtype), then DISAL's branch step in float32. Per dtype:
  - loop img/s: `Trainer.train_cycle` over 3 epochs of --steps steps, the faster of the two
    epochs after the first (which compiles): the host's whole work per step (batch indices,
    their transfer, the call, the metrics) with the device's, as an AL run pays it;
  - device img/s: the same jitted step called --steps times back to back on one batch
    already on the device (the state chained from call to call, donated), timed from the
    first call to `block_until_ready` of the last state: the device's time per step with no
    host work between steps to wait for;
  - dispatch ms/step: the host's time to issue those calls (until the last returns, before
    the block): near the device's time per step, the host is what limits the step;
  - GFLOP/step from XLA's cost analysis of the compiled step
    (`jit(...).lower(...).compile().cost_analysis()`, the executable the loop runs), and MFU
    = those flops / device time / the device's peak for the dtype (PEAK_TFLOPS; omitted, and
    said so, for a device not in it).
  DISAL's branch against the plain step: the ratio of their loop times per step (float32).
scoring: seconds and samples/s of each scorer family over a --pool of candidates, through
  the strategies' real score + select (5% picked) after a stand-in cycle, compiled on one
  batch first (common.scorer_seconds): the forward pass (the floor), entropy, DISAL's jvp,
  MC-Dropout's passes, the one-pass per-sample gradient norms (gradnorm_entropy) and BADGE's
  gradient embedding with its k-means++.
cycle: --cycles cycles of the paper's CIFAR-10 protocol (10% labeled, +5% per cycle, the
  whole pool scored, ResNet-18) with --epochs epochs each, through the real loop
  (`disal_jax.loop.run_experiment`), for random and disal, each in its own process: the
  seconds of cycle 1 (compiled in cycle 0; train, record, scoring), the run's wall time, the
  peak device memory (`memory_stats()['peak_bytes_in_use']`, where the device reports it)
  and peak RSS, and the XLA compilations (common.CompileLog) in the cycles after the first,
  with their names: 0 means nothing retraced as the labeled set grew. The images are the real
  CIFAR-10 JPEG archive at --data_dir when it is there, else synthetic ones of its shape.
  The children allocate device memory as they need it (XLA_PYTHON_CLIENT_PREALLOCATE=false
  unless set), since this process may hold the GPU's default preallocation.
  Three cycles by default: the last cycle does not score, so cycle 1 is the one full cycle
  (train, record, score) that runs compiled.

--smoke runs every section at toy sizes (SMOKE: width 4, 16x16 images, a 64-image pool, one
epoch) on whatever device there is, in about two minutes on a 2-core CPU (compiling); the
size flags are then ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pathlib
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Optional

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings
from disal_jax.experiment import base_config
from disal_jax.strategies import disal
from disal_jax.strategies import registry as strategy_registry
from disal_jax.training import sharding
from disal_jax.training import trainer as trainer_lib

SECTIONS = ("train", "cycle", "scoring")
_SMOKE = flags.DEFINE_bool("smoke", False, "Toy sizes (SMOKE), seconds on a CPU.")
_JSON = flags.DEFINE_string(
  "json",
  "",
  "Where to write the JSON; '' = $OUT/device_check.json "
  "when $OUT is set, else ./device_check.json.",
)
_SECTIONS = flags.DEFINE_list("sections", list(SECTIONS), f"Sections to run, of {SECTIONS}.")
_WIDTH = flags.DEFINE_integer("width", 64, "ResNet-18 width (64 = the standard model).")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Training batch size.")
_STEPS = flags.DEFINE_integer("steps", 50, "Train steps per timed epoch and per device timing.")
_POOL = flags.DEFINE_integer("pool", 10_000, "Candidates each scorer scores.")
_SCORERS = flags.DEFINE_list(
  "scorers",
  ["entropy", "disal", "mc_dropout", "gradnorm_entropy", "badge"],
  "Strategies whose scoring is timed.",
)
_EPOCHS = flags.DEFINE_integer("epochs", 2, "Epochs per cycle in the cycle section.")
_CYCLES = flags.DEFINE_integer("cycles", 3, "Cycles per run in the cycle section (>= 2).")
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_CHILD = flags.DEFINE_string("child", "", "Internal: run the cycle section for this strategy.")

# Peak dense TFLOP/s per device by compute dtype, from the vendors' data sheets, keyed by a
# substring of `device.device_kind` (lower case); the first match wins, so specific names
# come first. float32 on NVIDIA is the CUDA-core figure: XLA may run float32 convolutions on
# TF32 tensor cores (jax_default_matmul_precision), so float32 MFU can exceed 1. TPUs have no
# float32 units (their float32 runs as several bfloat16 passes): omitted.
PEAK_TFLOPS: tuple[tuple[str, Optional[dict[str, float]]], ...] = (
  ("h100 pcie", {"bfloat16": 756.0, "float32": 51.0}),
  ("h100", {"bfloat16": 989.0, "float32": 67.0}),  # SXM
  ("h200", {"bfloat16": 989.0, "float32": 67.0}),  # SXM (the H100's chip, more memory)
  ("a100", {"bfloat16": 312.0, "float32": 19.5}),
  ("tpu v4 lite", None),  # v4i: not in the table
  ("tpu v4", {"bfloat16": 275.0}),
  ("tpu v5 lite", {"bfloat16": 197.0}),  # v5e
  ("tpu v5e", {"bfloat16": 197.0}),
  ("tpu v5p", {"bfloat16": 459.0}),
  ("tpu v5", {"bfloat16": 459.0}),  # v5p's device_kind
)
# Compiled and pre-pass flop counts further apart than this factor are reported: a backend's
# cost analysis may not count work inside its library calls (cuDNN convolutions, say).
FLOPS_MISMATCH = 2.0
TRAIN_EPOCHS = 3  # the first compiles; the faster of the other two is kept
PICK_FRACTION = 20  # scorers pick 1/20 (5%) of the candidates, the protocol's step
MIB = 2**20
Save = Callable[[dict[str, Any]], None]  # writes a section's figures so far to the JSON


@dataclasses.dataclass(frozen=True)
class Settings:
  """Sizes of one run (the flags', or SMOKE's).

  Attributes:
    width, batch_size, image_size: the model's width, the train batch, images' side.
    steps: train steps per timed epoch, and calls in the device timing.
    pool, labeled, eval_batch_size: the scoring section's candidates, labeled rows (CoreSet
      style centres; BADGE's and DISAL's contexts read them) and batch.
    scorers: strategies whose scoring is timed.
    epochs, cycles: the cycle section's epochs per cycle and cycles per run.
    cycle_train, cycle_test: the synthetic set's sizes when the archive is not used.
    use_archive: read the real CIFAR-10 archive at --data_dir when it exists.
  """

  width: int
  batch_size: int
  image_size: int
  steps: int
  pool: int
  labeled: int
  eval_batch_size: int
  scorers: tuple[str, ...]
  epochs: int
  cycles: int
  cycle_train: int
  cycle_test: int
  use_archive: bool


CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000
SMOKE = Settings(
  width=4,
  batch_size=8,
  image_size=16,
  steps=2,
  pool=64,
  labeled=16,
  eval_batch_size=32,
  scorers=tuple(_SCORERS.default),
  epochs=1,
  cycles=3,
  cycle_train=200,
  cycle_test=32,
  use_archive=False,
)


def settings() -> Settings:
  if _SMOKE.value:
    return SMOKE
  return Settings(
    width=_WIDTH.value,
    batch_size=_BATCH.value,
    image_size=32,
    steps=_STEPS.value,
    pool=_POOL.value,
    labeled=1_000,
    eval_batch_size=500,
    scorers=tuple(_SCORERS.value),
    epochs=_EPOCHS.value,
    cycles=_CYCLES.value,
    cycle_train=CIFAR10_TRAIN,
    cycle_test=CIFAR10_TEST,
    use_archive=True,
  )


def peak_tflops(device_kind: str, dtype: str) -> Optional[float]:
  """The device's peak dense TFLOP/s for `dtype` from PEAK_TFLOPS, or None when unknown."""
  kind = device_kind.lower()
  for key, peaks in PEAK_TFLOPS:
    if key in kind:
      return None if peaks is None else peaks.get(dtype)
  return None


def flops_of(cost_analysis: Any) -> float:
  """The 'flops' of a compiled executable's cost analysis (a dict, or one per device in
  older JAX versions: the first)."""
  if isinstance(cost_analysis, (list, tuple)):
    cost_analysis = cost_analysis[0]
  return float(cost_analysis["flops"])


def json_path() -> pathlib.Path:
  if _JSON.value:
    return pathlib.Path(_JSON.value)
  return pathlib.Path(os.environ.get("OUT") or ".") / "device_check.json"


def _config(s: Settings, dtype: str = "float32"):
  config = base_config()
  config.model.width = s.width
  config.model.dtype = dtype
  config.train.batch_size = s.batch_size
  config.train.eval_batch_size = s.eval_batch_size
  config.data.placement = "device"  # the splits stay on the device: nothing streams
  # DISAL's own training and scoring at any size: no small-budget guard (docs/disal.md)
  config.disal.loss_guard = "off"
  config.disal.cold_start_labels_per_class = 0.0
  return config


# -- train ----------------------------------------------------------------------------------
def _device_timing(
  trainer: trainer_lib.Trainer, state, labeled: np.ndarray, calls: int
) -> dict[str, float]:
  """The plain train step of `trainer` (the loop's own jitted function) on one pre-staged
  batch: XLA's flops per step, and seconds per step on the device and to dispatch.

  Args:
    trainer: a Trainer without a hook whose train split is on the device.
    state: a trained state (donated here: not usable afterwards).
    labeled: (L,) rows the batch is drawn from.
    calls: steps timed back to back.
  Returns:
    {'flops_per_step' (the compiled step's), 'flops_per_step_lowered' (before XLA's
    passes), 'device_seconds_per_step', 'dispatch_seconds_per_step'}.
  """
  step = trainer_lib.jitted_steps(
    trainer.mesh, trainer.preprocess, None, trainer.pixel_stride
  ).train
  along = sharding.along_data(trainer.mesh)
  rows, fresh = trainer_lib.epoch_batches(
    np.random.default_rng(0), labeled, trainer.config.train.batch_size
  )
  # the rate is the state's schedule's, past the cycle's end: its last (decayed) value
  batch = {"index": sharding.put_host(rows[0], along), "fresh": sharding.put_host(fresh[0], along)}
  data, aux = trainer.train_data, {}
  lowered = step.lower(state, data, batch, aux)
  # the loop's executable (same function, shapes and shardings): jit's cache, no compile
  flops = flops_of(lowered.compile().cost_analysis())
  # a cross-check: the same analysis of the program before XLA's passes (no custom calls)
  flops_lowered = flops_of(lowered.cost_analysis())
  state, _ = step(state, data, batch, aux)  # a first call outside the timing
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(calls):
    state, _ = step(state, data, batch, aux)
  t1 = time.perf_counter()
  jax.block_until_ready(state)
  t2 = time.perf_counter()
  return {
    "flops_per_step": flops,
    "flops_per_step_lowered": flops_lowered,
    "device_seconds_per_step": (t2 - t0) / calls,
    "dispatch_seconds_per_step": (t1 - t0) / calls,
  }


def train_section(s: Settings, mesh, save: Save) -> dict[str, Any]:
  labeled_count = s.batch_size * s.steps  # one pass is one timed epoch
  dataset = common.synthetic_dataset(2 * labeled_count, s.eval_batch_size, s.image_size)
  labeled = np.arange(labeled_count)
  pool = np.arange(labeled_count, 2 * labeled_count)  # DISAL's pool batches come from it
  kind = jax.devices()[0].device_kind
  figures: dict[str, Any] = {}
  section = {
    "device_kind": kind,
    "labeled": labeled_count,
    "figures": figures,
    # None: the backend's default (float32 may run as TF32 on NVIDIA GPUs)
    "default_matmul_precision": getattr(jax.config, "jax_default_matmul_precision", None),
  }
  for dtype in ("float32", "bfloat16"):
    config = _config(s, dtype)
    config.train.epochs = TRAIN_EPOCHS
    trainer, result = common.train_cycle(config, dataset, mesh, labeled, pool)
    loop_rate = common.steady_images_per_second(result)
    row = {
      "loop_images_per_second": loop_rate,
      "loop_seconds_per_step": s.batch_size / loop_rate,
      **_device_timing(trainer, result.state, labeled, s.steps),
    }
    row["device_images_per_second"] = s.batch_size / row["device_seconds_per_step"]
    peak = peak_tflops(kind, dtype)
    row["peak_tflops"] = peak
    row["mfu"] = (
      None
      if peak is None
      else row["flops_per_step"] / row["device_seconds_per_step"] / (peak * 1e12)
    )
    figures[f"plain {dtype}"] = row
    save(section)
  config = common.disal_branch_config(_config(s))
  config.train.epochs = TRAIN_EPOCHS
  _, result = common.train_cycle(config, dataset, mesh, labeled, pool, disal.make_hook(config))
  rate = common.steady_images_per_second(result)
  plain = figures["plain float32"]["loop_images_per_second"]
  figures["disal branch float32"] = {
    "loop_images_per_second": rate,
    "loop_seconds_per_step": s.batch_size / rate,
    "step_time_vs_plain": plain / rate,
  }
  return section


def _num(value: Any) -> Any:
  """A table cell: thousands as whole numbers with separators; other values as they are."""
  if isinstance(value, float) and abs(value) >= 1000:
    return f"{value:,.0f}"
  return value


def _ms(f: dict[str, Any], key: str) -> Any:
  return 1e3 * f[key] if key in f else "-"


def train_table(section: dict[str, Any]) -> str:
  rows = []
  for name, f in section["figures"].items():
    mfu = f.get("mfu")
    rows.append(
      [
        name,
        _num(f["loop_images_per_second"]),
        _ms(f, "loop_seconds_per_step"),
        _num(f.get("device_images_per_second", "-")),
        _ms(f, "device_seconds_per_step"),
        _ms(f, "dispatch_seconds_per_step"),
        f["flops_per_step"] / 1e9 if "flops_per_step" in f else "-",
        "-" if mfu is None else f"{100 * mfu:.1f}%",
        f.get("step_time_vs_plain", 1.0),
      ]
    )
  lines = [
    common.table(
      [
        "train step",
        "loop img/s",
        "loop ms/step",
        "device img/s",
        "device ms/step",
        "dispatch ms/step",
        "GFLOP/step",
        "MFU",
        "time x plain",
      ],
      rows,
    )
  ]
  unknown = [n for n, f in section["figures"].items() if "mfu" in f and f["mfu"] is None]
  if unknown:
    lines.append(
      f"MFU omitted for {', '.join(unknown)}: no peak for device kind "
      f"{section['device_kind']!r} and that dtype in PEAK_TFLOPS."
    )
  for name, f in section["figures"].items():
    if "flops_per_step" in f and not (
      1 / FLOPS_MISMATCH < f["flops_per_step"] / f["flops_per_step_lowered"] < FLOPS_MISMATCH
    ):
      lines.append(
        f"{name}: the compiled step's cost analysis counts "
        f"{f['flops_per_step'] / 1e9:.3g} GFLOP, the program before XLA's passes "
        f"{f['flops_per_step_lowered'] / 1e9:.3g}: read its MFU with care."
      )
  return "\n".join(lines)


# -- scoring --------------------------------------------------------------------------------
def scoring_section(s: Settings, mesh, save: Save) -> dict[str, Any]:
  dataset = common.synthetic_dataset(s.labeled + s.pool, s.eval_batch_size, s.image_size)
  config = _config(s)
  labeled = np.arange(s.labeled)
  candidates = np.arange(s.labeled, s.labeled + s.pool)
  k = max(1, s.pool // PICK_FRACTION)
  figures: dict[str, Any] = {}
  section = {"pool": s.pool, "picks": k, "figures": figures}
  with tempfile.TemporaryDirectory(prefix="disal_jax_device_check_") as workdir:
    forward = common.forward_seconds(config, dataset, mesh, labeled, candidates, workdir)
    figures["forward"] = {
      "seconds": forward,
      "samples_per_second": s.pool / forward,
      "x_forward": 1.0,
    }
    for name in s.scorers:
      seconds = common.scorer_seconds(config, dataset, mesh, name, labeled, candidates, k, workdir)
      figures[name] = {
        "seconds": seconds,
        "samples_per_second": s.pool / seconds,
        "x_forward": seconds / forward,
      }
      print(f"scoring {name}: {seconds:.2f} s", flush=True)
      save(section)
  return section


def scoring_table(section: dict[str, Any]) -> str:
  return common.table(
    ["scorer", "seconds", "samples/s", "x forward time"],
    [
      [n, f["seconds"], _num(f["samples_per_second"]), f["x_forward"]]
      for n, f in section["figures"].items()
    ],
  )


# -- cycle ----------------------------------------------------------------------------------
class _CycleMarks(logging.Handler):
  """Marks `compiles` at the loop's end-of-cycle line ('[tag] cycle N: ...'), logged after
  the cycle's training, evaluation and selection."""

  END_OF_CYCLE = "[%s] cycle %d:"

  def __init__(self, compiles: common.CompileLog):
    super().__init__(logging.INFO)
    self.compiles = compiles

  def emit(self, record: logging.LogRecord) -> None:
    if isinstance(record.msg, str) and record.msg.startswith(self.END_OF_CYCLE):
      self.compiles.mark(f"cycle{record.args[1]}")


def cycle_child(strategy: str, s: Settings) -> dict[str, Any]:
  """Runs the protocol's first s.cycles cycles of `strategy` through the loop; its figures."""
  from disal_jax import loop  # pylint: disable=import-outside-toplevel

  config = _config(s)
  config.data.placement = "auto"  # as a run would
  config.strategies = strategy
  config.full_training = False
  config.train.epochs = s.epochs
  config.checkpoint.every_epochs = 0  # the loop still saves at each cycle's end
  config.al.final_fraction = config.al.initial_fraction + (s.cycles - 1) * config.al.step_fraction
  archive = pathlib.Path(common.data_dir())
  dataset = None
  if s.use_archive and archive.exists():
    config.data.name = "image_folder"
    config.data.data_dir = str(archive)
    config.data.cache_dir = _CACHE.value
    source = f"CIFAR-10 archive {archive}"
  else:
    dataset = common.synthetic_dataset(s.cycle_train, s.cycle_test, s.image_size)
    source = (
      f"synthetic {s.cycle_train} + {s.cycle_test} images "
      f"{s.image_size}x{s.image_size}x3, 10 classes"
    )
  loop_log = logging.getLogger(loop.__name__)
  loop_log.setLevel(logging.INFO)
  with (
    tempfile.TemporaryDirectory(prefix="disal_jax_device_check_") as workdir,
    common.CompileLog() as compiles,
  ):
    marks = _CycleMarks(compiles)
    loop_log.addHandler(marks)
    try:
      t0 = time.perf_counter()
      rows = loop.run_experiment(config, workdir, dataset=dataset)[strategy]
      wall = time.perf_counter() - t0
    finally:
      loop_log.removeHandler(marks)
  last = f"cycle{len(rows) - 1}"
  if "cycle0" not in compiles.marks or last not in compiles.marks:
    raise RuntimeError(
      f"the loop's end-of-cycle lines {_CycleMarks.END_OF_CYCLE!r} were not "
      f"seen (marks {compiles.marks}): the compile count needs them"
    )
  later = compiles.names[compiles.marks["cycle0"] : compiles.marks[last]]
  stats = jax.devices()[0].memory_stats() or {}
  steady = rows[1]
  return {
    "data": source,
    "labeled": [r.labeled for r in rows],
    "run_seconds": wall,
    "cycles": [
      {
        "train_seconds": r.train_seconds,
        "record_seconds": r.record_seconds,
        "scoring_seconds": r.scoring_seconds,
        "cycle_seconds": r.train_seconds + r.record_seconds + r.scoring_seconds,
      }
      for r in rows
    ],
    "cycle1_seconds": steady.train_seconds + steady.record_seconds + steady.scoring_seconds,
    "peak_device_bytes": stats.get("peak_bytes_in_use"),
    "peak_rss_mib": common.peak_rss_mib(),
    "compiles_through_first_cycle": compiles.marks["cycle0"],
    "compiles_after_first_cycle": len(later),
    "compiled_after_first_cycle": later,
  }


def cycle_section(s: Settings, save: Save) -> dict[str, Any]:
  env = dict(os.environ)
  # the parent may hold the GPU's default preallocation (75%): the child takes what it uses
  env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  args = [a for a in sys.argv[1:] if not a.startswith(("--child", "--json", "--sections"))]
  figures: dict[str, Any] = {}
  section = {"epochs": s.epochs, "cycles": s.cycles, "figures": figures}
  for strategy in ("random", "disal"):
    figures[strategy] = common.run_child(
      "benchmarks.device_check", [*args, f"--child={strategy}"], env
    )
    figures[strategy]["cycle1_x_random"] = (
      figures[strategy]["cycle1_seconds"] / figures["random"]["cycle1_seconds"]
    )
    print(f"cycle {strategy}: {figures[strategy]['run_seconds']:.1f} s", flush=True)
    save(section)
  return section


def cycle_table(section: dict[str, Any]) -> str:
  rows = []
  for name, f in section["figures"].items():
    steady = f["cycles"][1]
    peak = f["peak_device_bytes"]
    rows.append(
      [
        name,
        steady["train_seconds"],
        steady["record_seconds"],
        steady["scoring_seconds"],
        f["cycle1_seconds"],
        f["cycle1_x_random"],
        f["run_seconds"],
        "n/a" if peak is None else _num(peak / MIB),
        _num(f["peak_rss_mib"]),
        f["compiles_after_first_cycle"],
      ]
    )
  lines = [
    common.table(
      [
        "strategy",
        "train s",
        "record s",
        "scoring s",
        "cycle 1 s",
        "x random",
        "run s",
        "peak device MiB",
        "peak RSS MiB",
        "compiles after cycle 0",
      ],
      rows,
    )
  ]
  first = next(iter(section["figures"].values()))
  lines.append(
    f"data: {first['data']}; labeled per cycle {first['labeled']}, "
    f"{section['epochs']} epoch(s) each"
  )
  for name, f in section["figures"].items():
    if f["compiles_after_first_cycle"]:
      lines.append(f"{name} compiled after cycle 0: {', '.join(f['compiled_after_first_cycle'])}")
  return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------
def main(argv):
  del argv
  s = settings()
  if _CHILD.value:
    common.print_figures(cycle_child(_CHILD.value, s))
    return
  unknown = sorted(set(_SECTIONS.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown sections {unknown}; known: {SECTIONS}")
  unknown = sorted(set(s.scorers) - set(strategy_registry.names()))
  if unknown:
    raise app.UsageError(f"unknown scorers {unknown}; known: {strategy_registry.names()}")
  if "cycle" in _SECTIONS.value and s.cycles < 2:
    raise app.UsageError(
      "--cycles must be at least 2: the compilations counted are the later cycles'"
    )
  path = json_path()
  payload: dict[str, Any] = {
    "smoke": _SMOKE.value,
    "settings": dataclasses.asdict(s),
    "sections": {},
    "complete": False,
  }
  mesh = sharding.make_mesh()
  run = {
    "train": functools.partial(train_section, s, mesh),
    "cycle": functools.partial(cycle_section, s),
    "scoring": functools.partial(scoring_section, s, mesh),
  }
  tables = {"train": train_table, "cycle": cycle_table, "scoring": scoring_table}
  titles = {
    "train": f"Train step: CIFAR ResNet-18 width {s.width}, batch {s.batch_size}, "
    f"{s.image_size}x{s.image_size} images, {s.steps} steps per timing",
    "cycle": f"AL cycles through disal_jax.loop, {s.epochs} epoch(s) per cycle: "
    "cycle 1's seconds (compiled in cycle 0)",
    "scoring": f"Scoring {s.pool} candidates, ResNet-18 width {s.width}",
  }
  print(
    f"{jax.device_count()} {jax.default_backend()} device(s): {jax.devices()[0].device_kind}",
    flush=True,
  )
  failed = []
  for name in SECTIONS:
    if name not in _SECTIONS.value:
      continue

    def save(section, name=name):
      payload["sections"][name] = section
      common.write_json_to(path, payload)

    t0 = time.perf_counter()
    try:
      section = run[name](save)
    except Exception:  # pylint: disable=broad-except
      # one section's failure must not cost a rare device run the others' figures
      failed.append(name)
      error = traceback.format_exc()
      save({**payload["sections"].get(name, {}), "error": error[-3000:]})
      print(f"\nsection {name} failed:\n{error}", flush=True)
      continue
    section["section_seconds"] = time.perf_counter() - t0
    save(section)
    print(f"\n{titles[name]}\n\n{tables[name](section)}\n", flush=True)
  payload["complete"] = not failed
  common.write_json_to(path, payload)
  print(f"wrote {path}")
  if failed:
    raise SystemExit(f"sections failed: {failed} (their errors are in {path})")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

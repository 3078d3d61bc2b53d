"""The active-learning loop: every cycle of every run, checkpointed, with its results.

labeled set -> train (+ record the pool) -> evaluate -> score -> select top-K -> grow the
labeled set, from the first budget of `pool.budget_schedule` to the last; then Full Training
(100% of the labels) once per seed as the upper line. Every run checkpoints as it goes and
resumes where it stopped. One cycle's training and selection is `disal_jax.cycle.run_cycle`,
which the annotation rounds run too; this module keeps the run's bookkeeping around it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from disal_jax import checkpoint, distributed, pool, protocol, run_lock
from disal_jax import experiment as config_lib
from disal_jax.cycle import CycleOutcome, CycleSetup, run_cycle
from disal_jax.data import row_store
from disal_jax.data.dataset import Dataset
from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.report import tables
from disal_jax.report.writers import MetricWriter, NullWriter
from disal_jax.strategies import registry as strategy_registry
from disal_jax.strategies.base import Strategy
from disal_jax.training import record as record_lib
from disal_jax.training import sharding
from disal_jax.training.trainer import (
  Checkpointing,
  CycleProgress,
  Recording,
  Trainer,
  progress_from,
  progress_meta,
  progress_tree,
)

log = logging.getLogger(__name__)

FULL_TRAINING = "full_training"
RUN_CONFIG = "run_config.json"  # the config a run was made with, checked before resuming
CSV_COLUMNS = (
  "strategy",
  "seed",
  "cycle",
  "labeled",
  "test_accuracy",
  "test_miou",
  "test_loss",
  "val_accuracy",
  "val_miou",
  "val_loss",
  "train_seconds",
  "record_seconds",
  "scoring_seconds",
)


@dataclasses.dataclass(kw_only=True)
class CycleRecord:
  """One row of results.csv; `selected` is the rows labeled after this cycle's scoring.

  `strategy_metrics` holds what a strategy reports of its own cost (TracInCP's checkpoint
  bytes and seconds); it goes to results.json and metrics.jsonl. Segmentation runs also
  report `test_miou` (and `test_accuracy` is then the pixel accuracy); None otherwise.
  The `val_*` fields hold the same metrics on the validation split (config.data.val_fraction),
  None without one.
  """

  strategy: str
  seed: int
  cycle: int
  labeled: int
  test_accuracy: float
  test_loss: float
  train_seconds: float
  record_seconds: float
  scoring_seconds: float
  selected: list[int]
  strategy_metrics: dict[str, float] = dataclasses.field(default_factory=dict)
  test_miou: Optional[float] = None
  val_accuracy: Optional[float] = None
  val_loss: Optional[float] = None
  val_miou: Optional[float] = None


def record_level(config: ml_collections.ConfigDict, strategy: Strategy) -> str:
  """The record level to keep for `strategy`: what it needs, or config.record.keep;
  ConfigError where that keeps less than the strategy needs."""
  needed = strategy.record(config) if callable(strategy.record) else strategy.record
  keep = config.record.keep
  if keep == "auto":
    return needed
  if not record_lib.level_at_least(keep, needed):
    raise config_lib.ConfigError(
      f"config.record.keep={keep!r} is invalid for strategy {strategy.name!r}, which needs "
      f"at least {needed!r}: one of {record_lib.LEVELS[record_lib.LEVELS.index(needed) :]} "
      "or 'auto'"
    )
  return keep


def model_config(
  config: ml_collections.ConfigDict, strategy: Strategy
) -> ml_collections.ConfigDict:
  """config.model with the strategy's overrides (MC-Dropout's dropout rate) applied."""
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  if strategy.model_overrides is not None:
    model_cfg.update(strategy.model_overrides(config))
  return model_cfg


def strategy_trainer(
  config: ml_collections.ConfigDict,
  dataset: Dataset,
  strategy: Strategy,
  mesh,
  writer: Optional[MetricWriter] = None,
) -> Trainer:
  """The trainer of a strategy's runs: its model overrides and its train-step hook."""
  model = build_model(model_config(config, strategy), dataset.num_classes)
  hook = strategy.make_hook(config) if strategy.make_hook else None
  return Trainer(config, model, dataset, mesh, hook=hook, writer=writer)


def run_dir(workdir: pathlib.Path, name: str, seed: int) -> pathlib.Path:
  """The folder of one run: <workdir>/<name>/seed_<seed>."""
  return workdir / name / f"seed_{seed}"


def _write_results(directory: pathlib.Path, rows: list[CycleRecord], extra: dict[str, Any]):
  directory.mkdir(parents=True, exist_ok=True)
  payload = {**extra, "cycles": [dataclasses.asdict(r) for r in rows]}
  tmp = directory / "results.json.tmp"
  tmp.write_text(json.dumps(payload, indent=1))
  tmp.replace(directory / "results.json")
  tables.write_csv(directory / "results.csv", [dataclasses.asdict(r) for r in rows], CSV_COLUMNS)


def _plan(
  config: ml_collections.ConfigDict, name: str, num_train: int
) -> tuple[Strategy, str, list[int]]:
  """(strategy, record level, labeled count per cycle) of a run. Full Training is one cycle
  with every sample labeled: Random's strategy entry, which it never gets to use."""
  if name == FULL_TRAINING:
    return strategy_registry.get_strategy("random"), "none", [num_train]
  strategy = strategy_registry.get_strategy(name)
  return strategy, record_level(config, strategy), pool.budget_schedule(config.al, num_train)


@dataclasses.dataclass
class _Resumed:
  """Where a run stands according to its newest valid checkpoint."""

  cycle: int
  labeled_round: np.ndarray
  rows: list[CycleRecord]
  progress: Optional[CycleProgress]
  warm_state: Any
  done: bool


def _restore(
  ckpt: checkpoint.RunCheckpointer, trainer: Trainer, level: str, pool_length: int, num_train: int
) -> Optional[_Resumed]:
  def template_for(meta):
    tree = {"labeled_round": jax.ShapeDtypeStruct((num_train,), np.int32)}
    if meta["has_progress"]:
      tree["progress"] = progress_tree(trainer.progress_template(level, pool_length))
    if meta["has_warm"]:
      tree["warm"] = trainer.state_template()
    return tree

  restored = ckpt.restore_newest(template_for)
  if restored is None:
    return None
  step, tree, meta = restored
  progress = None
  if meta["has_progress"]:
    progress = trainer.place_progress(progress_from(tree["progress"], meta))
  warm = sharding.put_replicated(tree["warm"], trainer.mesh) if meta["has_warm"] else None
  log.info(
    "resuming from checkpoint %d of %s: cycle %d, %d epochs done",
    step,
    ckpt.directory,
    meta["cycle"],
    meta["epoch"],
  )
  return _Resumed(
    meta["cycle"],
    np.asarray(tree["labeled_round"]),
    [CycleRecord(**r) for r in meta["rows"]],
    progress,
    warm,
    meta["done"],
  )


@dataclasses.dataclass
class _Run:
  """One (strategy, seed) run: what its cycles share, and where it stands.

  `labeled_round` ((num_train,) int32: pool.UNLABELED, or the cycle a row was labeled in),
  `rows` and `warm_state` (the last trained state under train.warm_start, else None) change
  as cycles end; `save` checkpoints them.
  """

  name: str
  setup: CycleSetup
  counts: list[int]  # labeled rows per cycle
  out: pathlib.Path
  primary: bool  # only process 0 of a multi-host run writes files
  ckpt: checkpoint.RunCheckpointer
  writer: MetricWriter
  header: dict[str, Any]  # results.json's fields besides its cycles
  labeled_round: np.ndarray
  rows: list[CycleRecord]
  warm_state: Any

  def save(
    self, cycle: int, epoch: int, progress: Optional[CycleProgress] = None, done: bool = False
  ) -> None:
    """Checkpoints the run `epoch` epochs into `cycle`: mid-cycle with its `progress`,
    between cycles with the warm state (if any)."""
    tree = {"labeled_round": self.labeled_round}
    if progress is not None:
      tree["progress"] = progress_tree(progress)
    if self.warm_state is not None and progress is None:
      tree["warm"] = self.warm_state
    meta = {
      "cycle": cycle,
      "epoch": epoch,
      "done": done,
      "has_progress": progress is not None,
      "has_warm": "warm" in tree,
      "rows": [dataclasses.asdict(r) for r in self.rows],
      **progress_meta(progress),
    }
    self.ckpt.save(cycle * (self.setup.config.train.epochs + 1) + epoch, tree, meta)

  def close(self) -> None:
    self.ckpt.close()
    self.writer.close()


def _pool_capacity(config: ml_collections.ConfigDict, num_train: int, first_count: int) -> int:
  """The most candidates any cycle of a run scores: the first cycle's pool, or the subset."""
  capacity = num_train - first_count
  return min(capacity, config.al.subset_size) if config.al.subset_size else capacity


def _open_run(
  config: ml_collections.ConfigDict, dataset: Dataset, name: str, workdir: pathlib.Path, mesh
) -> tuple[_Run, _Resumed]:
  """Builds a run's trainer, writer and checkpointer, and finds where the run stands: its
  newest valid checkpoint, or the seeded first labeled set."""
  strategy, level, counts = _plan(config, name, dataset.num_train)
  out = run_dir(workdir, name, config.seed)
  primary = distributed.is_primary()
  out.mkdir(parents=True, exist_ok=True)
  if primary:
    (out / RUN_CONFIG).write_text(config.to_json_best_effort(indent=1))
  writer = MetricWriter(out) if primary else NullWriter()
  trainer = strategy_trainer(config, dataset, strategy, mesh, writer)
  tag = f"{name} seed {config.seed}"
  if trainer.streamed:
    log.info(
      "[%s] data placement 'stream': %.1f MiB of splits stay on the host "
      "(data.placement=%r, data.device_budget_mb=%s)",
      tag,
      row_store.split_bytes(dataset) / 2**20,
      config.data.placement,
      config.data.device_budget_mb,
    )
  recording = Recording(level, _pool_capacity(config, dataset.num_train, counts[0]))
  ckpt = checkpoint.RunCheckpointer(out / "checkpoints", config.checkpoint.keep)
  resumed = _restore(
    ckpt, trainer, level, trainer.padded_pool_length(0, recording.pool_capacity), dataset.num_train
  )
  if resumed is None:
    resumed = _Resumed(
      0, pool.initial_labeled(dataset.num_train, counts[0], config.seed), [], None, None, False
    )
  if resumed.progress is not None and strategy.make_epoch_callback is not None:
    log.info(
      "[%s] restarting cycle %d from its first epoch: %s replays every epoch's checkpoint",
      tag,
      resumed.cycle,
      name,
    )
    resumed.progress = None
  header = {
    "strategy": name,
    "seed": config.seed,
    "record": level,
    "num_train": dataset.num_train,
    "config": config.to_dict(),
  }
  run = _Run(
    name,
    CycleSetup(config, trainer, strategy, recording, out, tag),
    counts,
    out,
    primary,
    ckpt,
    writer,
    header,
    resumed.labeled_round,
    resumed.rows,
    resumed.warm_state,
  )
  return run, resumed


def _cycle_record(run: _Run, cycle: int, outcome: CycleOutcome) -> CycleRecord:
  """The results row of `cycle`: its metrics, timings and selection."""
  result = outcome.result
  return CycleRecord(
    strategy=run.name,
    seed=run.setup.config.seed,
    cycle=cycle,
    labeled=run.counts[cycle],
    test_accuracy=result.test["accuracy"],
    test_loss=result.test["loss"],
    train_seconds=result.train_seconds,
    record_seconds=result.record_seconds,
    scoring_seconds=outcome.scoring_seconds,
    selected=[int(i) for i in outcome.selected],
    strategy_metrics=outcome.strategy_metrics,
    test_miou=result.test.get("miou"),
    val_accuracy=result.val.get("accuracy"),
    val_loss=result.val.get("loss"),
    val_miou=result.val.get("miou"),
  )


def _report(run: _Run, row: CycleRecord) -> None:
  """Writes a cycle's metrics (metrics.jsonl, TensorBoard) and logs its line."""
  metrics = {"test/accuracy": row.test_accuracy, "test/loss": row.test_loss}
  if row.test_miou is not None:
    metrics["test/miou"] = row.test_miou
  for key in ("accuracy", "loss", "miou"):
    if getattr(row, f"val_{key}") is not None:
      metrics[f"val/{key}"] = getattr(row, f"val_{key}")
  run.writer.write(
    row.cycle,
    {
      **metrics,
      "time/train_seconds": row.train_seconds,
      "time/record_seconds": row.record_seconds,
      "time/scoring_seconds": row.scoring_seconds,
      **{f"strategy/{k}": v for k, v in row.strategy_metrics.items()},
    },
    cycle=row.cycle,
    labeled=row.labeled,
  )
  miou = "" if row.test_miou is None else f", mIoU {row.test_miou:.4f}"
  val = "" if row.val_accuracy is None else f", val accuracy {row.val_accuracy:.4f}"
  log.info(
    "[%s] cycle %d: %d labeled, test accuracy %.4f%s%s (train %.1fs, record %.1fs, scoring %.1fs)",
    run.setup.tag,
    row.cycle,
    row.labeled,
    row.test_accuracy,
    miou,
    val,
    row.train_seconds,
    row.record_seconds,
    row.scoring_seconds,
  )


def _next_cycle(run: _Run, cycle: int, progress: Optional[CycleProgress]) -> None:
  """Runs cycle `cycle` (continuing its restored `progress`, if any), labels its selection,
  writes the run's results and checkpoints the run at the next cycle's start."""
  config, counts = run.setup.config, run.counts
  labeled = pool.labeled_indices(run.labeled_round)
  assert len(labeled) == counts[cycle], (len(labeled), counts[cycle])
  candidates = pool.scoring_candidates(run.labeled_round, config.al.subset_size, config.seed, cycle)
  k = counts[cycle + 1] - counts[cycle] if cycle + 1 < len(counts) else 0
  if k > len(candidates):
    raise config_lib.ConfigError(
      f"config.al.subset_size={config.al.subset_size} leaves {len(candidates)} "
      f"candidates but cycle {cycle} must select {k}; raise it or set it to 0"
    )
  checkpointing = Checkpointing(
    progress, lambda p: run.save(cycle, p.epoch, progress=p), config.checkpoint.every_epochs
  )
  outcome = run_cycle(
    run.setup,
    labeled,
    candidates,
    k,
    cycle=cycle,
    warm=run.warm_state,
    checkpointing=checkpointing,
    callback_dir=run.out / f"cycle{cycle}",
  )
  if k:
    run.labeled_round = pool.add_labels(run.labeled_round, outcome.selected, cycle + 1, k)
    if run.primary:
      np.save(run.out / f"selected_cycle{cycle}.npy", np.asarray(outcome.selected, np.int64))
  run.rows.append(_cycle_record(run, cycle, outcome))
  _report(run, run.rows[-1])
  if run.primary:
    np.save(run.out / "labeled_round.npy", run.labeled_round)
    _write_results(run.out, run.rows, run.header)
  run.warm_state = outcome.result.state if config.train.warm_start else None
  run.save(cycle + 1, 0, done=cycle + 1 == len(counts))


def run_strategy(
  config: ml_collections.ConfigDict, dataset: Dataset, name: str, workdir: pathlib.Path, mesh
) -> list[CycleRecord]:
  """Runs (or resumes) every cycle of one strategy for config.seed under workdir.

  Checkpoints (disal_jax.checkpoint) are written every `checkpoint.every_epochs` epochs, when
  a cycle's training ends, and when its selection is made; a rerun continues from the newest
  valid one and makes the same selections as an uninterrupted run.
  """
  run, resumed = _open_run(config, dataset, name, workdir, mesh)
  try:
    if resumed.done:
      log.info("[%s] already complete (%d cycles); nothing to do", run.setup.tag, len(run.rows))
      return run.rows
    for cycle in range(resumed.cycle, len(run.counts)):
      _next_cycle(run, cycle, resumed.progress if cycle == resumed.cycle else None)
  finally:
    run.close()
  trainer = run.setup.trainer
  if trainer.streamed:
    log.info(
      "[%s] streamed the training split: process %d read %d of the %d rows its windows held",
      run.setup.tag,
      jax.process_index(),
      trainer.train_data.rows_read,
      trainer.train_data.rows_windowed,
    )
  return run.rows


def run_names(config: ml_collections.ConfigDict) -> list[str]:
  """The runs a config makes for its seed: its strategies, then Full Training if asked."""
  return config_lib.strategy_names(config) + ([FULL_TRAINING] if config.full_training else [])


def run_finished(config: ml_collections.ConfigDict, workdir: pathlib.Path, name: str) -> bool:
  """Whether run `name` (config.seed) under workdir has a results.json with all its cycles."""
  path = run_dir(workdir, name, config.seed) / "results.json"
  if not path.exists():
    return False
  run = json.loads(path.read_text())
  wanted = 1 if name == FULL_TRAINING else len(pool.budget_schedule(config.al, run["num_train"]))
  return len(run["cycles"]) >= wanted


def run_experiment(
  config: ml_collections.ConfigDict,
  workdir: str,
  dataset: Optional[Dataset] = None,
  force: bool = False,
  only: Optional[list[str]] = None,
) -> dict[str, list[CycleRecord]]:
  """Validates the config, loads the data, runs (or resumes) every strategy and Full Training
  (or the runs named in `only`, a subset of `run_names(config)`).

  A workdir that already holds runs of these strategies and seed resumes them; if one was
  made with a different config, ConfigMismatchError names the keys, before any work.
  `force` discards those runs and starts over. Each run folder is locked for the call
  (disal_jax.run_lock): a run another process holds raises RunLocked, before any work.

  Returns {strategy name: per-cycle records}; also writes workdir/summary.md and summary.csv.
  """
  mesh = sharding.make_mesh()
  config_lib.validate(config, num_devices=mesh.size)
  names = config_lib.strategy_names(config)
  for name in names:
    record_level(config, strategy_registry.get_strategy(name))
  names = run_names(config)
  if only is not None:
    unknown = sorted(set(only) - set(names))
    if unknown:
      raise ValueError(f"runs {unknown} are not among this config's {names}")
    names = [name for name in names if name in only]
  workdir_path = pathlib.Path(workdir)
  primary = distributed.is_primary()
  # one process per run folder; a multi-host run is one job, locked by its process 0
  # every check before the workdir is touched (a bad config leaves nothing behind)
  dataset = load_dataset(config.data) if dataset is None else dataset
  config_lib.validate_for_dataset(config, dataset)
  pool.budget_schedule(config.al, dataset.num_train)  # fails before any training
  runs = [run_dir(workdir_path, name, config.seed) for name in names]
  with run_lock.hold(runs if primary else []):
    return _run_locked(config, workdir_path, names, dataset, force, mesh)


def _run_config(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """The config run `name` follows (al.protocol: a strategy's reference values, if asked)."""
  if name == FULL_TRAINING:
    return config
  return protocol.run_config(config, strategy_registry.get_strategy(name))


def _run_locked(
  config, workdir_path: pathlib.Path, names: list[str], dataset: Dataset, force: bool, mesh
) -> dict[str, list[CycleRecord]]:
  """run_experiment's work, with its run folders locked."""
  primary = distributed.is_primary()
  for name in names:
    out = run_dir(workdir_path, name, config.seed)
    if force and out.exists() and primary:
      log.info("--force: discarding %s", out)
      shutil.rmtree(out)
  distributed.barrier("discarded")  # no host reads a run folder another is still removing
  strategy_sections = set(strategy_registry.sections())
  for name in names:
    # another strategy's keys (a default changed since, a sweep's other variant) change
    # nothing this run computes, so they never block its resume
    checkpoint.check_resumable(
      run_dir(workdir_path, name, config.seed) / RUN_CONFIG,
      _run_config(config, name),
      f"{name} seed {config.seed}",
      strategy_sections - strategy_registry.sections_read(name),
    )
  workdir_path.mkdir(parents=True, exist_ok=True)
  if primary:
    (workdir_path / "config.json").write_text(config.to_json_best_effort(indent=1))
  num_val = 0 if dataset.val_labels is None else len(dataset.val_labels)
  log.info(
    "dataset %s: %d train / %d validation / %d test images of %s, %d classes; %d device(s)",
    dataset.name,
    dataset.num_train,
    num_val,
    len(dataset.test_labels),
    dataset.image_shape,
    dataset.num_classes,
    mesh.size,
  )
  results = {
    name: run_strategy(_run_config(config, name), dataset, name, workdir_path, mesh)
    for name in names
  }
  metric = "miou" if dataset.is_segmentation else "accuracy"
  table = tables.accuracy_table(results, FULL_TRAINING, f"test_{metric}")
  if dataset.val_labels is not None:
    table += "\n\n" + tables.accuracy_table(results, FULL_TRAINING, f"val_{metric}")
  if primary:
    (workdir_path / "summary.md").write_text(table + "\n")
    tables.write_csv(
      workdir_path / "summary.csv",
      [dataclasses.asdict(r) for rows in results.values() for r in rows],
      CSV_COLUMNS,
    )
    print(table, flush=True)
  return results

"""The active-learning loop: the one place that owns the cycle.

labeled set -> train (+ record the pool) -> evaluate -> score -> select top-K -> grow the
labeled set, from the first budget of `pool.budget_schedule` to the last; then Full Training
(100% of the labels) once per seed as the upper line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from disal_jax import config as config_lib
from disal_jax import pool
from disal_jax.data.dataset import Dataset
from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.report import tables
from disal_jax.report.writers import MetricWriter
from disal_jax.strategies import registry as strategy_registry
from disal_jax.strategies.base import ScoringContext, Strategy
from disal_jax.training import record as record_lib
from disal_jax.training import sharding
from disal_jax.training.trainer import Trainer

log = logging.getLogger(__name__)

FULL_TRAINING = "full_training"
CSV_COLUMNS = ("strategy", "seed", "cycle", "labeled", "test_accuracy", "test_loss",
               "train_seconds", "record_seconds", "scoring_seconds")


@dataclasses.dataclass
class CycleRecord:
  """One row of results.csv; `selected` is the rows labeled after this cycle's scoring.

  `strategy_metrics` holds what a strategy reports of its own cost (TracInCP's checkpoint
  bytes and seconds); it goes to results.json and metrics.jsonl.
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


def record_level(config: ml_collections.ConfigDict, strategy: Strategy) -> str:
  keep = config.record.keep
  if keep == "auto":
    return strategy.record
  if not record_lib.level_at_least(keep, strategy.record):
    raise config_lib.ConfigError(
        f"config.record.keep={keep!r} is invalid for strategy {strategy.name!r}, which needs "
        f"at least {strategy.record!r}: one of {record_lib.LEVELS[record_lib.LEVELS.index(strategy.record):]} "
        "or 'auto'")
  return keep


def model_config(config: ml_collections.ConfigDict, strategy: Strategy
                 ) -> ml_collections.ConfigDict:
  """config.model with the strategy's overrides (MC-Dropout's dropout rate) applied."""
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  if strategy.model_overrides is not None:
    model_cfg.update(strategy.model_overrides(config))
  return model_cfg


def run_dir(workdir: pathlib.Path, name: str, seed: int) -> pathlib.Path:
  return workdir / name / f"seed_{seed}"


def _write_results(directory: pathlib.Path, rows: list[CycleRecord], extra: dict[str, Any]):
  directory.mkdir(parents=True, exist_ok=True)
  payload = {**extra, "cycles": [dataclasses.asdict(r) for r in rows]}
  tmp = directory / "results.json.tmp"
  tmp.write_text(json.dumps(payload, indent=1))
  tmp.replace(directory / "results.json")
  tables.write_csv(directory / "results.csv", [dataclasses.asdict(r) for r in rows],
                   CSV_COLUMNS)


def run_strategy(config: ml_collections.ConfigDict, dataset: Dataset, name: str,
                 workdir: pathlib.Path, mesh) -> list[CycleRecord]:
  """Runs every cycle of one strategy for config.seed; writes results under workdir."""
  strategy = strategy_registry.get_strategy(name)
  level = record_level(config, strategy)
  seed = config.seed
  out = run_dir(workdir, name, seed)
  out.mkdir(parents=True, exist_ok=True)
  writer = MetricWriter(out)
  model = build_model(model_config(config, strategy), dataset.num_classes)
  hook = strategy.make_hook(config) if strategy.make_hook else None
  trainer = Trainer(config, model, dataset, mesh, hook=hook, writer=writer)
  counts = pool.budget_schedule(config.al, dataset.num_train)
  labeled_round = pool.initial_labeled(dataset.num_train, counts[0], seed)
  init_key, score_key = jax.random.split(jax.random.key(seed))
  tag = f"{name} seed {seed}"
  pool_capacity = dataset.num_train - counts[0]
  if config.al.subset_size:
    pool_capacity = min(pool_capacity, config.al.subset_size)
  rows: list[CycleRecord] = []
  state = None
  try:
    for cycle, count in enumerate(counts):
      labeled = pool.labeled_indices(labeled_round)
      assert len(labeled) == count, (len(labeled), count)
      candidates = pool.scoring_candidates(labeled_round, config.al.subset_size, seed, cycle)
      if state is None or not config.train.warm_start:
        state = trainer.init_state(jax.random.fold_in(init_key, cycle))
      else:
        state = trainer.reset_optimizer(state)
      callback = (strategy.make_epoch_callback(config, out / f"cycle{cycle}")
                  if strategy.make_epoch_callback and cycle + 1 < len(counts) else None)
      result = trainer.train_cycle(state, labeled, candidates, (seed, cycle),
                                   record_level=level, cycle=cycle,
                                   pool_capacity=pool_capacity, tag=tag,
                                   on_epoch_end=callback)
      state = result.state
      selected, scoring_seconds = np.zeros((0,), np.int64), 0.0
      strategy_metrics = {} if callback is None else callback.metrics()
      if cycle + 1 < len(counts):
        k = counts[cycle + 1] - count
        if k > len(candidates):
          raise config_lib.ConfigError(
              f"config.al.subset_size={config.al.subset_size} leaves {len(candidates)} "
              f"candidates but cycle {cycle} must select {k}; raise it or set it to 0")
        t0 = time.perf_counter()
        ctx = ScoringContext(config, trainer, result, candidates, labeled,
                             jax.random.fold_in(score_key, cycle), cycle, callback)
        try:
          evidence = strategy.score(ctx)
          selected = strategy.select(evidence, ctx, k)
        finally:
          if callback is not None:
            callback.close()
        scoring_seconds = time.perf_counter() - t0
        labeled_round = pool.add_labels(labeled_round, selected, cycle + 1, k)
        np.save(out / f"selected_cycle{cycle}.npy", np.asarray(selected, np.int64))
      row = CycleRecord(name, seed, cycle, count, result.test["accuracy"], result.test["loss"],
                        result.train_seconds, result.record_seconds, scoring_seconds,
                        [int(i) for i in selected], strategy_metrics)
      rows.append(row)
      writer.write(cycle, {"test/accuracy": row.test_accuracy, "test/loss": row.test_loss,
                           "time/train_seconds": row.train_seconds,
                           "time/record_seconds": row.record_seconds,
                           "time/scoring_seconds": row.scoring_seconds,
                           **{f"strategy/{k}": v for k, v in strategy_metrics.items()}},
                   cycle=cycle, labeled=count)
      log.info("[%s] cycle %d: %d labeled, test accuracy %.4f (train %.1fs, record %.1fs, "
               "scoring %.1fs)", tag, cycle, count, row.test_accuracy, row.train_seconds,
               row.record_seconds, row.scoring_seconds)
      np.save(out / "labeled_round.npy", labeled_round)
      _write_results(out, rows, {"strategy": name, "seed": seed, "record": level,
                                 "config": config.to_dict()})
  finally:
    writer.close()
  return rows


def run_full_training(config: ml_collections.ConfigDict, dataset: Dataset,
                      workdir: pathlib.Path, mesh) -> CycleRecord:
  """The same recipe on 100% of the labels (the upper line)."""
  seed = config.seed
  out = run_dir(workdir, FULL_TRAINING, seed)
  writer = MetricWriter(out)
  try:
    trainer = Trainer(config, build_model(config.model, dataset.num_classes), dataset, mesh,
                      writer=writer)
    init_key, _ = jax.random.split(jax.random.key(seed))
    everything = np.arange(dataset.num_train)
    result = trainer.train_cycle(trainer.init_state(jax.random.fold_in(init_key, 0)),
                                 everything, everything[:0], (seed, 0), record_level="none",
                                 cycle=0, tag=f"{FULL_TRAINING} seed {seed}")
  finally:
    writer.close()
  row = CycleRecord(FULL_TRAINING, seed, 0, dataset.num_train, result.test["accuracy"],
                    result.test["loss"], result.train_seconds, 0.0, 0.0, [])
  _write_results(out, [row], {"strategy": FULL_TRAINING, "seed": seed,
                              "config": config.to_dict()})
  log.info("[%s seed %d] %d labeled, test accuracy %.4f", FULL_TRAINING, seed,
           dataset.num_train, row.test_accuracy)
  return row


def run_experiment(config: ml_collections.ConfigDict, workdir: str,
                   dataset: Optional[Dataset] = None) -> dict[str, list[CycleRecord]]:
  """Validates the config, loads the data, runs every strategy (and Full Training).

  Returns {strategy name: per-cycle records}; also writes workdir/summary.md and summary.csv.
  """
  mesh = sharding.make_mesh()
  config_lib.validate(config, num_devices=mesh.size)
  for name in config_lib.strategy_names(config):
    record_level(config, strategy_registry.get_strategy(name))
  workdir_path = pathlib.Path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  (workdir_path / "config.json").write_text(config.to_json_best_effort(indent=1))
  dataset = load_dataset(config.data) if dataset is None else dataset
  pool.budget_schedule(config.al, dataset.num_train)  # fails before any training
  log.info("dataset %s: %d train / %d test images of %s, %d classes; %d device(s)",
           dataset.name, dataset.num_train, len(dataset.test_labels), dataset.image_shape,
           dataset.num_classes, mesh.size)
  results = {name: run_strategy(config, dataset, name, workdir_path, mesh)
             for name in config_lib.strategy_names(config)}
  if config.full_training:
    results[FULL_TRAINING] = [run_full_training(config, dataset, workdir_path, mesh)]
  table = tables.accuracy_table(results, FULL_TRAINING)
  (workdir_path / "summary.md").write_text(table + "\n")
  tables.write_csv(workdir_path / "summary.csv",
                   [dataclasses.asdict(r) for rows in results.values() for r in rows],
                   CSV_COLUMNS)
  print(table, flush=True)
  return results

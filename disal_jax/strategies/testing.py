"""A tiny scoring context, so that a strategy's contract runs in the fast tier in seconds.

`tiny_context` builds the ScoringContext the loop would hand a strategy after a cycle's
training, without training: a small synthetic dataset on the device mesh, the strategy's own
model (its model overrides and train-step hook's module and extras included) in a fresh
state or one the caller sets by hand, the candidates and labeled rows the caller names (or
a default split of 16 rows), the pool index padded to the run's capacity as the trainer pads
it, and what the strategy declares it needs from training made up when not given (a record
of random probabilities, its epoch callback fed perturbed checkpoints). A test then runs the
strategy on it (`base.score_and_select`) and checks the picks against a computation of its
own:

    ctx = testing.tiny_context(strategy="entropy")  # tiny_config(), tiny_dataset()
    scores, picks = base.score_and_select(registry.get_strategy("entropy"), ctx, 2)

`check_contract(strategy)` checks what every strategy owes the loop on two such cycles, in
seconds on a CPU (a new strategy's first test, registered or not):

    picks = testing.check_contract("entropy")

tests/test_strategy_contract.py runs the same checks (`check_picks`, `streamed`,
`check_next_cycle`) on trained models for every registered strategy (the slow tier).
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np

from disal_jax import config as config_lib
from disal_jax.data.dataset import Dataset
from disal_jax.models.registry import build_model
from disal_jax.strategies import registry
from disal_jax.strategies.base import (
  SCORING_PRECISION,
  EpochCallback,
  ScoringContext,
  Strategy,
  scoring_data,
)
from disal_jax.training import placement, sharding
from disal_jax.training import record as record_lib
from disal_jax.training.state import TrainState
from disal_jax.training.trainer import CycleResult, Trainer

# tiny_context's default rows of tiny_dataset()'s 16: labeled, and the candidates in an order
# that is not the rows' (a position taken for a row, or a row for a position, shows).
LABELED = (1, 2, 4, 8)
CANDIDATES = (7, 3, 11, 0, 9, 14, 5, 12, 6, 10, 15, 13)
CONTRACT_K = 3  # rows check_contract selects per cycle
# A tiny model: ResNet-18 two channels wide, scored in batches of 4 (the default pool of 12
# candidates is then 3 batches, so batching is exercised).
TINY = {"model.width": 2, "train.eval_batch_size": 4, "train.epochs": 2, "train.batch_size": 4}
# The learning rates tiny_context hands a made-up epoch callback, epoch by epoch (distinct, so
# that a weighting by the wrong epoch's rate shows).
CALLBACK_LEARNING_RATES = (0.1, 0.05, 0.025, 0.0125)
# Scale of the noise that makes the checkpoints handed to an epoch callback differ.
CHECKPOINT_NOISE = 0.05


class CompileCounter:
  """Counts XLA backend compilations while active (jit's cache misses, eager ops included)."""

  EVENT = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.count = 0

  def _listen(self, event: str, _seconds: float, **_kwargs) -> None:
    if event == self.EVENT:
      self.count += 1

  def __enter__(self) -> "CompileCounter":
    jax.monitoring.register_event_duration_secs_listener(self._listen)
    return self

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._listen)


def _strategy(strategy: Strategy | str) -> Strategy:
  return registry.get_strategy(strategy) if isinstance(strategy, str) else strategy


def tiny_config(
  strategy: Strategy | str | None = None, **overrides: Any
) -> ml_collections.ConfigDict:
  """An experiment config for tiny contexts: the experiment-wide keys and every registered
  section at their defaults (as experiment.base_config builds them), `strategy`'s section
  added when it is not registered, a width-2 model in eval batches of 4 (TINY), then
  `overrides`, dotted keys ('train.eval_batch_size': 8). A strategy whose defaults are heavy
  (VAAL's networks, many passes) takes smaller values as overrides."""
  config = config_lib.common_config()
  sections = dict(registry.sections())
  section = _strategy(strategy).config_section if strategy is not None else None
  if section is not None:
    sections.setdefault(section.name, section)
  for name, section in sections.items():
    config[name] = section.defaults()
  for key, value in {**TINY, **overrides}.items():
    *path, last = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[last] = value
  return config


def tiny_dataset(
  num_train: int = 16,
  num_classes: int = 3,
  size: int = 8,
  channels: int = 3,
  num_test: int = 4,
  seed: int = 0,
) -> Dataset:
  """A synthetic classification dataset of uniform-noise uint8 images, (size, size, channels),
  every class present in both splits."""
  rng = np.random.default_rng(seed)

  def split(count):
    images = rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    return images, (np.arange(count) % num_classes).astype(np.int32)

  train_images, train_labels = split(num_train)
  test_images, test_labels = split(num_test)
  return Dataset(
    "tiny",
    train_images,
    train_labels,
    test_images,
    test_labels,
    tuple(f"class{c}" for c in range(num_classes)),
  )


def tiny_trainer(
  config: ml_collections.ConfigDict,
  strategy: Strategy,
  dataset: Dataset,
  mesh: Optional[jax.sharding.Mesh] = None,
) -> Trainer:
  """The trainer of `strategy`'s runs on `dataset` (its model overrides and train-step hook),
  as the loop builds it; nothing is trained or compiled."""
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  if strategy.model_overrides is not None:
    model_cfg.update(strategy.model_overrides(config))
  hook = strategy.make_hook(config) if strategy.make_hook else None
  return Trainer(
    config,
    build_model(model_cfg, dataset.num_classes),
    dataset,
    mesh or sharding.make_mesh(),
    hook=hook,
  )


def perturbed(tree: Any, key: jax.Array, scale: float) -> Any:
  """`tree` with independent N(0, scale^2) noise added to every floating leaf (hand-made
  parameters: a checkpoint, a cycle's start, a less uniform fresh model)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  out = [
    x + scale * jax.random.normal(k, x.shape, x.dtype)
    if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
    else x
    for x, k in zip(leaves, keys)
  ]
  return jax.tree.unflatten(treedef, out)


def mean_record(mean: np.ndarray) -> record_lib.PoolRecord:
  """A PoolRecord holding only `mean` (P_pad, ...) aligned with the padded pool index, as the
  trainer's eval-pass record at level 'mean' (one epoch recorded)."""
  return record_lib.PoolRecord(
    jax.numpy.asarray(mean, jax.numpy.float32), jax.numpy.float32(1.0), jax.numpy.int32(1)
  )


def random_record(
  level: str, pool_length: int, num_classes: int, epochs: int, key: jax.Array
) -> record_lib.PoolRecord:
  """A PoolRecord at `level` (record.LEVELS) of `epochs` epochs of random softmax
  probabilities, (pool_length, num_classes) float32 per epoch, aligned with the padded pool
  index: the mean of the epochs, as the level keeps it."""
  history = jax.nn.softmax(jax.random.normal(key, (epochs, pool_length, num_classes)), axis=-1)
  keeps = lambda needed: record_lib.level_at_least(level, needed)
  return record_lib.PoolRecord(
    mean=history.mean(axis=0) if keeps("mean") else None,
    weight=jax.numpy.float32(epochs),
    count=jax.numpy.int32(epochs),
  )


def needed_record_level(config: ml_collections.ConfigDict, strategy: Strategy) -> str:
  """The record level `strategy` needs under `config` (its `record`, or what it returns)."""
  return strategy.record(config) if callable(strategy.record) else strategy.record


def fed_epoch_callback(
  config: ml_collections.ConfigDict,
  strategy: Strategy,
  state: TrainState,
  folder: pathlib.Path,
  key: jax.Array,
) -> EpochCallback:
  """`strategy`'s epoch callback for one cycle, called as the trainer calls it after each of
  config.train.epochs epochs, with `state` perturbed afresh (CHECKPOINT_NOISE) as that
  epoch's checkpoint and CALLBACK_LEARNING_RATES as its learning rates."""
  callback = strategy.make_epoch_callback(config, folder)
  for epoch in range(int(config.train.epochs)):
    params = perturbed(state.params, jax.random.fold_in(key, epoch), CHECKPOINT_NOISE)
    lr = CALLBACK_LEARNING_RATES[epoch % len(CALLBACK_LEARNING_RATES)]
    callback(state.replace(params=params), epoch, lr)
  return callback


def tiny_context(
  config: Optional[ml_collections.ConfigDict] = None,
  strategy: Strategy | str = "random",
  dataset: Optional[Dataset] = None,
  candidates: Optional[Sequence[int]] = None,
  labeled: Optional[Sequence[int]] = None,
  *,
  state: Optional[TrainState] = None,
  start_params: Any = None,
  record: Optional[record_lib.PoolRecord] = None,
  epoch_callback: Optional[EpochCallback] = None,
  rng: Optional[jax.Array] = None,
  cycle: int = 0,
  pool_capacity: int = 0,
  run_dir: Optional[pathlib.Path] = None,
  trainer: Optional[Trainer] = None,
) -> ScoringContext:
  """The ScoringContext of one cycle of `strategy` on `dataset`, as the loop builds it.

  Args:
    config: the experiment config; default `tiny_config(strategy)`. Its model should be small
      (model.width 2-4); config.train.eval_batch_size sets the scoring batches and the pool
      padding.
    strategy: the strategy scored, or its registered name (its model overrides and hook shape
      the model).
    dataset: default `tiny_dataset()`; placed on the mesh as the trainer places it.
    candidates: (P,) unlabeled training rows, in record order (any order, not only sorted);
      default CANDIDATES.
    labeled: (L,) labeled training rows; default LABELED.
    state: the trained state; default: a fresh one, `trainer.init_state(key(0))`.
    start_params: the parameters the cycle started from (DISAL's direction); default: the
      state's own (a zero direction).
    record: the pool's probability record aligned with the padded pool index; default: None
      where the strategy needs no record, else `random_record` at the level it needs.
    epoch_callback: the cycle's epoch callback (TracInCP's checkpoints); default: None where
      the strategy has none, else `fed_epoch_callback` in `run_dir`/callback<cycle>.
    rng: the cycle's scoring key; default: key(0).
    cycle: the cycle number.
    pool_capacity: the run's largest pool; the pool index is padded to it (and to whole
      eval batches), as `Trainer.train_cycle` pads it.
    run_dir: the run's folder, for strategies that keep files between cycles (required for a
      strategy with an epoch callback when none is given).
    trainer: the trainer to take the data and fresh state from (default: `tiny_trainer`).
  Returns:
    The context; its `result.state` is replicated on the mesh.
  """
  strategy = _strategy(strategy)
  config = tiny_config(strategy) if config is None else config
  dataset = tiny_dataset() if dataset is None else dataset
  candidates = np.asarray(CANDIDATES if candidates is None else candidates, np.int64)
  labeled = np.asarray(LABELED if labeled is None else labeled, np.int64)
  if np.intersect1d(candidates, labeled).size or len(np.unique(candidates)) != len(candidates):
    raise ValueError("candidates must be distinct rows, none of them labeled")
  trainer = trainer or tiny_trainer(config, strategy, dataset)
  if state is None:
    state = trainer.init_state(jax.random.key(0))
  state = sharding.put_replicated(state, trainer.mesh)
  pool_index = np.zeros(trainer.padded_pool_length(len(candidates), pool_capacity), np.int32)
  pool_index[: len(candidates)] = candidates
  level = needed_record_level(config, strategy)
  if record is None and level != "none":
    record = random_record(
      level, len(pool_index), dataset.num_classes, int(config.train.epochs), jax.random.key(cycle)
    )
  if epoch_callback is None and strategy.make_epoch_callback is not None:
    if run_dir is None:
      raise ValueError(f"strategy {strategy.name!r} has an epoch callback: give run_dir")
    epoch_callback = fed_epoch_callback(
      config, strategy, state, run_dir / f"callback{cycle}", jax.random.key(cycle)
    )
  result = CycleResult(
    state=state,
    start_params=state.params if start_params is None else start_params,
    record=record,
    pool_index=jax.device_put(pool_index, sharding.along_data(trainer.mesh)),
    test={},
    epochs=[],
    train_seconds=0.0,
    record_seconds=0.0,
  )
  return ScoringContext(
    config,
    scoring_data(trainer),
    result,
    candidates,
    labeled,
    jax.random.key(0) if rng is None else rng,
    cycle,
    epoch_callback,
    run_dir,
  )


# -- the contract ---------------------------------------------------------------------------


def _require(condition: bool, strategy: Strategy, clause: str) -> None:
  """AssertionError naming the strategy and the clause of the contract it breaks (raised, not
  asserted: the check holds under python -O too)."""
  if not condition:
    raise AssertionError(f"strategy {strategy.name!r}: {clause}")


def pick(strategy: Strategy | str, ctx: ScoringContext, k: int) -> tuple[Any, np.ndarray]:
  """(evidence, (k,) picks) as base.score_and_select computes them, at SCORING_PRECISION, but
  with the epoch callback left open, so that the same context can be scored again."""
  strategy = _strategy(strategy)
  with jax.default_matmul_precision(SCORING_PRECISION):
    evidence = strategy.score(ctx)
    return evidence, np.asarray(strategy.select(evidence, ctx, k))


def check_picks(strategy: Strategy | str, ctx: ScoringContext, k: int) -> np.ndarray:
  """Scores `ctx` twice and checks: k distinct picks, all candidates, none labeled; every
  floating leaf of the evidence finite; the same key picks the same rows. Returns the picks
  (k,) int64 global rows; raises AssertionError naming the clause broken."""
  strategy = _strategy(strategy)
  evidence, picks = pick(strategy, ctx, k)
  _require(picks.shape == (k,), strategy, f"{picks.shape} picks, asked for ({k},)")
  _require(len(np.unique(picks)) == k, strategy, f"picks {picks.tolist()} repeat a row")
  _require(
    bool(np.isin(picks, ctx.candidates).all()),
    strategy,
    f"picks {picks.tolist()} are not all candidates {ctx.candidates.tolist()}",
  )
  _require(
    not np.isin(picks, ctx.labeled).any(),
    strategy,
    f"picks {picks.tolist()} include labeled rows {ctx.labeled.tolist()}",
  )
  for leaf in jax.tree.leaves(evidence):
    leaf = np.asarray(sharding.fetch(leaf))
    if np.issubdtype(leaf.dtype, np.floating):
      _require(bool(np.isfinite(leaf).all()), strategy, "non-finite evidence")
  _, again = pick(strategy, ctx, k)
  _require(
    np.array_equal(again, picks),
    strategy,
    f"the same key picked {again.tolist()}, then {picks.tolist()}",
  )
  return picks.astype(np.int64)


def streamed(ctx: ScoringContext) -> ScoringContext:
  """`ctx` with its training split streamed (data.placement='stream'): every scoring batch
  reads its rows from a window of the split, so a strategy that indexes data.images instead
  of data.images_at(rows) fails or picks otherwise."""
  dataset = ctx.data.dataset
  split = placement.place_split(
    dataset.train_images, dataset.train_labels, ctx.data.mesh, stream=True
  )
  return dataclasses.replace(ctx, data=dataclasses.replace(ctx.data, train_data=split))


def check_streamed(strategy: Strategy | str, ctx: ScoringContext, picks: np.ndarray) -> None:
  """Checks that `ctx` with its split streamed (`streamed`) picks `picks` again."""
  strategy = _strategy(strategy)
  _, again = pick(strategy, streamed(ctx), len(picks))
  _require(
    np.array_equal(again, picks),
    strategy,
    f"streamed, it picked {again.tolist()}, resident {list(picks)}",
  )


def check_next_cycle(strategy: Strategy | str, ctx: ScoringContext, k: int) -> np.ndarray:
  """Scores the next cycle's context (another pool, the same padded shapes as the cycle
  scored before it) and checks: nothing compiled again (on a TPU each compile costs seconds
  to tens of seconds, every cycle: device outputs keep the run's pool capacity, counts are
  traced), k distinct candidates picked. Returns the picks (k,)."""
  strategy = _strategy(strategy)
  with CompileCounter() as compiles:
    _, picks = pick(strategy, ctx, k)
  _require(
    compiles.count == 0,
    strategy,
    f"compiled {compiles.count} program(s) for the next cycle's smaller pool: shapes "
    "must follow the run's pool capacity (ctx.result.pool_index), not the candidates' "
    "count",
  )
  _require(
    bool(np.isin(picks, ctx.candidates).all()) and len(np.unique(picks)) == k,
    strategy,
    f"next cycle's picks {picks.tolist()} are not {k} distinct candidates",
  )
  return picks


def _close(ctx: ScoringContext) -> None:
  if ctx.epoch_callback is not None:
    ctx.epoch_callback.close()


def check_contract(
  strategy: Strategy | str,
  config: Optional[ml_collections.ConfigDict] = None,
  *,
  k: int = CONTRACT_K,
  dataset: Optional[Dataset] = None,
) -> np.ndarray:
  """Checks what every strategy owes the loop, on two tiny cycles, in seconds on a CPU.

  Cycle 0 (`tiny_context`: LABELED, CANDIDATES in no particular order, a fresh tiny model, a
  made-up record and epoch callback if the strategy needs them): `check_picks` (k distinct
  unlabeled candidates, finite evidence, the same key the same picks) and `check_streamed`
  (the same picks with the split streamed). Cycle 1 (its picks labeled, the same pool
  capacity, the run folder kept): `check_next_cycle` (nothing compiled again, valid picks).

  Args:
    strategy: a Strategy, registered or not, or a registered name.
    config: default `tiny_config(strategy)`.
    k: rows selected per cycle.
    dataset: default `tiny_dataset()` (16 rows); LABELED and CANDIDATES index it.
  Returns:
    Cycle 0's picks, (k,) int64 training rows.
  Raises:
    AssertionError: naming the strategy and the clause it breaks.
  """
  strategy = _strategy(strategy)
  config = tiny_config(strategy) if config is None else config
  dataset = tiny_dataset() if dataset is None else dataset
  trainer = tiny_trainer(config, strategy, dataset)
  with tempfile.TemporaryDirectory(prefix="contract_") as folder:
    run_dir = pathlib.Path(folder)
    first = tiny_context(config, strategy, dataset, run_dir=run_dir, trainer=trainer, cycle=0)
    try:
      picks = check_picks(strategy, first, k)
      check_streamed(strategy, first, picks)
    finally:
      _close(first)
    second = tiny_context(
      config,
      strategy,
      dataset,
      [row for row in CANDIDATES if row not in set(picks.tolist())],
      LABELED + tuple(picks.tolist()),
      run_dir=run_dir,
      trainer=trainer,
      cycle=1,
      pool_capacity=len(CANDIDATES),
    )
    try:
      check_next_cycle(strategy, second, k)
    finally:
      _close(second)
  return picks

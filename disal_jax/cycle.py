"""One active-learning cycle: train a model on the labeled rows, then score and select.

The experiment loop (disal_jax.loop) runs `run_cycle` once per cycle of a run, and the
annotation rounds (disal_jax.annotate.rounds) once per query; each keeps its own bookkeeping
around it (the loop its checkpoints and results, a round its project state and kept model).
This module sits below both and imports neither.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Optional

import jax
import ml_collections
import numpy as np

from disal_jax import faults
from disal_jax.strategies.base import ScoringContext, Strategy, score_and_select, scoring_data
from disal_jax.training.state import TrainState
from disal_jax.training.trainer import Checkpointing, CycleResult, Recording, Trainer


@dataclasses.dataclass(frozen=True)
class CycleSetup:
  """What stays the same over the cycles of one run (or of one annotation round).

  Attributes:
    config: the run's config (its seed derives every cycle's keys and host generators).
    trainer: the strategy's trainer (its model overrides and train-step hook).
    strategy: the strategy that scores and selects.
    recording: what training records of the candidates for the strategy.
    run_dir: the folder a strategy keeps things in between cycles (ScoringContext.run_dir).
    tag: a label for log lines and fault points (strategy and seed).
  """

  config: ml_collections.ConfigDict
  trainer: Trainer
  strategy: Strategy
  recording: Recording
  run_dir: Optional[pathlib.Path] = None
  tag: str = ""


@dataclasses.dataclass(frozen=True)
class CycleOutcome:
  """What one cycle produced.

  Attributes:
    result: the training result (trained state, record, test and validation metrics, train
      and record seconds).
    selected: (k,) int training-set rows in selection order (as the strategy's selector
      returned them); an empty int64 array when k == 0 (a run's last cycle).
    evidence: what the strategy's score returned: (P,) float scores over the candidates for
      a top-k strategy, what its own selector reads otherwise (CoreSet: features); None
      when k == 0.
    scoring_seconds: wall time of scoring and selecting (0.0 when k == 0).
    strategy_metrics: what the strategy's epoch callback reports of its cost (TracInCP's
      checkpoint bytes and seconds); {} without one.
  """

  result: CycleResult
  selected: np.ndarray
  evidence: Any
  scoring_seconds: float
  strategy_metrics: dict[str, float]


def cycle_keys(seed: int, cycle: int) -> tuple[jax.Array, jax.Array]:
  """(model init key, scoring key) of a cycle: the run seed's two streams, each folded with
  the cycle number, so that a resumed run draws what an uninterrupted one did."""
  init_key, score_key = jax.random.split(jax.random.key(seed))
  return jax.random.fold_in(init_key, cycle), jax.random.fold_in(score_key, cycle)


def start_state(setup: CycleSetup, cycle: int, warm: Optional[TrainState]) -> TrainState:
  """The state cycle `cycle` trains from: `warm`'s weights with a fresh optimiser when
  config.train.warm_start is set and `warm` is given, else a fresh model; either way with the
  cycle's own random stream."""
  rng, _ = cycle_keys(setup.config.seed, cycle)
  if warm is None or not setup.config.train.warm_start:
    return setup.trainer.init_state(rng)
  return setup.trainer.reset_optimizer(warm, rng)


def run_cycle(
  setup: CycleSetup,
  labeled: np.ndarray,
  candidates: np.ndarray,
  k: int,
  *,
  cycle: int,
  warm: Optional[TrainState] = None,
  checkpointing: Optional[Checkpointing] = None,
  callback_dir: Optional[pathlib.Path] = None,
) -> CycleOutcome:
  """Trains on `labeled` (recording `candidates`), then selects k of `candidates`.

  Args:
    setup: the run's trainer, strategy and settings.
    labeled: (L,) int training-set rows with labels.
    candidates: (P,) int training-set rows that may be selected, ascending (record order).
    k: how many to select; 0 trains and evaluates only (a run's last cycle).
    cycle: the cycle (or annotation round) number: it derives the cycle's keys and seeds.
    warm: the previous cycle's trained state, to start from under config.train.warm_start.
    checkpointing: the progress to resume from (then `warm` is not used) and the callback
      that saves it during training; None: from the first epoch, saving nothing.
    callback_dir: the folder of the strategy's epoch callback for this cycle (TracInCP's
      checkpoints); required when the strategy has one and k > 0. Without a selection to
      make, the callback is not created.

  Returns:
    The CycleOutcome: the training result, the selected rows, the strategy's evidence and
    the scoring time.

  Raises:
    ValueError: k exceeds the candidates, or a strategy's callback has no folder.
    TrainingDiverged: a non-finite training loss.
  """
  config, trainer, strategy = setup.config, setup.trainer, setup.strategy
  checkpointing = checkpointing or Checkpointing()
  if k > len(candidates):
    raise ValueError(f"cycle {cycle} must select {k} of {len(candidates)} candidates")
  callback = None
  if strategy.make_epoch_callback is not None and k > 0:
    if callback_dir is None:
      raise ValueError(f"strategy {strategy.name!r} keeps files per cycle: give callback_dir")
    callback = strategy.make_epoch_callback(config, callback_dir)
  state = None if checkpointing.resume is not None else start_state(setup, cycle, warm)
  result = trainer.train_cycle(
    state,
    labeled,
    candidates,
    (config.seed, cycle),
    cycle=cycle,
    recording=setup.recording,
    checkpointing=checkpointing,
    tag=setup.tag,
    on_epoch_end=callback,
  )
  strategy_metrics = {} if callback is None else callback.metrics()
  if k == 0:
    return CycleOutcome(result, np.zeros((0,), np.int64), None, 0.0, strategy_metrics)
  faults.point(f"select:{setup.tag}:{cycle}")
  t0 = time.perf_counter()
  ctx = ScoringContext(
    config,
    scoring_data(trainer),
    result,
    candidates,
    labeled,
    cycle_keys(config.seed, cycle)[1],
    cycle,
    callback,
    setup.run_dir,
  )
  evidence, selected = score_and_select(strategy, ctx, k)
  return CycleOutcome(result, selected, evidence, time.perf_counter() - t0, strategy_metrics)

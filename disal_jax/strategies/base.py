"""The strategy contract: declared needs, a pure score, a selector.

A strategy never changes who is labeled and never trains by itself: it states what it needs
recorded during training and what it adds to the train step, scores the candidates from what
the loop hands it, and its selector turns scores into global indices. Only `disal_jax.pool`
grows the labeled set.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np

from disal_jax.training.trainer import CycleResult, Trainer, TrainHook


@dataclasses.dataclass(frozen=True)
class ScoringContext:
  """What the loop hands a strategy after a cycle's training.

  Attributes:
    config: the experiment config.
    trainer: the trainer (its data on device, jitted predict, preprocessing).
    result: the cycle's training result (state, start parameters, record, pool index).
    candidates: (P,) training-set rows that may be selected, in record order.
    labeled: (L,) training-set rows labeled so far.
    rng: a jax key for this cycle's scoring.
    cycle: the cycle number.
  """
  config: ml_collections.ConfigDict
  trainer: Trainer
  result: CycleResult
  candidates: np.ndarray
  labeled: np.ndarray
  rng: jax.Array
  cycle: int


# scores(ctx) -> (P,) float scores for ctx.candidates, higher = select first.
ScoreFn = Callable[[ScoringContext], np.ndarray]
# select(scores, ctx, k) -> (k,) distinct global training-set rows from ctx.candidates.
SelectFn = Callable[[np.ndarray, ScoringContext, int], np.ndarray]


def select_top_k(scores: np.ndarray, ctx: ScoringContext, k: int) -> np.ndarray:
  """The k candidates with the highest scores; ties broken by candidate order (stable)."""
  scores = np.asarray(scores, np.float64)
  if scores.shape != ctx.candidates.shape:
    raise ValueError(f"scores {scores.shape} do not match candidates {ctx.candidates.shape}")
  if not np.all(np.isfinite(scores)):
    bad = int(np.sum(~np.isfinite(scores)))
    raise FloatingPointError(f"{bad} non-finite scores in cycle {ctx.cycle}")
  order = np.argsort(-scores, kind="stable")
  return ctx.candidates[order[:k]]


@dataclasses.dataclass(frozen=True)
class Strategy:
  """Attributes:
    name: registry name.
    record: the least record level it needs (disal_jax.training.record.LEVELS).
    score: the scoring function.
    select: the selector (top-k unless the strategy is a greedy procedure).
    make_hook: builds its train-step hook from the config, or None.
    description: one line for listings.
  """
  name: str
  record: str
  score: ScoreFn
  select: SelectFn = select_top_k
  make_hook: Optional[Callable[[ml_collections.ConfigDict], TrainHook]] = None
  description: str = ""


def batched_pool_scores(ctx: ScoringContext, batch_fn: Callable[..., jax.Array],
                        scoring_state: Any, extra: Optional[dict[str, jax.Array]] = None
                        ) -> np.ndarray:
  """Runs a jitted `batch_fn(scoring_state, data, batch) -> (B,)` over the recorded pool.

  `batch` holds 'index' (B,) training-set rows and, for each key of `extra` (arrays aligned
  with the padded pool index, e.g. the record's mean), that array's rows for the batch.
  Only the batches that hold candidates are computed. Returns the (P,) scores of
  ctx.candidates (padding dropped).
  """
  trainer, pool_index = ctx.trainer, ctx.result.pool_index
  batch_size = ctx.config.train.eval_batch_size
  parts = []
  for start in range(0, len(ctx.candidates), batch_size):
    batch = {"index": pool_index[start:start + batch_size]}
    for key, value in (extra or {}).items():
      batch[key] = value[start:start + batch_size]
    parts.append(batch_fn(scoring_state, trainer.train_data, batch))
  scores = np.asarray(jax.device_get(jax.numpy.concatenate(parts)))
  return scores[:len(ctx.candidates)]

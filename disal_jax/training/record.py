"""On-device record of the pool's predicted probabilities across the epochs of a cycle.

Levels (each keeps what the one before keeps, and more):
  'none'  - nothing.
  'mean'  - the running mean p_bar (weighted per config.record.weighting) and its weight.
Arrays are split over the 'data' axis along the pool axis P. A sample's probabilities have
shape (C,) for classification and (h, w, C), at the reduced resolution of
disal_jax.training.pixels, for segmentation; `...` below stands for that shape.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from disal_jax.training.sharding import DATA_AXIS

LEVELS = ("none", "mean")


class PoolRecord(NamedTuple):
  """Attributes:
  mean: (P, ...) float32 running mean of the recorded epochs, or None.
  weight: () float32, the sum of the epochs' weights folded into `mean`.
  count: () int32, the number of epochs recorded.
  """

  mean: Optional[jax.Array]
  weight: jax.Array
  count: jax.Array


def level_at_least(level: str, needed: str) -> bool:
  """Whether record level `level` keeps all that `needed` keeps."""
  return LEVELS.index(level) >= LEVELS.index(needed)


def init_record(level: str, pool_size: int, prob_shape: tuple[int, ...]) -> PoolRecord:
  """An empty record; pool_size is the padded pool length, prob_shape one sample's (C,) or
  (h, w, C)."""
  return PoolRecord(
    mean=(
      jnp.zeros((pool_size, *prob_shape), jnp.float32) if level_at_least(level, "mean") else None
    ),
    weight=jnp.zeros((), jnp.float32),
    count=jnp.zeros((), jnp.int32),
  )


def record_shardings(record: PoolRecord, mesh: Mesh) -> PoolRecord:
  """The pool axis of every buffer split over 'data'; the counters replicated."""
  pool_major = NamedSharding(mesh, P(DATA_AXIS))
  scalar = NamedSharding(mesh, P())
  return PoolRecord(None if record.mean is None else pool_major, scalar, scalar)


def fold_factors(weighting: str, ema_decay: float, epoch_weight) -> tuple[jax.Array, jax.Array]:
  """(g, w) of the fold p_bar <- (g W p_bar + w p) / (g W + w), W <- g W + w.

  'mean': (1, 1), the arithmetic mean; 'lr': (1, lr), TracIn's learning-rate weights;
  'ema': (a, 1 - a), the bias-corrected EMA of temporal ensembling: after n folds
  p_bar = sum_k (1 - a) a^(n-k) p_k / (1 - a^n), and W = 1 - a^n.
  """
  if weighting == "ema":
    return jnp.float32(ema_decay), jnp.float32(1.0 - ema_decay)
  w = 1.0 if weighting == "mean" else epoch_weight
  return jnp.float32(1.0), jnp.asarray(w, jnp.float32)


def fold(
  mean: jax.Array, weight: jax.Array, probs: jax.Array, g: jax.Array, w: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """One fold of `probs` into (mean, weight); `weight` broadcasts against `mean` (a scalar
  for the whole pool, or one per sample with trailing axes of size 1). Where the new weight
  is 0 (nothing folded yet) the mean stays 0."""
  new_weight = g * weight + w
  new_mean = (g * weight * mean + w * probs) / jnp.maximum(new_weight, jnp.finfo(jnp.float32).tiny)
  return new_mean, new_weight


def update_record(
  record: PoolRecord, probs: jax.Array, epoch_weight: jax.Array, *, weighting: str, ema_decay: float
) -> PoolRecord:
  """Folds one epoch's probabilities (P, ...) into the record (see `fold_factors`)."""
  g, w = fold_factors(weighting, ema_decay, epoch_weight)
  mean, weight = record.mean, g * record.weight + w
  if mean is not None:
    mean, weight = fold(mean, record.weight, probs, g, w)
  return PoolRecord(mean, weight, record.count + 1)

"""Random: a uniform sample without replacement (one reference samples with replacement)."""

from __future__ import annotations

import numpy as np

from disal_jax.strategies import selectors
from disal_jax.strategies.base import ScoringContext, Strategy, pool_capacity


def random_scores(ctx: ScoringContext) -> np.ndarray:
  """(P,) i.i.d. uniform scores; the top-k of them is a uniform k-subset of the candidates."""
  return selectors.uniform(ctx.rng, len(ctx.candidates), pool_capacity(ctx))


STRATEGY = Strategy(
  name="random",
  record="none",
  score=random_scores,
  description="uniform sample of the unlabeled pool",
  segmentation=True,
)

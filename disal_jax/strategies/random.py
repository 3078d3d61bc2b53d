"""Random: a uniform sample without replacement (one reference samples with replacement)."""

from __future__ import annotations

import jax
import numpy as np

from disal_jax.strategies.base import ScoringContext, Strategy


def random_scores(ctx: ScoringContext) -> np.ndarray:
  """(P,) i.i.d. uniform scores; the top-k of them is a uniform k-subset of the candidates."""
  return np.asarray(jax.random.uniform(ctx.rng, (len(ctx.candidates),)))


STRATEGY = Strategy(name="random", record="none", score=random_scores,
                    description="uniform sample of the unlabeled pool", segmentation=True)

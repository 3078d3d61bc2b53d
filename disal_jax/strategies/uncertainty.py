"""Single-pass uncertainty: entropy, margin and least confidence of the task model's softmax.

One eval-mode forward pass over the pool (BatchNorm statistics, no dropout), then top-K of a
per-sample score, higher = less certain (the scores of baal, modAL and scikit-activeml):
- `entropy`: H(p) = -sum_c p_c log p_c;
- `margin`: -(p_(1) - p_(2)), the gap between the two most probable classes, negated;
- `least_confidence`: 1 - max_c p_c.
Time: one forward pass per pool sample; memory: a (B, C) batch at a time and the (P,) scores.
Segmentation: a per-pixel score at the model's output resolution, averaged over the image.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from disal_jax.strategies.base import (
  ScoringContext,
  Strategy,
  batched_pool_scores,
  entropy_of_logits,
)
from disal_jax.training import pixels
from disal_jax.training.augment import Preprocess


def margin(logits: jax.Array) -> jax.Array:
  """(..., C) -> (...) minus the gap between the top two softmax probabilities."""
  top2 = jax.lax.top_k(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), 2)[0]
  return top2[..., 1] - top2[..., 0]


def least_confidence(logits: jax.Array) -> jax.Array:
  """(..., C) -> (...) one minus the largest softmax probability."""
  return 1.0 - jnp.max(jax.nn.softmax(logits.astype(jnp.float32), axis=-1), axis=-1)


SCORES = {"entropy": entropy_of_logits, "margin": margin, "least_confidence": least_confidence}


@functools.partial(jax.jit, static_argnames=("preprocess", "kind"))
def batch_scores(state, data, batch, *, preprocess: Preprocess, kind: str) -> jax.Array:
  """(B,) scores of rows batch['index'] in eval mode (segmentation: the mean over pixels)."""
  images = preprocess.normalise(data.images_at(batch["index"]))
  logits = state.apply_fn(state.variables(), images, train=False)["logits"]
  return pixels.mean_over_pixels(SCORES[kind](logits))


def _scorer(kind: str):
  def score(ctx: ScoringContext):
    fn = functools.partial(batch_scores, preprocess=ctx.data.preprocess, kind=kind)
    return batched_pool_scores(ctx, fn, ctx.result.state)

  return score


ENTROPY = Strategy(
  name="entropy",
  record="none",
  score=_scorer("entropy"),
  description="max-entropy of the softmax (one eval pass)",
  segmentation=True,
)
MARGIN = Strategy(
  name="margin",
  record="none",
  score=_scorer("margin"),
  description="smallest top-2 softmax margin (one eval pass)",
  segmentation=True,
)
LEAST_CONFIDENCE = Strategy(
  name="least_confidence",
  record="none",
  score=_scorer("least_confidence"),
  description="lowest top softmax probability (one eval pass)",
  segmentation=True,
)
STRATEGIES = (ENTROPY, MARGIN, LEAST_CONFIDENCE)

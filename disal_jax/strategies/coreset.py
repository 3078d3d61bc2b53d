"""CoreSet (Sener & Savarese): greedy k-center on the penultimate features.

The labeled samples are the initial centres; each pick is the candidate farthest (Euclidean)
from its nearest centre, which then becomes a centre. Equal distances are broken at random
with the cycle's key (with no labeled sample, the first pick is a random candidate). Features
are computed on device in eval mode and stay there; the selection keeps a running (P,)
min-distance vector, so a 50,000-sample pool never builds a P x P (or P x L) matrix
(`selectors.k_center_greedy`).
The features are the shared `embedding` section's (disal_jax/strategies/embedding.py): the
task model's by default, as published, or a user's file of embeddings
(`embedding.source='file'`), taken as they are (not normalised).
Segmentation: an image's feature is the spatial mean of DRN's 1/8 feature map.
"""

from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies import embedding, selectors
from disal_jax.strategies.base import (
  TIE_BREAK_STREAM,
  ConfigSection,
  ScoringContext,
  Strategy,
  pool_capacity,
  pool_outputs,
)
from disal_jax.strategies.embedding import features  # also CoreGCN's backbone features


def score(ctx: ScoringContext) -> dict[str, jax.Array]:
  """The selector's evidence: {'candidates': (P_pad, D), 'labeled': (L_pad, D)} float32
  features on device, padded to the run's pool capacity and to the training set's size, so
  every cycle has the same shapes (the first P and L rows count)."""
  source, path = ctx.config.embedding.source, ctx.config.embedding.file
  num_train = len(ctx.data.dataset.train_labels)
  labeled = embedding.rows(ctx, source, path, ctx.labeled, capacity=num_train)
  if source == "file":
    return {
      "candidates": embedding.rows(ctx, source, path, ctx.candidates, capacity=pool_capacity(ctx)),
      "labeled": labeled,
    }
  fn = functools.partial(features, preprocess=ctx.data.preprocess)
  return {"candidates": pool_outputs(ctx, fn, ctx.result.state), "labeled": labeled}


def select(evidence: dict[str, jax.Array], ctx: ScoringContext, k: int) -> np.ndarray:
  """Core-set's k picks: k-center greedy from the labeled centres; (k,) pool indices."""
  picks = selectors.k_center_greedy(
    evidence["candidates"],
    evidence["labeled"],
    k,
    block_size=int(ctx.config.coreset.block_size),
    key=jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM),
    num_points=len(ctx.candidates),
    num_centres=len(ctx.labeled),
  )
  return ctx.candidates[picks]


def defaults() -> ml_collections.ConfigDict:
  """The coreset config section's defaults."""
  s = ml_collections.ConfigDict()
  # Labeled centres per block in the first distance pass: memory is pool x block_size floats.
  s.block_size = 1024
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the coreset section's values are invalid."""
  del num_devices
  check_value(
    config.coreset.block_size >= 1, "coreset.block_size", config.coreset.block_size, ">= 1"
  )


STRATEGY = Strategy(
  name="coreset",
  record="none",
  score=score,
  select=select,
  description="greedy k-center on penultimate features (or a file's embeddings)",
  segmentation=True,
  config_section=ConfigSection("coreset", defaults, check),
  reads_sections=("embedding",),
)

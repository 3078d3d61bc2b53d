"""Tempered least confidence: 1 - max_c softmax(z / T)_c of the task model, one eval pass.

The worked example of docs/adding-a-strategy.md (not registered: a copy in
disal_jax/strategies/ plus its line in registry.BUILT_IN makes it a built-in). T > 1 flattens
the softmax and T < 1 sharpens it, which reorders samples whose logits differ in spread;
T = 1 is `least_confidence`.
Time: one forward pass per pool sample; memory: a (B, C) batch at a time and the (P,) scores.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies.base import ConfigSection, ScoringContext, Strategy, batched_pool_scores
from disal_jax.training.augment import Preprocess


@functools.partial(jax.jit, static_argnames=("preprocess",))
def batch_scores(
  state, data, batch, temperature: jax.Array, *, preprocess: Preprocess
) -> jax.Array:
  """(B,) float32 1 - max softmax(logits / T) of rows batch['index'] (B,) int32, eval mode.

  Rows are read through data.images_at: under streaming placement `data` holds only the
  batch's rows. batch['rng'], the batch's own key, is not used: the score is deterministic.
  """
  images = preprocess.normalise(data.images_at(batch["index"]))
  logits = state.apply_fn(state.variables(), images, train=False)["logits"]
  probs = jax.nn.softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return 1.0 - jnp.max(probs, axis=-1)


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 scores of ctx.candidates, higher = picked first (top-K by default)."""
  # traced, not static: another T compiles nothing again
  temperature = jnp.float32(ctx.config.tempered_confidence.temperature)
  fn = functools.partial(batch_scores, temperature=temperature, preprocess=ctx.data.preprocess)
  return batched_pool_scores(ctx, fn, ctx.result.state)


def defaults() -> ml_collections.ConfigDict:
  """The tempered_confidence config section's defaults."""
  s = ml_collections.ConfigDict()
  s.temperature = 2.0  # softmax temperature T of the score; 1 = least_confidence
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the temperature is not positive."""
  del num_devices  # nothing here is split over the devices
  t = config.tempered_confidence.temperature
  check_value(t > 0, "tempered_confidence.temperature", t, "> 0")


STRATEGY = Strategy(
  name="tempered_confidence",
  record="none",
  score=score,
  description="lowest top softmax probability at a temperature (one eval pass)",
  config_section=ConfigSection("tempered_confidence", defaults, check),
)

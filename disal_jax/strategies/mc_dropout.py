"""MC-Dropout (Gal et al.): T stochastic passes with dropout on the pooled feature.

The model of this strategy's runs is built with `mc_dropout.dropout_rate` (0.5) on the pooled
512-d feature before the classifier, active in the T scoring passes, and in training only
with `mc_dropout.train_dropout=True` (Gal et al.'s Bayesian CNN; the default False follows
the TiDAL reference's BALD, dropout at query time only, so the model trains as Random's).
BatchNorm is in eval mode. The passes are vectorised over dropout keys (vmap); since only
the head depends on the key, XLA computes the backbone once per sample.

Scores (`mc_dropout.score`), from the T softmax outputs p_t (T, C) of a sample:
- 'bald': H(mean_t p_t) - mean_t H(p_t), the mutual information between label and weights;
- 'entropy': H(mean_t p_t) (max-entropy);
- 'variation_ratio': 1 - (passes voting for the modal class) / T.
Segmentation: the dropout acts on DRN's 1/8 feature map before its classifier; each pass's
p_t is taken per pixel at the record's resolution (block-mean logits, record.pixel_stride),
and an image's score is the mean of its pixels' scores.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies.base import (
  ConfigSection,
  ReferenceProtocol,
  ScoringContext,
  Strategy,
  batched_pool_scores,
  entropy,
)
from disal_jax.training import pixels
from disal_jax.training.augment import Preprocess


def bald(probs: jax.Array) -> jax.Array:
  """(T, B, ..., C) -> (B, ...) mutual information H(mean_t p_t) - mean_t H(p_t) >= 0.

  Clamped at 0: on saturated predictions float rounding gives -1e-7 where the value is 0.
  """
  return jnp.maximum(entropy(probs.mean(axis=0)) - entropy(probs).mean(axis=0), 0.0)


def max_entropy(probs: jax.Array) -> jax.Array:
  """(T, B, ..., C) -> (B, ...) entropy of the mean prediction."""
  return entropy(probs.mean(axis=0))


def variation_ratio(probs: jax.Array) -> jax.Array:
  """(T, B, ..., C) -> (B, ...) 1 - (votes of the modal class) / T, votes = argmax of each
  pass."""
  votes = jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1]).sum(axis=0)
  return 1.0 - votes.max(axis=-1) / probs.shape[0]


REDUCERS = {"bald": bald, "entropy": max_entropy, "variation_ratio": variation_ratio}


@functools.partial(jax.jit, static_argnames=("preprocess", "passes", "kind", "pixel_stride"))
def mc_dropout_scores(
  scoring, data, batch, *, preprocess: Preprocess, passes: int, kind: str, pixel_stride: int = 1
) -> jax.Array:
  """(B,) float32 scores of the rows `batch['index']` from T = `passes` dropout passes.

  Args:
    scoring: {'state': TrainState of a model with dropout, 'key': a jax key}.
    data: DeviceData of the training split.
    batch: {'index': (B,) int32 rows}.
  Each sample's masks come from fold_in(key, row), so a score does not depend on the batch
  it is computed in. Cost: one backbone forward per sample plus T head evaluations.
  """
  state, key = scoring["state"], scoring["key"]

  def one(image, row):
    x = preprocess.normalise(image[None])

    def one_pass(pass_key):
      out = state.apply_fn(
        state.variables(), x, train=False, dropout=True, rngs={"dropout": pass_key}
      )
      logits = pixels.to_record_resolution(out["logits"], pixel_stride)
      return jax.nn.softmax(logits[0].astype(jnp.float32))

    return jax.vmap(one_pass)(jax.random.split(jax.random.fold_in(key, row), passes))

  probs = jax.vmap(one)(data.images_at(batch["index"]), batch["index"])  # (B, T, [h, w,] C)
  return pixels.mean_over_pixels(REDUCERS[kind](jnp.swapaxes(probs, 0, 1)))


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 scores of the MC-Dropout passes (mc_dropout.score: BALD, entropy or
  variation ratio)."""
  mc = ctx.config.mc_dropout
  fn = functools.partial(
    mc_dropout_scores,
    preprocess=ctx.data.preprocess,
    passes=int(mc.passes),
    kind=mc.score,
    pixel_stride=ctx.data.pixel_stride,
  )
  return batched_pool_scores(ctx, fn, {"state": ctx.result.state, "key": ctx.rng})


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, float | bool]:
  """The model keys MC-Dropout sets: its dropout rate and whether training uses it."""
  return {
    "dropout_rate": float(config.mc_dropout.dropout_rate),
    "train_dropout": bool(config.mc_dropout.train_dropout),
  }


def defaults() -> ml_collections.ConfigDict:
  """The mc_dropout config section's defaults."""
  s = ml_collections.ConfigDict()
  s.dropout_rate = 0.5  # on the pooled 512-d feature in the passes (and training, below)
  # Dropout while training too (Gal et al.'s Bayesian CNN) or only at query time (False, the
  # TiDAL reference's BALD, which the paper's comparisons follow: the model trains as Random's).
  s.train_dropout = False
  s.passes = 10  # T stochastic forward passes, vectorised over dropout keys
  s.score = "bald"  # 'bald' (mutual information), 'entropy' (max-entropy), 'variation_ratio'
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the mc_dropout section's values are invalid."""
  del num_devices
  s = config.mc_dropout
  check_value(0 < s.dropout_rate < 1, "mc_dropout.dropout_rate", s.dropout_rate, "in (0, 1)")
  check_value(s.passes >= 2, "mc_dropout.passes", s.passes, "an integer >= 2")
  check_value(s.score in REDUCERS, "mc_dropout.score", s.score, f"one of {tuple(REDUCERS)}")


SECTION = ConfigSection("mc_dropout", defaults, check)  # also BatchBALD's model

# al.protocol='reference': how the published code runs a cycle.
REFERENCE = ReferenceProtocol(
  subset_size=10_000,
  warm_start=True,
  source=(
    "hyperconnect/TiDAL (its BALD): main.py:64-67 (subset 10000), main.py:115-117 and 137"
    " (model built before the cycle loop)"
  ),
)

STRATEGY = Strategy(
  name="mc_dropout",
  record="none",
  score=score,
  model_overrides=model_overrides,
  config_section=SECTION,
  description="MC-Dropout: BALD (or max-entropy, variation ratio) over T dropout passes",
  segmentation=True,
  reference=REFERENCE,
)

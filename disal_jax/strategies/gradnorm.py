"""Boosting (Wang et al.): the norm of a label-free loss's gradient over all parameters.

- gradnorm_entropy: ||grad_theta H(p_theta(x))||, the entropy of the prediction as the loss.
- gradnorm_expected: sum_c p_c ||grad_theta CE(x, c)||, the expectation of the gradient
  norm over the predicted classes. (In the reference code both schemes collapse to the same
  number; here they are the two different quantities docs/strategies.md names.)

The norm (`gradnorm.norm`): 'tensor_sum' (default, the reference's): the sum over parameter
tensors of each tensor's gradient norm, sum_t ||grad_{theta_t} l||; 'global': the L2 norm
over all parameters at once, ||grad_theta l|| = sqrt(sum_t ||grad_{theta_t} l||^2). The two
rank samples differently (a sample whose gradient sits in one tensor scores lower under the
sum than one spread over many).

Model in eval mode (BatchNorm running statistics). Per-sample norms by the configured engine
(`per_sample.engine`: the one-pass engine, or jax.vmap in chunks of `gradnorm.chunk_size`
gradients per jitted call). The expected scheme uses the exact shortcut
grad CE(x, c) = J^T (p - e_c), J = d logits / d theta: one backward pass of width C per sample
gives the C x C Gram matrix J J^T, from which all C norms follow
(`per_sample.class_grad_sq_norms`), instead of C separate backward passes over the pool.

Segmentation (gradnorm_entropy only): the loss is the mean over the image's pixels, at the
record's resolution, of the per-pixel entropy; the expected scheme's C x C Gram per sample
would be one per pixel, so it stays a classification strategy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies import per_sample
from disal_jax.strategies.base import (
  ConfigSection,
  ReferenceProtocol,
  ScoringContext,
  Strategy,
  batch_logits,
  batched_pool_scores,
  entropy_of_logits,
  per_sample_batch_size,
)
from disal_jax.training import pixels
from disal_jax.training.augment import Preprocess

NORMS = ("tensor_sum", "global")


def combine(sq_norms: jax.Array, norm: str) -> jax.Array:
  """The gradient norm from squared norms: per tensor (B, T, ...) -> 'tensor_sum' sums their
  square roots over T; 'global' takes the square root of (B, ...) already summed."""
  if norm == "tensor_sum":
    return jnp.sum(jnp.sqrt(sq_norms), axis=1)
  return jnp.sqrt(sq_norms)


@functools.partial(jax.jit, static_argnames=("preprocess", "engine", "pixel_stride", "norm"))
def entropy_gradnorm_scores(
  state,
  data,
  batch,
  *,
  preprocess: Preprocess,
  engine: per_sample.Engine,
  pixel_stride: int = 1,
  norm: str = "tensor_sum",
) -> jax.Array:
  """(B,) float32 gradient norm of H(softmax(f_theta(x))) over all parameters (`norm`).

  Cost (one_pass engine): one batched forward and backward pass plus per-layer products.
  """
  images = data.images_at(batch["index"])
  loss = lambda logits, aux: pixels.mean_over_pixels(entropy_of_logits(logits))
  sq = engine.grad_sq_norms(
    batch_logits(state, preprocess, pixel_stride),
    state.variables(state.params),
    images,
    loss,
    per_tensor=norm == "tensor_sum",
  )
  return combine(sq, norm)


@functools.partial(jax.jit, static_argnames=("preprocess", "engine", "norm"))
def expected_gradnorm_scores(
  state, data, batch, *, preprocess: Preprocess, engine: per_sample.Engine, norm: str = "tensor_sum"
) -> jax.Array:
  """(B,) float32 sum_c p_c ||grad_theta CE(x, c)|| over all parameters (`norm`).

  Cost: a backward pass of width C (the logit Jacobian) and a C x C Gram matrix per sample
  (per parameter tensor for 'tensor_sum').
  """
  images = data.images_at(batch["index"])
  gram, logits = engine.logit_gram(
    batch_logits(state, preprocess),
    state.variables(state.params),
    images,
    per_tensor=norm == "tensor_sum",
  )
  probs = jax.nn.softmax(logits)
  norms = combine(per_sample.class_grad_sq_norms(gram, probs), norm)  # (B, C)
  return jnp.sum(probs * norms, axis=-1)


def score_entropy(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 norms of the entropy's per-sample gradients (gradnorm.norm)."""
  engine = per_sample.engine_from_config(ctx.config, ctx.config.gradnorm.chunk_size)
  fn = functools.partial(
    entropy_gradnorm_scores,
    preprocess=ctx.data.preprocess,
    engine=engine,
    pixel_stride=ctx.data.pixel_stride,
    norm=ctx.config.gradnorm.norm,
  )
  state = ctx.result.state
  return batched_pool_scores(
    ctx, fn, state, batch_size=per_sample_batch_size(ctx, fn, state, engine.samples_per_call())
  )


def score_expected(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 expected gradient norms over the predicted classes."""
  engine = per_sample.engine_from_config(ctx.config, ctx.config.gradnorm.chunk_size)
  fn = functools.partial(
    expected_gradnorm_scores,
    preprocess=ctx.data.preprocess,
    engine=engine,
    norm=ctx.config.gradnorm.norm,
  )
  state = ctx.result.state
  return batched_pool_scores(
    ctx,
    fn,
    state,
    batch_size=per_sample_batch_size(
      ctx, fn, state, engine.samples_per_call(ctx.data.dataset.num_classes)
    ),
  )


def defaults() -> ml_collections.ConfigDict:
  """The gradnorm config section's defaults."""
  s = ml_collections.ConfigDict()
  # vmap engine: per-sample gradients held in memory at once (over all parameters). The
  # expected scheme holds C per sample (one per class), so it processes max(1, chunk_size // C).
  s.chunk_size = 16
  # 'tensor_sum': sum over parameter tensors of their gradient norms (the reference's);
  # 'global': one L2 norm over all parameters.
  s.norm = "tensor_sum"
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the gradnorm section's values are invalid."""
  del num_devices
  s = config.gradnorm
  check_value(s.chunk_size >= 1, "gradnorm.chunk_size", s.chunk_size, ">= 1")
  check_value(s.norm in NORMS, "gradnorm.norm", s.norm, f"one of {NORMS}")


SECTION = ConfigSection("gradnorm", defaults, check)  # both gradnorm schemes'

# al.protocol='reference': how the published code runs a cycle.
REFERENCE = ReferenceProtocol(
  subset_size=25_000,
  warm_start=True,
  source=(
    "xulabs/aitom al_gradnorm config.py:8 (SUBSET = 25000), main.py:187-193 (model built "
    "before the cycle loop), main.py:210-211"
  ),
)

ENTROPY = Strategy(
  name="gradnorm_entropy",
  record="none",
  score=score_entropy,
  description="Boosting: norm of the entropy's gradient, all parameters",
  segmentation=True,
  config_section=SECTION,
  reference=REFERENCE,
)
EXPECTED = Strategy(
  name="gradnorm_expected",
  record="none",
  score=score_expected,
  description="Boosting: expected gradient norm over predicted classes",
  config_section=SECTION,
  reference=REFERENCE,
)
STRATEGIES = (ENTROPY, EXPECTED)

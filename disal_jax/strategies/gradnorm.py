"""Boosting (Wang et al.): the norm of a label-free loss's gradient over all parameters.

- gradnorm_entropy: ||grad_theta H(p_theta(x))||, the entropy of the prediction as the loss.
- gradnorm_expected: sum_c p_c ||grad_theta CE(x, c)||, the expectation of the gradient
  norm over the predicted classes. (In the reference code both schemes collapse to the same
  number; here they are the two different quantities METHOD.md names.)

Model in eval mode (BatchNorm running statistics). Per-sample gradients by jax.vmap, one
chunk of at most `gradnorm.chunk_size` gradients per jitted call
(`disal_jax.strategies.per_sample`). The expected scheme uses the
exact shortcut grad CE(x, c) = J^T (p - e_c), J = d logits / d theta: one backward pass of
width C per sample gives the C x C Gram matrix J J^T, from which all C norms follow
(`per_sample.class_grad_sq_norms`), instead of C separate backward passes over the pool.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from disal_jax.strategies import per_sample
from disal_jax.strategies.base import (ScoringContext, Strategy, batched_pool_scores, entropy,
                                       sample_logits)
from disal_jax.training.augment import Preprocess


@functools.partial(jax.jit, static_argnames=("preprocess",))
def entropy_gradnorm_scores(state, data, batch, *, preprocess: Preprocess) -> jax.Array:
  """(B,) float32 ||grad_theta H(softmax(f_theta(x)))|| over all parameters.

  Cost: one per-sample backward pass per sample; memory: B parameter copies.
  """
  logits = sample_logits(state, preprocess)
  loss = lambda params, image: entropy(jax.nn.softmax(logits(params, image)))
  images = data.images[batch["index"]]
  return jnp.sqrt(per_sample.grad_sq_norms(loss, state.params, images))


@functools.partial(jax.jit, static_argnames=("preprocess", "num_classes"))
def expected_gradnorm_scores(state, data, batch, *, preprocess: Preprocess,
                             num_classes: int) -> jax.Array:
  """(B,) float32 sum_c p_c ||grad_theta CE(x, c)|| over all parameters.

  Cost: one backward pass of width C per sample (the logit Jacobian) and a C x C Gram
  matrix; memory: B x C parameter copies.
  """
  logits = sample_logits(state, preprocess)
  images = data.images[batch["index"]]
  probs = jax.nn.softmax(jax.vmap(logits, in_axes=(None, 0))(state.params, images))
  gram = per_sample.logit_gram(logits, state.params, images, num_classes)
  norms = jnp.sqrt(per_sample.class_grad_sq_norms(gram, probs))
  return jnp.sum(probs * norms, axis=-1)


def score_entropy(ctx: ScoringContext) -> np.ndarray:
  fn = functools.partial(entropy_gradnorm_scores, preprocess=ctx.trainer.preprocess)
  return batched_pool_scores(ctx, fn, ctx.result.state,
                             batch_size=per_sample.chunk_batch(ctx.config.gradnorm.chunk_size))


def score_expected(ctx: ScoringContext) -> np.ndarray:
  num_classes = ctx.trainer.dataset.num_classes
  fn = functools.partial(expected_gradnorm_scores, preprocess=ctx.trainer.preprocess,
                         num_classes=num_classes)
  return batched_pool_scores(ctx, fn, ctx.result.state, batch_size=per_sample.chunk_batch(
      ctx.config.gradnorm.chunk_size, num_classes))


ENTROPY = Strategy(name="gradnorm_entropy", record="none", score=score_entropy,
                   description="Boosting: norm of the entropy's gradient, all parameters")
EXPECTED = Strategy(name="gradnorm_expected", record="none", score=score_expected,
                    description="Boosting: expected gradient norm over predicted classes")

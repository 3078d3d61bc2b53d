"""Boosting (Wang et al.): the norm of a label-free loss's gradient over all parameters.

- gradnorm_entropy: ||grad_theta H(p_theta(x))||, the entropy of the prediction as the loss.
- gradnorm_expected: sum_c p_c ||grad_theta CE(x, c)||, the expectation of the gradient
  norm over the predicted classes. (In the reference code both schemes collapse to the same
  number; here they are the two different quantities METHOD.md names.)

Model in eval mode (BatchNorm running statistics). Per-sample gradients by jax.vmap in chunks
of `gradnorm.chunk_size` (`disal_jax.strategies.per_sample`). The expected scheme uses the
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


@functools.partial(jax.jit, static_argnames=("preprocess", "chunk_size"))
def entropy_gradnorm_scores(state, data, batch, *, preprocess: Preprocess,
                            chunk_size: int) -> jax.Array:
  """(B,) float32 ||grad_theta H(softmax(f_theta(x)))|| over all parameters.

  Cost: one per-sample backward pass per sample; memory: chunk_size parameter copies.
  """
  logits = sample_logits(state, preprocess)
  loss = lambda params, image: entropy(jax.nn.softmax(logits(params, image)))
  images = data.images[batch["index"]]
  return jnp.sqrt(per_sample.grad_sq_norms(loss, state.params, images, chunk_size))


@functools.partial(jax.jit, static_argnames=("preprocess", "chunk_size", "num_classes"))
def expected_gradnorm_scores(state, data, batch, *, preprocess: Preprocess, chunk_size: int,
                             num_classes: int) -> jax.Array:
  """(B,) float32 sum_c p_c ||grad_theta CE(x, c)|| over all parameters.

  Cost: one backward pass of width C per sample (the logit Jacobian) and a C x C Gram
  matrix; memory: max(1, chunk_size // C) samples' C parameter copies.
  """
  logits = sample_logits(state, preprocess)
  images = data.images[batch["index"]]
  probs = jax.nn.softmax(jax.vmap(logits, in_axes=(None, 0))(state.params, images))
  gram = per_sample.logit_gram(logits, state.params, images, num_classes, chunk_size)
  norms = jnp.sqrt(per_sample.class_grad_sq_norms(gram, probs))
  return jnp.sum(probs * norms, axis=-1)


def score_entropy(ctx: ScoringContext) -> np.ndarray:
  fn = functools.partial(entropy_gradnorm_scores, preprocess=ctx.trainer.preprocess,
                         chunk_size=int(ctx.config.gradnorm.chunk_size))
  return batched_pool_scores(ctx, fn, ctx.result.state)


def score_expected(ctx: ScoringContext) -> np.ndarray:
  fn = functools.partial(expected_gradnorm_scores, preprocess=ctx.trainer.preprocess,
                         chunk_size=int(ctx.config.gradnorm.chunk_size),
                         num_classes=ctx.trainer.dataset.num_classes)
  return batched_pool_scores(ctx, fn, ctx.result.state)


ENTROPY = Strategy(name="gradnorm_entropy", record="none", score=score_entropy,
                   description="Boosting: norm of the entropy's gradient, all parameters")
EXPECTED = Strategy(name="gradnorm_expected", record="none", score=score_expected,
                    description="Boosting: expected gradient norm over predicted classes")

"""Per-sample gradient quantities over all parameters: the engine choice, and the jax.vmap path.

Two engines compute the same numbers (`Engine`, config `per_sample.engine`):
- 'one_pass' (default; `one_pass.py`): one batched forward and backward pass and per-layer
  algebra, no per-sample gradient ever formed. 4.2x the vmap path on CPU
  (`python -m benchmarks.per_sample_norms`, docs/performance.md).
- 'vmap': jax.vmap(jax.grad) per sample, below: the simple reference the tests compare against,
  and the fallback for layers the one-pass engine does not know.

Memory grows with the batch (one parameter copy per sample, C for the Gram matrix), so callers
score in chunks: `chunk_batch` turns a memory knob into the batch size, and the host loop of
`strategies.base.pool_outputs` feeds one chunk per jitted call. The chunks are deliberately NOT
a lax.map inside jit: measured on CPU (XLA, ResNet-18 width 64), the same vmap(grad) ran 7x
slower inside lax.map (1.4 samples/s) than as its own jitted call (10.9/s).

These are the reference implementations that gradnorm, TracInCP (all parameters) and DISAL's
norm option share. The model is evaluated in eval mode (BatchNorm running statistics), so a
sample's loss depends on that sample alone and its gradient is well defined.

Two kinds of per-sample quantity:
- `grad_sq_norms`: ||grad_theta loss(x_i)||^2 of a scalar per-sample loss.
- `logit_gram`: G_i = J_i J_i^T (C, C), J_i = d logits(x_i) / d theta. Every class's
  cross-entropy gradient is J_i^T (p_i - e_c), so from G_i alone
  ||grad CE(x_i, c)||^2 = (p_i - e_c)^T G_i (p_i - e_c) for all C classes at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections

from disal_jax.strategies import one_pass

# loss(params, sample) -> scalar, for one sample (a pytree of arrays without a batch axis).
SampleLoss = Callable[[Any, Any], jax.Array]
# logits(params, sample) -> (C,) float32, for one sample.
SampleLogits = Callable[[Any, Any], jax.Array]


def tree_sq_norms(tree: Any, per_tensor: bool = False) -> jax.Array:
  """(B,) squared norms of a pytree whose leaves all have leading axis B; per_tensor: (B, T),
  one per leaf."""
  norms = [jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1) for x in jax.tree.leaves(tree)]
  return jnp.stack(norms, axis=1) if per_tensor else sum(norms)


def grad_sq_norms(
  loss: SampleLoss, params: Any, samples: Any, per_tensor: bool = False
) -> jax.Array:
  """(B,) float32 ||grad_params loss(params, sample_i)||^2 over all parameters (per_tensor:
  (B, T), one per parameter tensor).

  Cost: one per-sample backward pass per sample (vmap); memory: B parameter copies.
  """
  return tree_sq_norms(jax.vmap(jax.grad(loss), in_axes=(None, 0))(params, samples), per_tensor)


def logit_gram(
  logits: SampleLogits, params: Any, samples: Any, num_classes: int, per_tensor: bool = False
) -> jax.Array:
  """(B, C, C) float32 per-sample Gram matrices G_i = J_i J_i^T of the logit Jacobian
  (per_tensor: (B, T, C, C), one per parameter tensor).

  J_i comes from one vjp of the sample's logits with the C one-hot cotangents (vmapped), i.e.
  one backward pass of width C rather than C separate passes. Memory: C parameter copies per
  sample.
  """
  eye = jnp.eye(num_classes, dtype=jnp.float32)

  def one(sample):
    _, vjp = jax.vjp(lambda p: logits(p, sample), params)
    jac = jax.vmap(lambda cotangent: vjp(cotangent)[0])(eye)  # C params-shaped rows
    rows = [x.reshape(num_classes, -1) for x in jax.tree.leaves(jac)]
    if per_tensor:
      return jnp.stack([r @ r.T for r in rows])
    rows = jnp.concatenate(rows, axis=1)
    return rows @ rows.T

  return jax.vmap(one)(samples)


def chunk_batch(chunk_size: int, per_sample_copies: int = 1) -> int:
  """Samples per jitted call when each holds `per_sample_copies` parameter-sized gradients
  and at most `chunk_size` may be in memory at once."""
  return max(1, chunk_size // per_sample_copies)


def class_grad_sq_norms(gram: jax.Array, probs: jax.Array) -> jax.Array:
  """(B, C) ||grad_theta CE(x_i, c)||^2 for every class c, from G_i (B, C, C) and p_i (B, C);
  from per-tensor Grams (B, T, C, C): (B, T, C), per tensor.

  ||J^T (p - e_c)||^2 = p^T G p - 2 (G p)_c + G_cc.
  """
  if gram.ndim == 4:
    probs = probs[:, None, :]
  gp = jnp.einsum("...ij,...j->...i", gram, probs)
  pgp = jnp.sum(probs * gp, axis=-1, keepdims=True)
  diag = jnp.diagonal(gram, axis1=-2, axis2=-1)
  return jnp.maximum(pgp - 2.0 * gp + diag, 0.0)


ENGINES = ("one_pass", "vmap")
# loss(logits (B, C), aux) -> (B,) per-sample losses; aux: None or a pytree of (B, ...) arrays
# that row i's loss reads (e.g. DISAL's targets). Row i's loss may read row i only.
BatchLoss = Callable[[jax.Array, Any], jax.Array]


@dataclasses.dataclass(frozen=True)
class Engine:
  """Which engine computes per-sample gradient quantities, and how many samples per call.

  Hashable, so jitted scoring functions take it as a static argument.
  """

  name: str = "one_pass"
  batch_size: int = 64  # one_pass: samples per call for one cotangent per sample
  samples_per_step: int = one_pass.SAMPLES_PER_STEP
  vmap_chunk_size: int = 16  # vmap: per-sample gradients in memory at once

  def samples_per_call(self, per_sample_vectors: int = 1) -> int:
    """Samples per jitted call when each needs `per_sample_vectors` gradients (C for a Gram)."""
    size = self.batch_size if self.name == "one_pass" else self.vmap_chunk_size
    return chunk_batch(size, per_sample_vectors)

  def grad_sq_norms(
    self,
    model: one_pass.ModelFn,
    variables: Any,
    inputs: jax.Array,
    loss: BatchLoss,
    aux: Any = None,
    per_tensor: bool = False,
  ) -> jax.Array:
    """(B,) float32 ||grad_params loss_i||^2 over all parameters; per_tensor: (B, T), one
    per parameter tensor (the engines may order the tensors differently).

    model(variables, inputs) -> (B, C) logits in eval mode; `variables['params']` are the
    parameters differentiated.
    """
    if self.name == "one_pass":
      return one_pass.grad_sq_norms(
        model,
        variables,
        inputs,
        lambda z: loss(z, aux),
        samples_per_step=self.samples_per_step,
        per_tensor=per_tensor,
      )

    def sample_loss(params, sample):
      x, a = sample
      one = jax.tree.map(lambda v: v[None], a)
      return loss(model({**variables, "params": params}, x[None]), one)[0]

    return grad_sq_norms(sample_loss, variables["params"], (inputs, aux), per_tensor)

  def logit_gram(
    self, model: one_pass.ModelFn, variables: Any, inputs: jax.Array, per_tensor: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """(B, C, C) per-sample G_i = J_i J_i^T over all parameters (per_tensor: (B, T, C, C)),
    and the (B, C) logits."""
    if self.name == "one_pass":
      return one_pass.logit_gram(
        model, variables, inputs, per_tensor=per_tensor, samples_per_step=self.samples_per_step
      )
    logits = model(variables, inputs)
    sample = lambda params, x: model({**variables, "params": params}, x[None])[0]
    return logit_gram(sample, variables["params"], inputs, logits.shape[-1], per_tensor), logits


def engine_from_config(config: ml_collections.ConfigDict, vmap_chunk_size: int) -> Engine:
  """The config's engine; `vmap_chunk_size` is the calling strategy's own chunk key."""
  ps = config.per_sample
  return Engine(ps.engine, int(ps.batch_size), int(ps.samples_per_step), int(vmap_chunk_size))

"""The graph convolutional network of CoreGCN / UncertainGCN (Caramalau et al.), in linen.

Two graph convolutions, H = A (X W) + b: features (N, D) -> hidden (N, H) with ReLU and
dropout -> one logit per node; the sigmoid of it says "labeled". Weights and biases start
uniform in +-1/sqrt(fan_out), as the reference's GraphConvolution does.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def _uniform_fan_out(key, shape, dtype=jnp.float32):
  bound = 1.0 / jnp.sqrt(jnp.float32(shape[-1]))
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class GraphConv(nn.Module):
  """One graph convolution, adjacency @ (x @ W) + b."""

  features: int

  @nn.compact
  def __call__(self, x: jax.Array, adjacency: jax.Array) -> jax.Array:
    """x (N, D), adjacency (N, N) -> (N, features)."""
    w = self.param("kernel", _uniform_fan_out, (x.shape[-1], self.features))
    b = self.param("bias", _uniform_fan_out, (self.features,))
    return adjacency @ (x @ w) + b


class GCN(nn.Module):
  """Two graph convolutions: (N, D) node features -> one logit per node, and the hidden
  features (N, hidden)."""

  hidden: int = 128
  dropout_rate: float = 0.3

  @nn.compact
  def __call__(
    self, x: jax.Array, adjacency: jax.Array, train: bool = False
  ) -> tuple[jax.Array, jax.Array]:
    """Returns (logits (N,), hidden features (N, hidden)); dropout needs a 'dropout' rng."""
    hidden = nn.relu(GraphConv(self.hidden, name="gc1")(x, adjacency))
    dropped = nn.Dropout(self.dropout_rate, deterministic=not train)(hidden)
    logits = GraphConv(1, name="gc2")(dropped, adjacency)[:, 0]
    return logits, hidden


def normalised_adjacency(features: jax.Array) -> jax.Array:
  """(N, N) float32 graph of L2-normalised features (N, D), as the reference builds it:
  A = F F^T - I, each column divided by its sum, + I."""
  f = features.astype(jnp.float32)
  f = f / jnp.maximum(jnp.linalg.norm(f, axis=1, keepdims=True), 1e-12)
  a = f @ f.T - jnp.eye(f.shape[0], dtype=jnp.float32)
  return a / jnp.sum(a, axis=0, keepdims=True) + jnp.eye(f.shape[0], dtype=jnp.float32)

"""BADGE (Ash et al. 2020): k-means++ seeding on last-layer gradient embeddings.

A candidate's embedding is the gradient of its cross-entropy at the predicted label yhat
with respect to the classifier head's kernel: g = (p - e_yhat) (x) a', where p is the
softmax, a the penultimate feature and a' = a, as the reference code (JordanAsh/badge,
`get_grad_embedding`) embeds it; `badge.head_bias=True` adds the bias's gradient,
a' = [a, 1]. Seeding: the first centre is the largest ||g||; each next one is drawn with
probability proportional to its squared distance to the nearest centre chosen so far (D^2
sampling).

g is never materialised (C x D' floats per sample: 10 GB for a 50,000-sample pool with
C = 100 and D = 512). For rank-one embeddings
  ||g_i - g_j||^2 = ||u_i||^2 ||a_i'||^2 + ||u_j||^2 ||a_j'||^2 - 2 (u_i . u_j)(a_i' . a_j'),
with u = p - e_yhat, so each new centre costs one (P, C) and one (P, D') matrix-vector
product and the selection keeps a running (P,) min-distance vector on device: memory
P (C + D' + 3) floats, time O(k P (C + D')) for k picks.

The draw of step t inverts the cumulative D^2 distribution at uniform(fold_in(key, t)), so a
numpy k-means++ given the same uniforms picks the same rows (tests/test_badge.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.strategies.base import ConfigSection, ScoringContext, Strategy, pool_outputs
from disal_jax.training.augment import Preprocess


@functools.partial(jax.jit, static_argnames=("preprocess", "head_bias"))
def factors(state, data, batch, *, preprocess: Preprocess, head_bias: bool) -> dict[str, jax.Array]:
  """The rank-one factors of rows batch['index']: {'u': (B, C) p - e_yhat, 'a': (B, D')}."""
  images = preprocess.normalise(data.images_at(batch["index"]))
  out = state.apply_fn(state.variables(), images, train=False)
  probs = jax.nn.softmax(out["logits"].astype(jnp.float32), axis=-1)
  u = probs - jax.nn.one_hot(jnp.argmax(probs, axis=-1), probs.shape[-1], dtype=jnp.float32)
  a = out["features"].astype(jnp.float32)
  if head_bias:
    a = jnp.concatenate([a, jnp.ones((a.shape[0], 1), jnp.float32)], axis=-1)
  return {"u": u, "a": a}


def draw_uniforms(key: jax.Array, k: int) -> jax.Array:
  """(k,) the uniforms of the k - 1 draws (entry 0 unused: the first centre is the argmax)."""
  return jax.vmap(lambda t: jax.random.uniform(jax.random.fold_in(key, t)))(jnp.arange(k))


@functools.partial(jax.jit, static_argnames=("k",))
def kmeans_pp(
  u: jax.Array, a: jax.Array, uniforms: jax.Array, k: int, num_points: jax.Array | int | None = None
) -> jax.Array:
  """(k,) int32 positions: k-means++ seeding of the rank-one embeddings u_i (x) a_i.

  u: (P, C), a: (P, D'), uniforms: (k,) from `draw_uniforms`; only the first `num_points`
  rows (traced; default P) count, the rest is padding that is never drawn, so factors padded
  to a run's pool capacity compile once. Distances come from C- and D'-sized dot products
  (module docstring); nothing P x P or P x C x D' is formed.
  """
  valid = jnp.arange(u.shape[0]) < (u.shape[0] if num_points is None else num_points)
  sq_norms = jnp.sum(u * u, axis=1) * jnp.sum(a * a, axis=1)  # ||g_i||^2

  def sq_dist_to(j):
    d2 = sq_norms + sq_norms[j] - 2.0 * (u @ u[j]) * (a @ a[j])
    return jnp.maximum(d2, 0.0)

  first = jnp.argmax(jnp.where(valid, sq_norms, -jnp.inf)).astype(jnp.int32)
  chosen = (~valid).at[first].set(True)  # padding counts as taken: zero weight
  min_d2 = jnp.where(chosen, 0.0, sq_dist_to(first))
  picks = jnp.zeros(k, jnp.int32).at[0].set(first)

  def step(t, carry):
    picks, chosen, min_d2 = carry
    # D^2 sampling; if every unchosen row sits on a centre (duplicates), uniformly among them
    weights = jnp.where(jnp.sum(min_d2) > 0, min_d2, (~chosen).astype(jnp.float32))
    cdf = jnp.cumsum(weights)
    pick = jnp.searchsorted(cdf, uniforms[t] * cdf[-1], side="right")
    pick = jnp.minimum(pick, u.shape[0] - 1).astype(jnp.int32)
    chosen = chosen.at[pick].set(True)
    min_d2 = jnp.where(chosen, 0.0, jnp.minimum(min_d2, sq_dist_to(pick)))
    return picks.at[t].set(pick), chosen, min_d2

  picks, _, _ = jax.lax.fori_loop(1, k, step, (picks, chosen, min_d2))
  return picks


def score(ctx: ScoringContext) -> dict[str, jax.Array]:
  """The selector's evidence: the candidates' factors {'u': (P_pad, C), 'a': (P_pad, D')} on
  device, padded to the run's pool capacity (the first P rows count)."""
  fn = functools.partial(
    factors, preprocess=ctx.data.preprocess, head_bias=bool(ctx.config.badge.head_bias)
  )
  return pool_outputs(ctx, fn, ctx.result.state)


def select(evidence: dict[str, jax.Array], ctx: ScoringContext, k: int) -> np.ndarray:
  """BADGE's k picks: k-means++ seeding over the gradient embeddings; (k,) pool indices."""
  if k > len(ctx.candidates):
    raise ValueError(f"BADGE: {k} picks from {len(ctx.candidates)} candidates")
  picks = kmeans_pp(
    evidence["u"], evidence["a"], draw_uniforms(ctx.rng, k), k, np.int32(len(ctx.candidates))
  )
  return ctx.candidates[np.asarray(picks)]


def defaults() -> ml_collections.ConfigDict:
  """The badge config section's defaults."""
  s = ml_collections.ConfigDict()
  # Embed the head's bias gradient too (True: g = (p - e_yhat) x [a, 1]); False: the
  # kernel's only (g = (p - e_yhat) x a), as the BADGE reference code.
  s.head_bias = False
  return s


STRATEGY = Strategy(
  name="badge",
  record="none",
  score=score,
  select=select,
  description="k-means++ on last-layer gradient embeddings (BADGE)",
  config_section=ConfigSection("badge", defaults),
)

"""BADGE's seeding against a brute-force numpy k-means++ on materialised embeddings, and the
single-pass uncertainty scores against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.strategies import badge, uncertainty


def _factors(rng, points, classes, dim):
  logits = rng.normal(size=(points, classes)) * 2
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  u = p - np.eye(classes)[p.argmax(1)]
  a = np.concatenate([rng.normal(size=(points, dim)), np.ones((points, 1))], axis=1)
  return u.astype(np.float32), a.astype(np.float32)


def _numpy_kmeans_pp(g, uniforms, k):
  """k-means++ seeding on the (P, C*D') embeddings themselves: argmax norm, then D^2
  sampling by inverting the cumulative distribution at the given uniforms."""
  g = g.astype(np.float64)
  picks = [int(np.argmax(np.linalg.norm(g, axis=1)))]
  d2 = np.sum((g - g[picks[0]]) ** 2, axis=1)
  for t in range(1, k):
    d2[picks] = 0.0
    cdf = np.cumsum(d2)
    pick = int(np.searchsorted(cdf, uniforms[t] * cdf[-1], side="right"))
    picks.append(pick)
    d2 = np.minimum(d2, np.sum((g - g[pick]) ** 2, axis=1))
  return picks


@pytest.mark.parametrize("seed", [0, 1])
def test_seeding_equals_numpy_kmeans_pp_on_materialised_embeddings(seed):
  rng = np.random.default_rng(seed)
  u, a = _factors(rng, 300, 6, 9)
  g = (u[:, :, None] * a[:, None, :]).reshape(300, -1)  # the (P, C x D') BADGE embeddings
  k = 25
  uniforms = badge.draw_uniforms(jax.random.key(seed), k)
  picks = np.asarray(badge.kmeans_pp(jnp.asarray(u), jnp.asarray(a), uniforms, k))
  assert picks.tolist() == _numpy_kmeans_pp(g, np.asarray(uniforms, np.float64), k)
  assert len(set(picks.tolist())) == k
  other = badge.kmeans_pp(jnp.asarray(u), jnp.asarray(a),
                          badge.draw_uniforms(jax.random.key(seed + 7), k), k)
  assert np.asarray(other).tolist() != picks.tolist()  # another key, other draws


def test_seeding_never_repeats_a_row_among_duplicates():
  u = np.tile(np.array([[0.5, -0.5], [-0.9, 0.9]], np.float32), (4, 1))  # 2 distinct points
  a = np.ones((8, 3), np.float32)
  picks = np.asarray(badge.kmeans_pp(jnp.asarray(u), jnp.asarray(a),
                                     badge.draw_uniforms(jax.random.key(0), 6), 6))
  assert len(set(picks.tolist())) == 6


def test_uncertainty_scores_follow_their_formulas():
  logits = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0], [5.0, -1.0, 4.9]], np.float32)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  top = np.sort(p, axis=1)[:, ::-1]
  np.testing.assert_allclose(uncertainty.SCORES["entropy"](jnp.asarray(logits)),
                             -(p * np.log(p)).sum(1), rtol=1e-5)
  np.testing.assert_allclose(uncertainty.margin(jnp.asarray(logits)), top[:, 1] - top[:, 0],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(uncertainty.least_confidence(jnp.asarray(logits)), 1 - top[:, 0],
                             rtol=1e-5)
  # the uniform row is the least certain by all three; margin ranks row 2 (4.9 vs 5.0) next
  assert np.argmax(uncertainty.margin(jnp.asarray(logits))) == 1
  order = np.argsort(-np.asarray(uncertainty.margin(jnp.asarray(logits))))
  assert order.tolist() == [1, 2, 0]

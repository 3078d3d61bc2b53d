"""CoreGCN / UncertainGCN: graph, loss and training against references; subset selection."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.models import gcn
from disal_jax.strategies import coregcn, selectors
from disal_jax.strategies.base import TIE_BREAK_STREAM
from tests.helpers import tiny_config


def test_adjacency_equals_the_reference_construction_by_loops():
  rng = np.random.default_rng(0)
  f = np.abs(rng.normal(size=(6, 4))).astype(np.float32)  # post-ReLU features: non-negative
  unit = f / np.linalg.norm(f, axis=1, keepdims=True)
  n = len(f)
  a = np.zeros((n, n))
  for i in range(n):
    for j in range(n):
      a[i, j] = unit[i] @ unit[j] - (1.0 if i == j else 0.0)
  col = [sum(a[i, j] for i in range(n)) for j in range(n)]
  expected = np.array(
    [[a[i, j] / col[j] + (1.0 if i == j else 0.0) for j in range(n)] for i in range(n)]
  )
  np.testing.assert_allclose(gcn.normalised_adjacency(jnp.asarray(f)), expected, rtol=1e-5)


def test_bce_adjusted_loss_closed_form():
  logits = np.array([2.0, -1.0, 0.5, -3.0], np.float32)
  labeled = np.array([True, True, False, False])
  s = 1 / (1 + np.exp(-logits))
  expected = -np.mean(np.log(s[labeled])) - 1.2 * np.mean(np.log(1 - s[~labeled]))
  got = coregcn.bce_adjusted_loss(jnp.asarray(logits), jnp.asarray(labeled), 1.2)
  assert float(got) == pytest.approx(expected, rel=1e-5)


def test_gcn_training_lowers_its_loss_and_separates_labeled_from_unlabeled():
  rng = np.random.default_rng(1)
  # two clusters: labeled nodes near one direction, unlabeled near another
  labeled = np.abs(rng.normal([3, 0, 0, 1], 0.5, size=(30, 4)))
  unlabeled = np.abs(rng.normal([0, 3, 1, 0], 0.5, size=(50, 4)))
  nodes = jnp.asarray(np.concatenate([unlabeled, labeled]), jnp.float32)
  is_labeled = jnp.arange(80) >= 50
  model = gcn.GCN(hidden=16, dropout_rate=0.3)
  scores, features, losses = coregcn.train_gcn(
    nodes,
    is_labeled,
    jax.random.key(0),
    model=model,
    steps=200,
    learning_rate=1e-2,
    weight_decay=5e-4,
    unlabeled_weight=1.2,
  )
  losses = np.asarray(losses)
  assert np.isfinite(losses).all() and losses[-10:].mean() < 0.5 * losses[:10].mean()
  # k-center space of the reference: the hidden features and the output logit
  assert features.shape == (80, 17)
  np.testing.assert_allclose(jax.nn.sigmoid(features[:, -1]), scores, rtol=1e-6)
  assert float(scores[50:].mean()) > float(scores[:50].mean()) + 0.3


def _ctx(num_candidates, subset_size, k_labeled=20):
  config = tiny_config()
  config.coregcn.subset_size = subset_size
  return types.SimpleNamespace(
    config=config,
    candidates=np.arange(100, 100 + num_candidates),
    labeled=np.arange(k_labeled),
    rng=jax.random.key(0),
    result=None,
  )


@pytest.mark.parametrize("select", [coregcn.select_core, coregcn.select_uncertain])
def test_selection_stays_in_the_subset_and_names_a_too_small_one(select):
  ctx = _ctx(40, 10)
  rng = np.random.default_rng(2)
  subset = np.sort(rng.choice(40, 10, replace=False))
  evidence = {
    "subset": subset,
    "scores": jnp.asarray(rng.uniform(size=15), jnp.float32),
    "features": jnp.asarray(rng.normal(size=(15, 3)), jnp.float32),
  }  # 10 + 5 nodes
  picks = select(evidence, ctx, 4)
  assert len(set(picks.tolist())) == 4 and set(picks.tolist()) <= set((100 + subset).tolist())
  with pytest.raises(ValueError, match="coregcn.subset_size"):
    select(evidence, ctx, 11)


def test_uncertaingcn_breaks_ties_at_random_with_the_cycle_key():
  ctx = _ctx(40, 0)
  evidence = {"subset": np.arange(40), "scores": jnp.full((40,), 0.1, jnp.float32)}
  picks = [
    coregcn.select_uncertain(
      evidence, types.SimpleNamespace(**{**vars(ctx), "rng": jax.random.key(seed)}), 5
    ).tolist()
    for seed in range(3)
  ]
  assert picks[0] != list(range(100, 105))  # not the lowest rows
  assert picks[0] != picks[1] or picks[1] != picks[2]
  assert coregcn.select_uncertain(evidence, ctx, 5).tolist() == picks[0]  # same key, same picks


def test_uncertaingcn_picks_the_scores_closest_to_the_margin():
  ctx = _ctx(5, 0)
  evidence = {"subset": np.arange(5), "scores": jnp.asarray([0.9, 0.12, 0.5, 0.08, 0.3])}
  assert sorted(coregcn.select_uncertain(evidence, ctx, 2).tolist()) == [101, 103]


def test_core_selection_is_k_center_from_the_labeled_nodes():
  from tests.test_baseline_scores import _brute_force_k_center

  ctx = _ctx(40, 0)
  rng = np.random.default_rng(4)
  subset_features = rng.normal(size=(40, 6)).astype(np.float32)
  labeled_features = rng.normal(size=(20, 6)).astype(np.float32)
  evidence = {
    "subset": np.arange(40),
    "scores": jnp.zeros(60, jnp.float32),
    "features": jnp.asarray(np.concatenate([subset_features, labeled_features])),
  }
  picks = coregcn.select_core(evidence, ctx, 7)
  ties = selectors.tie_break(jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), 60)[:40]
  assert (picks - 100).tolist() == _brute_force_k_center(subset_features, labeled_features, 7, ties)


def test_core_selection_breaks_distance_ties_at_random_with_the_cycle_key():
  ctx = _ctx(12, 0)
  # 3 points stored 4 times each, all at distance 1 from the one labeled node: ties
  features = np.concatenate(
    [np.repeat(np.eye(3, dtype=np.float32), 4, axis=0), np.zeros((1, 3), np.float32)]
  )
  evidence = {
    "subset": np.arange(12),
    "scores": jnp.zeros(13, jnp.float32),
    "features": jnp.asarray(features),
  }
  picks = [
    coregcn.select_core(
      evidence, types.SimpleNamespace(**{**vars(ctx), "rng": jax.random.key(seed)}), 3
    ).tolist()
    for seed in range(6)
  ]
  assert all(sorted((np.array(p) - 100) // 4) == [0, 1, 2] for p in picks)
  assert len({p[0] for p in picks}) > 1  # an argmax would start from row 100 every time
  assert coregcn.select_core(evidence, ctx, 3).tolist() == picks[0]  # same key, same picks

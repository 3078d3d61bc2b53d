"""Strategy-section config keys that change behaviour, each against the function that reads it.

Every test sets the key to two values on small hand-made inputs and checks an outcome that
differs between them (a closed form, numpy, or the evidence's shape), so a key that is ignored,
read under another name or inverted fails. No AL runs: the expensive parts a function calls
(backbone features, the GCN, MC-Dropout passes) are replaced by fixed arrays.
"""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.models import stage_head
from disal_jax.strategies import (
  batchbald,
  coregcn,
  embedding,
  learning_loss,
  probcover,
  tidal,
  tod,
  typiclust,
)
from tests.helpers import tiny_config

# -- Learning Loss and TiDAL ----------------------------------------------------------------


def _stage_inputs(batch=6, classes=3, hidden=2):
  """A StageHead's params (under PARAMS_KEY) and outputs of a fake backbone: logits, labels
  and four small stage maps."""
  rng = np.random.default_rng(0)
  stages = [jnp.asarray(rng.normal(size=(batch, 2, 2, 3)), jnp.float32) for _ in range(4)]
  logits = rng.normal(size=(batch, classes)).astype(np.float32) * 2
  labels = rng.integers(0, classes, batch).astype(np.int32)
  head = stage_head.StageHead(outputs=1, hidden=hidden)
  params = {stage_head.PARAMS_KEY: head.init(jax.random.key(1), stages)["params"]}
  return head, params, stages, logits, labels


@pytest.mark.parametrize("weight, margin", [(1.0, 1.0), (0.5, 0.2), (2.0, 0.0)])
def test_learning_loss_hook_uses_its_weight_and_margin(weight, margin):
  head, params, stages, logits, labels = _stage_inputs()
  config = tiny_config(
    **{"learning_loss.weight": weight, "learning_loss.margin": margin, "learning_loss.hidden": 2}
  )
  hook = learning_loss.make_hook(config)
  batch = {"labels": jnp.asarray(labels), "detach_head": jnp.asarray(False)}
  outputs = {"logits": jnp.asarray(logits), "stages": stages}
  total, metrics, _ = hook.loss(
    params, types.SimpleNamespace(extras={}), None, batch, {}, None, outputs, preprocess=None
  )
  # independent side: CE per sample, pairs (i, B-1-i), hinge max(0, margin - s (l_i - l_j))
  predicted = np.asarray(head.apply({"params": params[stage_head.PARAMS_KEY]}, stages))[:, 0]
  shifted = logits - logits.max(axis=1, keepdims=True)
  ce = -(shifted[np.arange(len(labels)), labels] - np.log(np.exp(shifted).sum(axis=1)))
  half = len(labels) // 2
  terms = [
    max(0.0, margin - (1.0 if ce[i] > ce[-1 - i] else -1.0) * (predicted[i] - predicted[-1 - i]))
    for i in range(half)
  ]
  expected = float(np.mean(terms))
  assert expected > 0
  assert float(metrics["ranking_loss"]) == pytest.approx(expected, rel=1e-5, abs=1e-7)
  assert float(total) == pytest.approx(weight * expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("module", [learning_loss, tidal])
@pytest.mark.parametrize("fraction, first", [(0.3, 4), (0.75, 9), (1.0, None)])
def test_detach_fraction_sets_the_first_detached_epoch(module, fraction, first):
  """First detached (0-based) epoch round(fraction * epochs) + 1; 1.0 never detaches."""
  name = module.__name__.rsplit(".", 1)[-1]
  config = tiny_config(**{"train.epochs": 10, f"{name}.detach_fraction": fraction})
  hook = module.make_hook(config)
  flags = [bool(hook.epoch_inputs(None, e, 1, 0, 0, ())["detach_head"][0]) for e in range(10)]
  if first is None:
    assert not any(flags)
  else:
    assert flags.index(True) == first and all(flags[first:])


# -- CoreGCN and UncertainGCN ---------------------------------------------------------------


@pytest.mark.parametrize("margin, closest", [(0.1, 0), (0.45, 1), (0.9, 2)])
def test_uncertaingcn_picks_the_score_closest_to_coregcn_margin(margin, closest):
  config = tiny_config(**{"coregcn.margin": margin})
  ctx = types.SimpleNamespace(
    config=config,
    candidates=np.arange(100, 105),
    labeled=np.arange(3),
    rng=jax.random.key(0),
    result=None,
  )
  evidence = {"subset": np.arange(5), "scores": jnp.asarray([0.1, 0.5, 0.9, 0.3, 0.7])}
  assert coregcn.select_uncertain(evidence, ctx, 1).tolist() == [100 + closest]


@pytest.mark.parametrize("kind, width", [("hidden_and_output", 4), ("hidden", 3)])
def test_coregcn_kcenter_features_keeps_or_drops_the_output_column(kind, width, monkeypatch):
  """score's k-center features: the GCN's hidden features and its output logit (the last
  column), or the hidden features alone. The backbone and the GCN are replaced by fixed
  arrays."""
  nodes = 5 + 2  # candidates + labeled
  features = np.arange(nodes * 4, dtype=np.float32).reshape(nodes, 4)
  monkeypatch.setattr(coregcn, "map_rows", lambda ctx, fn, state, rows: jnp.ones((len(rows), 6)))
  monkeypatch.setattr(
    coregcn,
    "train_gcn",
    lambda nodes, is_labeled, rng, **kw: (
      jnp.full((nodes.shape[0],), 0.5),
      jnp.asarray(features),
      jnp.zeros(3),
    ),
  )
  config = tiny_config(**{"coregcn.kcenter_features": kind})
  ctx = types.SimpleNamespace(
    config=config,
    candidates=np.arange(100, 105),
    labeled=np.arange(2),
    rng=jax.random.key(0),
    data=types.SimpleNamespace(preprocess=None),
    result=types.SimpleNamespace(state=None),
  )
  got = np.asarray(coregcn.score(ctx)["features"])
  np.testing.assert_array_equal(got, features[:, :width])


# -- TOD ------------------------------------------------------------------------------------


@pytest.mark.parametrize("first_cycle", ["untrained", "teacher"])
def test_tod_first_cycle_picks_the_earlier_model_of_cycle_0(first_cycle):
  seen_keys = []

  def init_state(key):
    seen_keys.append(key)
    return types.SimpleNamespace(variables=lambda: {"params": "untrained", "batch_stats": "u"})

  state = types.SimpleNamespace(extras={tod.TEACHER: "teacher"}, batch_stats="trained")
  ctx = types.SimpleNamespace(
    config=tiny_config(**{"tod.first_cycle": first_cycle}),
    cycle=0,
    rng=jax.random.key(0),
    result=types.SimpleNamespace(state=state),
    data=types.SimpleNamespace(init_state=init_state),
  )
  earlier = tod._earlier_variables(ctx)
  if first_cycle == "teacher":
    assert earlier == {"params": "teacher", "batch_stats": "trained"} and not seen_keys
  else:
    assert earlier == {"params": "untrained", "batch_stats": "u"} and len(seen_keys) == 1


# -- ProbCover ------------------------------------------------------------------------------


@pytest.mark.parametrize("delta, allowed", [(0.5, {5, 6, 7}), (2.5, {2})])
def test_probcover_delta_sets_the_ball_radius(delta, allowed):
  """Candidates on a line: 0, 1, 2, 3, 4 and a tight triple at 20. With delta 0.5 only the
  triple's rows cover more than themselves (3 each); with 2.5 row 2 covers the five of the
  line, more than any of the triple."""
  line = [0.0, 1.0, 2.0, 3.0, 4.0, 20.0, 20.1, 20.2]
  x = np.asarray([[-100.0]] + [[v] for v in line], np.float32)  # the labeled row first
  labeled = np.arange(len(x)) == 0
  config = tiny_config(**{"probcover.delta": delta, "probcover.block_size": 4})
  ctx = types.SimpleNamespace(
    config=config,
    candidates=np.arange(200, 208),
    rng=jax.random.key(0),
    data=types.SimpleNamespace(dataset=types.SimpleNamespace(train_labels=np.zeros(20))),
  )
  picks = probcover.select({"x": jnp.asarray(x), "labeled": labeled}, ctx, 1)
  assert int(picks[0]) - 200 in allowed


# -- TypiClust ------------------------------------------------------------------------------


def _two_blobs():
  """8 rows tight at the origin (positions 0-7), 6 at (100, 0) (positions 8-13)."""
  rng = np.random.default_rng(3)
  a = rng.normal(scale=0.1, size=(8, 2))
  b = rng.normal(scale=0.1, size=(6, 2)) + [100.0, 0.0]
  return np.concatenate([a, b]).astype(np.float32)


def _typiclust_ctx(**overrides):
  config = tiny_config(**{"typiclust.min_cluster_size": 0, "typiclust.knn": 20, **overrides})
  return types.SimpleNamespace(config=config, candidates=np.arange(300, 314), rng=jax.random.key(0))


@pytest.mark.parametrize("max_clusters, blobs", [(1, [0, 0]), (2, [0, 1])])
def test_typiclust_max_clusters_caps_the_k_means_clusters(max_clusters, blobs):
  """k = 2 and nothing labeled: min(0 + 2, max_clusters) clusters. One cluster gives its two
  most typical rows, both in the denser blob; two clusters give one row of each blob."""
  x = _two_blobs()
  ctx = _typiclust_ctx(**{"typiclust.max_clusters": max_clusters})
  evidence = {"x": jnp.asarray(x), "labeled": np.zeros(len(x), bool)}
  picks = typiclust.select(evidence, ctx, 2) - 300
  assert sorted((picks >= 8).astype(int).tolist()) == blobs


@pytest.mark.parametrize("iterations", [0, 7])
def test_typiclust_kmeans_iterations_reach_k_means(iterations, monkeypatch):
  calls = []
  real = embedding.kmeans

  def spy(x, key, k, its, max_clusters=0):
    calls.append((k, its, max_clusters))
    return real(x, key, k, its, max_clusters=max_clusters)

  monkeypatch.setattr(embedding, "kmeans", spy)
  x = _two_blobs()
  ctx = _typiclust_ctx(**{"typiclust.kmeans_iterations": iterations, "typiclust.max_clusters": 3})
  typiclust.select({"x": jnp.asarray(x), "labeled": np.zeros(len(x), bool)}, ctx, 2)
  assert calls == [(2, iterations, 3)]


# -- BatchBALD ------------------------------------------------------------------------------


@pytest.mark.parametrize("passes", [2, 5])
def test_batchbald_passes_sets_the_dropout_passes_of_the_evidence(passes, monkeypatch):
  """score's evidence holds batchbald.passes MC-Dropout passes per candidate (not
  mc_dropout.passes); the passes themselves are replaced by zeros of the asked shape."""
  monkeypatch.setattr(
    batchbald,
    "mc_probs",
    lambda scoring, data, batch, *, preprocess, passes: jnp.zeros(
      (batch["index"].shape[0], passes, 3)
    ),
  )
  monkeypatch.setattr(
    batchbald,
    "pool_outputs",
    lambda ctx, fn, scoring_state: fn(
      scoring_state, None, {"index": jnp.arange(len(ctx.candidates))}
    ),
  )
  config = tiny_config(
    **{"batchbald.passes": passes, "batchbald.configurations": 100, "mc_dropout.passes": 7}
  )
  ctx = types.SimpleNamespace(
    config=config,
    candidates=np.arange(4),
    rng=jax.random.key(0),
    data=types.SimpleNamespace(preprocess=None),
    result=types.SimpleNamespace(state=None),
  )
  assert batchbald.score(ctx).shape == (4, passes, 3)

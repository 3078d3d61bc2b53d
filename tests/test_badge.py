"""BADGE's seeding against a brute-force numpy k-means++ on materialised embeddings, and the
single-pass uncertainty scores against their formulas."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.strategies import badge, selectors, uncertainty
from disal_jax.strategies.base import TIE_BREAK_STREAM
from tests.helpers import tiny_config


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
  other = badge.kmeans_pp(
    jnp.asarray(u), jnp.asarray(a), badge.draw_uniforms(jax.random.key(seed + 7), k), k
  )
  assert np.asarray(other).tolist() != picks.tolist()  # another key, other draws


def test_padding_is_never_drawn_and_changes_no_pick():
  from tests.helpers import CompileCounter

  rng = np.random.default_rng(3)
  u, a = _factors(rng, 300, 6, 9)
  # padding with the largest norms: the first centre if it were not ignored
  u_pad = np.concatenate([u, np.full((84, u.shape[1]), 5.0, np.float32)])
  a_pad = np.concatenate([a, np.full((84, a.shape[1]), 5.0, np.float32)])
  uniforms = badge.draw_uniforms(jax.random.key(4), 20)

  def check(count):
    g = (u[:count, :, None] * a[:count, None, :]).reshape(count, -1)
    picks = badge.kmeans_pp(jnp.asarray(u_pad), jnp.asarray(a_pad), uniforms, 20, np.int32(count))
    assert np.asarray(picks).tolist() == _numpy_kmeans_pp(g, np.asarray(uniforms, np.float64), 20)

  check(300)
  with CompileCounter() as compiles:
    check(250)
  assert compiles.count == 0


def test_seeding_never_repeats_a_row_among_duplicates():
  u = np.tile(np.array([[0.5, -0.5], [-0.9, 0.9]], np.float32), (4, 1))  # 2 distinct points
  a = np.ones((8, 3), np.float32)
  picks = np.asarray(
    badge.kmeans_pp(jnp.asarray(u), jnp.asarray(a), badge.draw_uniforms(jax.random.key(0), 6), 6)
  )
  assert len(set(picks.tolist())) == 6


@pytest.mark.parametrize("head_bias", [False, True])
def test_embedding_is_the_head_gradient_kernel_only_by_default(head_bias):
  """badge.score's factors u (x) a' against autodiff of CE(x, yhat) over the head: the
  kernel's gradient (the reference's `get_grad_embedding`), and the bias's with head_bias."""
  import types

  import optax

  from disal_jax.models import resnet
  from disal_jax.strategies.base import ScoringContext, ScoringData
  from disal_jax.training import sharding
  from disal_jax.training.augment import Preprocess
  from disal_jax.training.state import TrainState
  from disal_jax.training.steps import DeviceData
  from tests.helpers import tiny_config

  assert not tiny_config().badge.head_bias  # the reference's embedding is the default
  model = resnet.ResNet18(num_classes=4, width=4)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  params = dict(
    variables["params"],
    head=dict(  # a bias that moves the predictions
      variables["params"]["head"], bias=jnp.asarray([0.3, -0.2, 0.1, 0.0])
    ),
  )
  state = TrainState.create(
    apply_fn=model.apply,
    params=params,
    batch_stats=variables["batch_stats"],
    tx=optax.sgd(0.1),
    rng=jax.random.key(0),
  )
  images = np.random.default_rng(0).integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
  pre = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  mesh = sharding.make_mesh()
  data = ScoringData(
    None, DeviceData(jnp.asarray(images), jnp.zeros((12,), jnp.int32)), mesh, pre, 1, None
  )
  candidates = np.array([1, 4, 5, 9, 11])
  result = types.SimpleNamespace(
    state=state,
    pool_index=jax.device_put(
      np.pad(candidates, (0, 3)).astype(np.int32), sharding.along_data(mesh)
    ),
  )
  config = tiny_config(**{"badge.head_bias": head_bias, "train.eval_batch_size": 8})
  ctx = ScoringContext(config, data, result, candidates, np.array([0]), jax.random.key(0), 0)
  evidence = badge.STRATEGY.score(ctx)
  u, a = (np.asarray(evidence[key])[: len(candidates)] for key in ("u", "a"))
  got = u[:, :, None] * a[:, None, :]  # (P, C, D')

  def loss(head, image):  # CE at the predicted label, the head's parameters free
    out = model.apply(
      {"params": dict(params, head=head), "batch_stats": variables["batch_stats"]},
      pre.normalise(image[None]),
      train=False,
    )["logits"][0]
    return -jax.nn.log_softmax(out)[jax.lax.stop_gradient(jnp.argmax(out))]

  head_grad = jax.jit(jax.grad(loss))
  for row, embedding in zip(candidates, got):
    grad = head_grad(params["head"], jnp.asarray(images[row]))
    expected = np.asarray(grad["kernel"]).T  # (C, D)
    if head_bias:
      expected = np.concatenate([expected, np.asarray(grad["bias"])[:, None]], axis=1)
    np.testing.assert_allclose(embedding, expected, rtol=1e-4, atol=1e-6)


def test_uncertainty_scores_follow_their_formulas():
  logits = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0], [5.0, -1.0, 4.9]], np.float32)
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  top = np.sort(p, axis=1)[:, ::-1]
  np.testing.assert_allclose(
    uncertainty.SCORES["entropy"](jnp.asarray(logits)), -(p * np.log(p)).sum(1), rtol=1e-5
  )
  np.testing.assert_allclose(
    uncertainty.margin(jnp.asarray(logits)), top[:, 1] - top[:, 0], rtol=1e-5, atol=1e-7
  )
  np.testing.assert_allclose(
    uncertainty.least_confidence(jnp.asarray(logits)), 1 - top[:, 0], rtol=1e-5
  )
  # the uniform row is the least certain by all three; margin ranks row 2 (4.9 vs 5.0) next
  assert np.argmax(uncertainty.margin(jnp.asarray(logits))) == 1
  order = np.argsort(-np.asarray(uncertainty.margin(jnp.asarray(logits))))
  assert order.tolist() == [1, 2, 0]


# -- BatchBALD ----------------------------------------------------------------------------
from disal_jax.strategies import batchbald  # noqa: E402


def _joint_entropy_brute_force(probs_a, probs_i):
  """H(y_A, y_i) by enumerating every configuration: probs_a (n, K, C), probs_i (K, C)."""
  import itertools

  n, passes, classes = probs_a.shape
  total = 0.0
  for config in itertools.product(range(classes), repeat=n + 1):
    p = np.mean(
      [
        np.prod([probs_a[b, k, config[b]] for b in range(n)]) * probs_i[k, config[-1]]
        for k in range(passes)
      ]
    )
    total -= p * np.log(p) if p > 0 else 0.0
  return total


def _mc_probs(rng, points, passes, classes):
  logits = rng.normal(size=(points, passes, classes)) * 1.5
  return (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)


def test_exact_joint_entropy_equals_enumerating_every_configuration():
  rng = np.random.default_rng(0)
  probs = _mc_probs(rng, 6, 4, 3)
  members, candidates = probs[:2], probs[2:]
  slots = batchbald.exact_slots(3, 27)
  assert slots == 3
  chosen = np.broadcast_to(np.eye(3)[0], (slots, 4, 3)).copy()
  chosen[:2] = members
  table = batchbald.exact_table(jnp.asarray(chosen), jnp.int32(9), 27)
  got = batchbald.joint_entropies(table, jnp.ones(27), jnp.asarray(candidates))
  expected = [_joint_entropy_brute_force(members, c) for c in candidates]
  np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_sampled_joint_entropy_estimates_the_exact_one():
  rng = np.random.default_rng(1)
  probs = _mc_probs(rng, 5, 10, 3)
  members, candidate = probs[:4], probs[4:]
  exact = _joint_entropy_brute_force(members, candidate[0])
  table = batchbald.sampled_table(jnp.asarray(members), 20_000, jax.random.key(0))
  q = table.mean(axis=1)
  weights = 1.0 / (q * 20_000)
  estimate = float(batchbald.joint_entropies(table, weights, jnp.asarray(candidate))[0])
  assert abs(estimate - exact) < 0.03 * exact


def test_batchbald_skips_duplicates_that_top_k_bald_takes():
  """Rows 1 and 2 copy row 0, the most informative; row 3 is a little less informative but
  independent. Top-2 BALD takes two copies; BatchBALD takes row 0 and row 3."""
  passes = 8
  disagree = np.array([[0.95, 0.05] if k % 2 else [0.05, 0.95] for k in range(passes)])
  other = np.array([[0.9, 0.1] if k < passes // 2 else [0.1, 0.9] for k in range(passes)])
  probs = np.stack([disagree, disagree, disagree, other, np.full((passes, 2), 0.5)])
  probs = jnp.asarray(probs, jnp.float32)
  from disal_jax.strategies.mc_dropout import bald

  bald_scores = np.asarray(bald(jnp.swapaxes(probs, 0, 1)))
  assert bald_scores[0] > bald_scores[3] > bald_scores[4]
  assert set(np.argsort(-bald_scores, kind="stable")[:2].tolist()) <= {0, 1, 2}
  picks = batchbald.greedy(
    probs, 2, configurations=64, block=3, key=jax.random.key(0), ties=np.zeros(5)
  )
  assert picks[0] in (0, 1, 2) and picks[1] == 3


def test_batchbald_ignores_padding_and_compiles_once_for_every_pool():
  from tests.helpers import CompileCounter

  rng = np.random.default_rng(5)
  probs = _mc_probs(rng, 40, 6, 3)
  # padding of maximal disagreement: BatchBALD's first pick if it were a candidate
  flip = np.stack([np.eye(3)[k % 3] for k in range(6)]).astype(np.float32)
  padded = jnp.asarray(np.concatenate([probs, np.broadcast_to(flip, (24, 6, 3))]))

  def check(count):
    ties = np.random.default_rng(count).uniform(size=count)
    expected = batchbald.greedy(jnp.asarray(probs[:count]), 5, 81, 16, jax.random.key(1), ties=ties)
    got = batchbald.greedy(padded, 5, 81, 16, jax.random.key(1), num_points=count, ties=ties)
    assert got.tolist() == expected.tolist() and got.max() < count

  check(40)
  with CompileCounter() as compiles:
    batchbald.greedy(padded, 5, 81, 16, jax.random.key(1), num_points=33, ties=np.zeros(33))
  assert compiles.count == 0
  check(33)


def _batchbald_brute_force(probs, k, ties):
  """Greedy BatchBALD by enumerating every configuration of the batch (exact joint entropy);
  equal scores go to the lowest `ties` number."""
  conditional = np.array([np.mean([-np.sum(p * np.log(p)) for p in row]) for row in probs])
  picks = []
  for _ in range(k):
    scores = np.full(len(probs), -np.inf)
    for i in range(len(probs)):
      if i not in picks:
        scores[i] = (
          _joint_entropy_brute_force(probs[picks].reshape(-1, *probs.shape[1:]), probs[i])
          - conditional[picks + [i]].sum()
        )
    tied = np.flatnonzero(np.isclose(scores, scores.max(), rtol=1e-9, atol=0))
    picks.append(int(tied[np.argmin(ties[tied])]))
  return picks


def test_batchbald_breaks_exact_ties_at_random_with_the_cycle_key():
  """Three kinds of candidate stored 3 times each in a row (a class-sorted folder): each
  step's best score is shared by the copies of one kind. An argmax would take the first
  copy for every key."""
  import types

  passes = 6
  kinds = np.stack(
    [
      [[0.9, 0.1] if k % 2 else [0.1, 0.9] for k in range(passes)],  # disagreement
      [[0.8, 0.2] if k < passes // 2 else [0.3, 0.7] for k in range(passes)],
      [[0.6, 0.4] if k % 3 else [0.4, 0.6] for k in range(passes)],
    ]
  )
  probs = np.repeat(kinds, 3, axis=0).astype(np.float32)  # (9, K, 2)
  config = tiny_config(**{"batchbald.configurations": 12, "batchbald.block_size": 16})
  evidence = jnp.asarray(np.concatenate([probs, np.full((3, passes, 2), 0.5, np.float32)]))
  firsts = set()
  for seed in range(10):
    ctx = types.SimpleNamespace(
      config=config, candidates=np.arange(50, 59), result=None, rng=jax.random.key(seed)
    )
    picks = batchbald.select(evidence, ctx, 3)
    assert picks.tolist() == batchbald.select(evidence, ctx, 3).tolist()  # same key
    ties = selectors.tie_break(jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), 9)
    assert (picks - 50).tolist() == _batchbald_brute_force(probs.astype(np.float64), 3, ties)
    firsts.add(int(picks[0]))
  assert firsts == {50, 51, 52}  # every copy of the most informative kind, by key


@pytest.mark.parametrize("train_dropout", [True, False])
def test_batchbald_trains_its_model_with_dropout_by_default(train_dropout):
  """batchbald.train_dropout (default True, the reference's Bayesian CNN) reaches the model
  its runs train (tests/test_model.py checks that the model's train_dropout gates dropout in
  the train step)."""
  from disal_jax import loop
  from disal_jax.models.registry import build_model

  assert tiny_config().batchbald.train_dropout  # the default follows the reference
  config = tiny_config(
    **{"batchbald.train_dropout": train_dropout, "mc_dropout.train_dropout": not train_dropout}
  )  # not this one
  model = build_model(loop.model_config(config, batchbald.STRATEGY), 3)
  assert model.train_dropout == train_dropout
  assert model.dropout_rate == config.mc_dropout.dropout_rate > 0

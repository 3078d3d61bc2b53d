"""Learning Loss and TiDAL: their formulas against slow references, their modules learning, and
their training inside the real train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from disal_jax.data.registry import load_dataset
from disal_jax.models import stage_head
from disal_jax.models.registry import build_model
from disal_jax.strategies import learning_loss, tidal
from disal_jax.training import sharding
from disal_jax.training.trainer import Trainer
from tests.helpers import tiny_config


# -- formulas against slow references ----------------------------------------------------
@pytest.mark.parametrize("batch", [6, 7])
def test_ranking_loss_equals_a_loop_over_the_pairs(batch):
  rng = np.random.default_rng(batch)
  predicted = rng.normal(size=batch).astype(np.float32)
  target = rng.normal(size=batch).astype(np.float32)
  target[1] = target[batch - 2]  # a tie: the reference counts it as -1
  terms = []
  for i in range(batch // 2):
    j = batch - 1 - i
    sign = 1.0 if target[i] - target[j] > 0 else -1.0
    terms.append(max(0.0, 1.0 - sign * (predicted[i] - predicted[j])))
  got = learning_loss.ranking_loss(jnp.asarray(predicted), jnp.asarray(target), 1.0)
  assert float(got) == pytest.approx(np.mean(terms), rel=1e-6)


def test_running_mean_update_equals_per_sample_averages():
  rng = np.random.default_rng(0)
  n, c = 9, 4
  mean, count = jnp.zeros((n, c)), jnp.zeros((n,))
  seen = {i: [] for i in range(n)}
  for _ in range(3):
    order = rng.permutation(n)[:7]  # 7 of 9 rows each epoch: some rows miss epochs
    # the second batch ends with a fill row repeating one of the batch: not folded in
    for rows, fresh in (
      (order[:4], [True] * 4),
      (np.append(order[4:], order[4]), [True] * 3 + [False]),
    ):
      probs = rng.dirichlet(np.ones(c), size=len(rows)).astype(np.float32)
      mean, count = tidal.update_running_mean(
        mean, count, jnp.asarray(rows), jnp.asarray(probs), jnp.asarray(fresh)
      )
      for r, p, f in zip(rows.tolist(), probs, fresh):
        if f:
          seen[r].append(p)
  for r in range(n):
    assert float(count[r]) == len(seen[r])
    expected = np.mean(seen[r], axis=0) if seen[r] else np.zeros(c)
    np.testing.assert_allclose(mean[r], expected, rtol=1e-5, atol=1e-7)


def test_kl_to_module_closed_form():
  target = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], np.float32)
  logits = np.array([[1.0, 0.0, -1.0], [0.3, 0.1, 2.0]], np.float32)
  q = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  expected = [
    sum(t * np.log(t / qq) for t, qq in zip(tr, qr) if t > 0) for tr, qr in zip(target, q)
  ]
  np.testing.assert_allclose(
    tidal.kl_to_module(jnp.asarray(target), jnp.asarray(logits)), expected, rtol=1e-5
  )


def test_tidal_margin_and_entropy_scores():
  logits = jnp.log(jnp.array([[0.5, 0.3, 0.2], [0.9, 0.05, 0.05]]))
  np.testing.assert_allclose(tidal.uncertainty(logits, "margin"), [-0.2, -0.85], rtol=1e-5)
  ent = tidal.uncertainty(logits, "entropy")
  assert float(ent[0]) > float(ent[1]) > 0


# -- the modules learn ----------------------------------------------------------------------
def _stages(batch, rng):
  return [
    jnp.asarray(rng.normal(size=(batch, s, s, ch)), jnp.float32)
    for s, ch in ((8, 4), (4, 8), (2, 16), (1, 32))
  ]


def _fit(loss_of_output, outputs, steps=150):
  rng = np.random.default_rng(0)
  stages = _stages(32, rng)
  head = stage_head.StageHead(outputs=outputs, hidden=16)
  params = head.init(jax.random.key(0), stages)["params"]
  tx = optax.sgd(0.05, momentum=0.9)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt):
    value, grads = jax.value_and_grad(
      lambda p: loss_of_output(head.apply({"params": p}, stages), stages)
    )(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value

  losses = []
  for _ in range(steps):
    params, opt, value = step(params, opt)
    losses.append(float(value))
  return losses


def test_loss_prediction_module_learns_the_ranking():
  # the "true losses" are a fixed function of the stage maps: learnable
  target = lambda stages: jnp.mean(stages[1], axis=(1, 2, 3)) * 10
  losses = _fit(lambda out, st: learning_loss.ranking_loss(out[:, 0], target(st), 1.0), 1)
  assert losses[-1] < 0.3 * losses[0]


def test_dynamics_module_learns_the_running_means():
  target = jax.nn.softmax(jnp.asarray(np.random.default_rng(1).normal(size=(32, 5)), jnp.float32))
  losses = _fit(lambda out, st: jnp.mean(tidal.kl_to_module(target, out)), 5)
  assert losses[-1] < 0.3 * losses[0]


# -- inside the real train step -------------------------------------------------------------
def _train(config, hook, epochs=None):
  if epochs is not None:
    config.train.epochs = epochs
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh(), hook=hook
  )
  labeled = np.arange(0, dataset.num_train, 4)
  pool = np.setdiff1d(np.arange(dataset.num_train), labeled)
  state = trainer.init_state(jax.random.key(0))
  return trainer, labeled, state, trainer.train_cycle(state, labeled, pool, (0, 0), cycle=0)


@pytest.mark.slow
def test_tidal_running_means_are_updated_inside_the_train_step():
  config = tiny_config(**{"data.max_train": 200})
  trainer, labeled, state, result = _train(config, tidal.make_hook(config), epochs=3)
  assert stage_head.PARAMS_KEY in state.params
  count = np.asarray(result.state.extras[tidal.COUNT])
  mean = np.asarray(result.state.extras[tidal.MEAN])
  unlabeled = np.setdiff1d(np.arange(len(count)), labeled)
  assert (count[labeled] == 3).all() and (count[unlabeled] == 0).all()
  np.testing.assert_allclose(mean[labeled].sum(1), 1.0, rtol=1e-5)
  assert (mean[unlabeled] == 0).all()
  assert all(np.isfinite(e["dynamics_kl"]) for e in result.epochs)


@pytest.mark.slow
def test_tidal_warm_start_restarts_the_running_means_and_the_random_stream():
  """Under train.warm_start the next cycle keeps the weights but starts TiDAL's running means
  at zero (the reference's restart at epoch 0) and draws its own augmentation keys."""
  config = tiny_config(**{"data.max_train": 200})
  trainer, labeled, state, result = _train(config, tidal.make_hook(config), epochs=2)
  assert np.asarray(result.state.extras[tidal.COUNT]).max() == 2
  warm = trainer.reset_optimizer(result.state, jax.random.key(7))
  assert int(warm.step) == 0
  assert not np.asarray(warm.extras[tidal.COUNT]).any()
  assert not np.asarray(warm.extras[tidal.MEAN]).any()
  for a, b in zip(jax.tree.leaves(warm.params), jax.tree.leaves(result.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(jax.random.key_data(warm.rng), jax.random.key_data(state.rng))
  next_cycle = trainer.train_cycle(
    warm, labeled, np.setdiff1d(np.arange(200), labeled), (0, 1), cycle=1
  )
  assert np.asarray(next_cycle.state.extras[tidal.COUNT]).max() == 2  # this cycle's epochs only


@pytest.mark.slow
@pytest.mark.parametrize("detach, moves", [(False, True), (True, False)])
def test_learning_loss_detaches_the_backbone_when_told(detach, moves):
  config = tiny_config(**{"data.max_train": 200})
  hook = learning_loss.make_hook(config)
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh(), hook=hook
  )
  state = trainer.init_state(jax.random.key(0))
  images = trainer.preprocess.normalise(trainer.train_data.images[:16])
  batch = {
    "index": jnp.arange(16),
    "detach_head": jnp.asarray(detach),
    "labels": trainer.train_data.labels[:16],
  }  # as train_step hands a hook

  def ranking(params):
    outputs, _ = state.apply_fn(
      state.variables(params), images, train=True, mutable=["batch_stats"]
    )
    return hook.loss(
      params, state, trainer.train_data, batch, {}, None, outputs, preprocess=trainer.preprocess
    )[0]

  grads = jax.grad(ranking)(state.params)
  backbone = max(
    float(jnp.abs(g).max())
    for g in jax.tree.leaves({k: v for k, v in grads.items() if k != stage_head.PARAMS_KEY})
  )
  module = max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[stage_head.PARAMS_KEY]))
  assert module > 0
  assert (backbone > 0) == moves


def test_detach_follows_the_references():
  """Learning Loss: detached when epoch > 120 of 200 (0-based), as its reference; TiDAL's
  reference never detaches its module."""
  config = tiny_config()
  config.train.epochs = 200
  hook = learning_loss.make_hook(config)
  flags = [bool(hook.epoch_inputs(None, e, 1, 0, 0, ())["detach_head"][0]) for e in range(200)]
  assert flags.index(True) == 121 and all(flags[121:])
  hook = tidal.make_hook(config)
  assert not any(hook.epoch_inputs(None, e, 1, 0, 0, ())["detach_head"][0] for e in range(200))

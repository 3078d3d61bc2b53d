"""DISAL's scores against independent slow references on a small ResNet with random weights."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from disal_jax.models import resnet
from disal_jax.strategies import disal, per_sample
from disal_jax.training import steps
from disal_jax.training.augment import Preprocess
from disal_jax.training.state import TrainState, learning_rate, make_optimizer
from disal_jax.training.steps import DeviceData
from tests.helpers import tiny_config

PRE = Preprocess((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _State(model, variables):
  """A real TrainState at the given variables (the scoring functions read it)."""
  return TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=optax.sgd(0.1),
    rng=jax.random.key(0),
  )


def _setup(batch=6, classes=5):
  model = resnet.ResNet18(num_classes=classes, width=4)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (batch, 8, 8, 3), dtype=np.uint8)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  # non-trivial BatchNorm statistics, so eval mode is really exercised
  variables = {
    "params": variables["params"],
    "batch_stats": jax.tree.map(
      lambda x: x + 0.1 * jax.random.uniform(jax.random.key(1), x.shape), variables["batch_stats"]
    ),
  }
  direction = jax.tree.map(
    lambda x: 0.01 * jax.random.normal(jax.random.key(2), x.shape), variables["params"]
  )
  target = jax.nn.softmax(jax.random.normal(jax.random.key(3), (batch, classes)))
  data = DeviceData(jnp.asarray(images), jnp.zeros((batch,), jnp.int32))
  batch_in = {"index": jnp.arange(batch, dtype=jnp.int32), "target": target}
  return model, variables, direction, data, batch_in


def _slow_grads(model, variables, images, target, kind):
  """One jax.grad per sample: the independent reference."""
  grads = []
  for i in range(images.shape[0]):

    def loss(params, i=i):
      logits = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        PRE.normalise(images[i : i + 1]),
        train=False,
      )["logits"]
      return disal.dynamic_loss(logits, target[i : i + 1], kind)[0]

    grads.append(jax.grad(loss)(variables["params"]))
  return grads


def _dot(a, b):
  return sum(float(jnp.vdot(x, y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize(
  "kind, atol", [pytest.param("ce", 1e-7, marks=pytest.mark.slow), ("mse", 1e-8)]
)
def test_jvp_projection_equals_per_sample_gradients_dotted_with_d(kind, atol):
  model, variables, direction, data, batch = _setup()
  scoring = {"state": _State(model, variables), "direction": direction}
  fast = np.asarray(disal.projection_scores(scoring, data, batch, preprocess=PRE, kind=kind))
  slow = np.array(
    [_dot(g, direction) for g in _slow_grads(model, variables, data.images, batch["target"], kind)]
  )
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=atol)
  assert np.abs(slow).min() > 0  # a real signal, not a trivially zero comparison


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["one_pass", "vmap"])
def test_gradient_norm_option_equals_a_per_sample_loop(engine):
  model, variables, direction, data, batch = _setup()
  scoring = {"state": _State(model, variables), "direction": direction}
  fast = np.asarray(
    disal.gradient_norm_scores(
      scoring, data, batch, preprocess=PRE, kind="ce", engine=per_sample.Engine(engine)
    )
  )
  slow = np.array(
    [np.sqrt(_dot(g, g)) for g in _slow_grads(model, variables, data.images, batch["target"], "ce")]
  )
  np.testing.assert_allclose(fast, slow, rtol=1e-5)


def test_kl_and_ce_give_the_same_scores():
  model, variables, direction, data, batch = _setup()
  scoring = {"state": _State(model, variables), "direction": direction}
  ce = disal.projection_scores(scoring, data, batch, preprocess=PRE, kind="ce")
  kl = disal.projection_scores(scoring, data, batch, preprocess=PRE, kind="kl")
  np.testing.assert_allclose(ce, kl, rtol=1e-5, atol=1e-7)


def test_dynamic_loss_closed_form():
  logits = jnp.array([[1.0, 2.0, 0.5]])
  target = jnp.array([[0.2, 0.5, 0.3]])
  p = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
  expected_ce = -(np.array([0.2, 0.5, 0.3]) * np.log(p)).sum()
  assert float(disal.dynamic_loss(logits, target, "ce")[0]) == pytest.approx(expected_ce, rel=1e-6)
  expected_kl = (np.array([0.2, 0.5, 0.3]) * np.log(np.array([0.2, 0.5, 0.3]) / p)).sum()
  assert float(disal.dynamic_loss(logits, target, "kl")[0]) == pytest.approx(expected_kl, rel=1e-5)


def test_score_without_the_dynamic_target_vanishes():
  """Documented in disal.py: with the model's own prediction as target, the gradient is 0."""
  model, variables, direction, data, batch = _setup()
  own = jax.nn.softmax(model.apply(variables, PRE.normalise(data.images), train=False)["logits"])
  scoring = {"state": _State(model, variables), "direction": direction}
  scores = disal.projection_scores(
    scoring, data, dict(batch, target=own), preprocess=PRE, kind="ce"
  )
  np.testing.assert_allclose(scores, 0.0, atol=1e-6)


def test_expected_target_ablation_equals_per_sample_entropy_gradients_dotted_with_d():
  model, variables, direction, data, batch = _setup()
  scoring = {"state": _State(model, variables), "direction": direction}
  fast = np.asarray(
    disal.projection_scores(
      scoring, data, batch, preprocess=PRE, kind="ce", score_target="expected"
    )
  )
  slow = []
  for i in range(data.images.shape[0]):

    def loss(params, i=i):
      logits = model.apply(
        {"params": params, "batch_stats": variables["batch_stats"]},
        PRE.normalise(data.images[i : i + 1]),
        train=False,
      )["logits"][0]
      return -jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits))

    slow.append(_dot(jax.grad(loss)(variables["params"]), direction))
  np.testing.assert_allclose(fast, slow, rtol=1e-5, atol=1e-7)
  dynamic = np.asarray(disal.projection_scores(scoring, data, batch, preprocess=PRE, kind="ce"))
  assert not np.allclose(fast, dynamic)


def test_mse_divergence_closed_form_and_missing_targets_count_zero():
  logits = jnp.array([[1.0, 2.0, 0.5], [0.3, 0.1, -1.0]])
  target = jnp.array([[0.2, 0.5, 0.3], [0.0, 0.0, 0.0]])  # the second has no target yet
  p = np.exp([1.0, 2.0, 0.5]) / np.exp([1.0, 2.0, 0.5]).sum()
  mse = np.asarray(disal.dynamic_loss(logits, target, "mse"))
  assert mse[0] == pytest.approx(np.mean((p - [0.2, 0.5, 0.3]) ** 2), rel=1e-6)
  assert mse[1] == 0.0
  for kind in ("ce", "kl"):
    assert float(disal.dynamic_loss(logits, target, kind)[1]) == 0.0


def test_rampup_weight_schedule_closed_form():
  epochs, steps = 10, 4
  weights = np.concatenate(
    [disal.weight_schedule(2.0, "rampup", 0.5, 2, epochs, e, steps) for e in range(epochs)]
  )
  assert (weights[:8] == 0).all()  # before the start epoch
  t = np.clip((np.arange(40) - 8) / 20.0, 0, 1)
  np.testing.assert_allclose(weights[8:], 2.0 * np.exp(-5 * (1 - t[8:]) ** 2), rtol=1e-6)
  assert weights[-1] == pytest.approx(2.0)
  constant = disal.weight_schedule(0.5, "constant", 0.5, 1, epochs, 0, steps)
  assert (constant == 0).all()
  assert (disal.weight_schedule(0.5, "constant", 0.5, 1, epochs, 1, steps) == 0.5).all()


def test_pool_draws_cover_the_pool_before_repeating_across_epochs():
  epochs = [disal.pool_draws((3, 1), 10, e, 3, 4) for e in range(3)]  # 36 draws of 10
  flat = np.concatenate(epochs).ravel()
  assert epochs[0].shape == (3, 4)
  for start in (0, 10, 20):
    assert sorted(flat[start : start + 10]) == list(range(10))
  np.testing.assert_array_equal(disal.pool_draws((3, 1), 10, 1, 3, 4), epochs[1])  # resumable
  assert not np.array_equal(disal.pool_draws((4, 1), 10, 0, 3, 4), epochs[0])


@pytest.mark.parametrize("weighting", ["mean", "ema", "lr"])
def test_train_branch_fold_equals_a_per_sample_numpy_loop(weighting):
  """Each drawn row's target folds that row's predictions as the record folds epochs."""
  hook = disal.DynamicLossHook(
    weight=1.0,
    warmup_epochs=0,
    batch_size=3,
    kind="mse",
    epochs=4,
    target_source="train_branch",
    weighting=weighting,
    ema_decay=0.6,
  )
  extras = hook.init_extras(5, 3, None)
  rng = np.random.default_rng(0)
  history = {r: [] for r in range(5)}
  for step in range(6):
    rows = rng.choice(5, 3, replace=False)
    logits = rng.normal(size=(3, 3)).astype(np.float32)
    lr, on = np.float32(0.1 * (step + 1)), np.float32(step != 2)  # step 2 does not record
    extras = hook._fold(
      extras,
      jnp.asarray(rows),
      jnp.asarray(logits),
      {"lr": lr, "record_on": on, "cycle_step": np.float32(step)},
    )
    if on:
      for r, z in zip(rows, np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)):
        history[r].append((z, lr, step))
  for r in range(5):
    got = np.asarray(extras[disal.TARGET_MEAN][r])
    if not history[r]:
      assert float(extras[disal.TARGET_WEIGHT][r]) == 0 and (got == 0).all()
      assert float(extras[disal.TARGET_STEP][r]) == disal.NEVER_FOLDED
      continue
    assert float(extras[disal.TARGET_STEP][r]) == history[r][-1][2]  # its last recorded fold
    z = np.array([h[0] for h in history[r]])
    if weighting == "mean":
      expected = z.mean(0)
    elif weighting == "lr":
      expected = np.average(z, axis=0, weights=[h[1] for h in history[r]])
    else:
      ema = np.zeros(3)
      for zk in z:
        ema = 0.6 * ema + 0.4 * zk
      expected = ema / (1 - 0.6 ** len(z))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_stale_train_branch_targets_count_zero_in_the_loss():
  """disal.target_max_age: a row whose target was last folded more than max_age steps ago
  (or never) contributes 0; the others their divergence; the batch mean divides by all."""
  target = np.full((4, 3), 1 / 3, np.float32)
  folded_at = np.array([90.0, 50.0, 10.0, disal.NEVER_FOLDED], np.float32)
  fresh = disal.fresh_targets(
    jnp.asarray(target), jnp.asarray(folded_at), np.float32(100.0), np.float32(50.0)
  )
  np.testing.assert_array_equal(np.asarray(fresh).sum(-1) > 0, [True, True, False, False])
  logits = np.array([[2.0, 0, 0]] * 4, np.float32)
  value = np.asarray(disal.dynamic_loss(jnp.asarray(logits), fresh, "mse"))
  p = np.exp(logits[0]) / np.exp(logits[0]).sum()
  expected = np.mean((p - 1 / 3) ** 2)
  np.testing.assert_allclose(value, [expected, expected, 0, 0], rtol=1e-6)
  peaked = np.array([[0.9, 0.05, 0.05], [0.5, 0.3, 0.2]], np.float32)
  kept = disal.fresh_targets(
    jnp.asarray(peaked), jnp.zeros(2), np.float32(1.0), np.float32(5.0), 0.6
  )  # disal.target_min_confidence
  np.testing.assert_array_equal(np.asarray(kept), [peaked[0], [0, 0, 0]])
  hook = disal.DynamicLossHook(
    weight=1.0,
    warmup_epochs=0,
    batch_size=2,
    kind="mse",
    epochs=4,
    target_source="train_branch",
    target_max_age=0.25,
  )
  inputs = hook.epoch_inputs(np.random.default_rng(0), 2, 5, 10, 4, (0, 0))
  np.testing.assert_array_equal(inputs["cycle_step"], [10, 11, 12, 13, 14])
  np.testing.assert_array_equal(inputs["target_max_age"], [5.0] * 5)  # 0.25 x 4 epochs x 5


@pytest.mark.slow
def _assert_step_equals(state, new_state, metrics, grads, updates, ce, dyn):
  """The train step's new state and metrics are one SGD step (at the optimiser's rate) on the
  hand-written gradient `grads`, with its BatchNorm `updates`, CE `ce` and dynamic loss
  `dyn`."""
  expected = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"])
  metrics = steps.compute_metrics(metrics)
  assert metrics["loss"] == pytest.approx(float(ce), rel=1e-5)
  assert metrics["dynamic_loss"] == pytest.approx(float(dyn), rel=1e-5)
  for a, b in zip(
    jax.tree.leaves((new_state.params, new_state.batch_stats)),
    jax.tree.leaves((expected.params, expected.batch_stats)),
  ):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_the_hook_and_the_metrics_see_the_rate_the_update_applies():
  """batch['lr'] in a hook and the step's 'lr' metric are the optimiser's rate at its count,
  and the update applies it: decayed from the first step (epoch int(0.3 * 2) = 0), one
  step's change is lr_decay_factor times that of the undecayed schedule's."""
  model = resnet.ResNet18(num_classes=5, width=4)
  images = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
  data = DeviceData(jnp.asarray(images), jnp.arange(4, dtype=jnp.int32))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))

  def hook_loss(params, state, data, batch, aux, rng, outputs):
    del params, data, aux, rng, outputs
    return jnp.float32(0.0), {}, {**state.extras, "lr": batch["lr"]}

  changes, rates = [], []
  for decay_at in (0.3, 1.0):
    cfg = tiny_config(**{"train.lr_decay_at": decay_at, "train.lr_decay_factor": 0.1}).train
    state = TrainState.create(
      apply_fn=model.apply,
      params=variables["params"],
      batch_stats=variables["batch_stats"],
      tx=make_optimizer(cfg),
      rng=jax.random.key(4),
    )
    rate = float(learning_rate(state))
    new_state, metrics = steps.train_step(
      state, data, {"index": jnp.arange(4)}, {}, preprocess=PRE, extra_loss=hook_loss
    )
    assert float(new_state.extras["lr"]) == rate == steps.compute_metrics(metrics)["lr"]
    rates.append(rate)
    changes.append(
      jax.tree.map(lambda a, b: np.asarray(a) - np.asarray(b), new_state.params, state.params)
    )
  lr = tiny_config().train.learning_rate
  assert rates == [np.float32(lr * 0.1), np.float32(lr)]
  for decayed, plain in zip(jax.tree.leaves(changes[0]), jax.tree.leaves(changes[1])):
    # atol: a change read as new - old parameters is rounded at the parameters' scale
    np.testing.assert_allclose(decayed, 0.1 * plain, rtol=1e-4, atol=1e-7)


def test_joint_branch_is_one_forward_pass_over_both_batches():
  """branch='joint': the step's gradient is that of CE(labeled) + w * l_dyn(pool) with both
  batches in ONE train-mode forward pass (shared BatchNorm statistics), written out by hand."""
  model = resnet.ResNet18(num_classes=5, width=4)
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, 12).astype(np.int32)
  data = DeviceData(jnp.asarray(images), jnp.asarray(labels))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  state = TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=make_optimizer(tiny_config().train),
    rng=jax.random.key(4),
  )
  hook = disal.DynamicLossHook(
    weight=2.0,
    warmup_epochs=0,
    batch_size=3,
    kind="mse",
    epochs=2,
    target_source="eval_pass",
    branch="joint",
  )
  target = jax.nn.softmax(jax.random.normal(jax.random.key(5), (6, 5)))
  aux = {"pool_index": jnp.arange(6, 12), "target": target}
  drawn = np.array([0, 2, 5])
  batch = {
    "index": jnp.arange(4),
    "pool_position_index": jnp.asarray(drawn),
    "dynamic_weight": jnp.float32(2.0),
    "record_on": jnp.float32(1.0),
    "cycle_step": jnp.float32(7.0),
    "target_max_age": jnp.float32(4.0),
  }  # folded at step 3: fresh
  new_state, metrics = steps.train_step(
    state,
    data,
    batch,
    aux,
    preprocess=PRE,
    extra_loss=functools.partial(hook.loss, preprocess=PRE),
    joint_images=functools.partial(hook.joint_images, preprocess=PRE),
  )

  augment_rng, extra_rng, _ = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
  both = jnp.concatenate(
    [PRE.augment(data.images[:4], augment_rng), PRE.augment(data.images[6 + drawn], extra_rng)]
  )

  def reference_loss(params):
    outputs, updates = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      both,
      train=True,
      mutable=["batch_stats"],
    )
    logits = outputs["logits"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits[:4], labels[:4]).mean()
    dyn = jnp.mean(jnp.square(jax.nn.softmax(logits[4:]) - target[drawn]))
    return ce + 2.0 * dyn, (updates, ce, dyn)

  grads, (updates, ce, dyn) = jax.grad(reference_loss, has_aux=True)(state.params)
  _assert_step_equals(state, new_state, metrics, grads, updates, ce, dyn)
  # a separate branch is a different computation (its own BatchNorm batch)
  separate = steps.train_step(
    state,
    data,
    batch,
    aux,
    preprocess=PRE,
    extra_loss=functools.partial(dataclasses.replace(hook, branch="separate").loss, preprocess=PRE),
  )[0]
  assert (
    max(
      float(jnp.abs(a - b).max())
      for a, b in zip(jax.tree.leaves(separate.params), jax.tree.leaves(new_state.params))
    )
    > 1e-6
  )


def test_disal_scores_project_on_start_minus_end_through_the_strategy_itself():
  """disal_scores (the strategy's entry point) = <grad l_dyn(u; theta_end), theta_start -
  theta_end> with the train branch's per-row targets: the direction's sign and the target's
  gathering checked against a slow per-sample loop."""
  import types

  from disal_jax.training import sharding

  model, variables, direction, data, _ = _setup(batch=6)
  end = _State(model, variables)
  start_params = jax.tree.map(lambda p, d: p + d, variables["params"], direction)  # start - end = d
  pool_rows = np.array([5, 1, 3, 0], np.int32)  # the candidates, out of row order
  table = np.zeros((6, 5), np.float32)
  table[pool_rows] = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(9), (4, 5))))
  end = end.replace(extras={disal.TARGET_MEAN: jnp.asarray(table)})
  # (no labeled rows here: the cold start's random picks are tested in test_disal_guard.py)
  config = tiny_config(**{"disal.dynamic_loss": "mse", "disal.cold_start_labels_per_class": 0})
  mesh = sharding.make_mesh()
  trainer = types.SimpleNamespace(
    preprocess=PRE, pixel_stride=1, mesh=mesh, train_data=data, config=config
  )
  ctx = types.SimpleNamespace(
    config=config,
    data=trainer,
    candidates=pool_rows,
    result=types.SimpleNamespace(
      state=end, start_params=start_params, record=None, pool_index=jnp.asarray(pool_rows)
    ),
  )
  scores = disal.disal_scores(ctx)
  grads = _slow_grads(
    model, variables, data.images[pool_rows], jnp.asarray(table[pool_rows]), "mse"
  )
  expected = np.array([_dot(g, direction) for g in grads])
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-8)
  assert np.abs(expected).min() > 0


def test_the_branch_starts_at_its_fraction_of_the_epochs_and_is_off_before():
  config = tiny_config(
    **{
      "train.epochs": 10,
      "disal.branch_start_fraction": 0.5,
      "disal.target_source": "train_branch",
    }
  )
  hook = disal.make_hook(config)
  assert disal.branch_start_epoch(config) == 5
  for epoch in range(10):
    assert hook.active(epoch) == (epoch >= 5)  # before: the trainer's plain step
  for epoch in range(5, 10):
    inputs = hook.epoch_inputs(None, epoch, 4, 100, 20, (0, 0))
    assert (inputs["record_on"] == 1).all() and (inputs["dynamic_weight"] > 0).all()
  # the ramp starts with the branch: its first step weighs lambda * exp(-5)
  first = hook.epoch_inputs(None, 5, 4, 100, 20, (0, 0))["dynamic_weight"][0]
  assert first == pytest.approx(config.disal.dynamic_weight * np.exp(-5.0), rel=1e-5)


@pytest.mark.slow
def test_separate_branch_step_adds_weight_times_the_dynamic_gradient():
  """The default branch: the step's gradient is grad CE(labeled) + w * grad l_dyn(pool) with
  the pool batch in its own train-mode forward pass (its BatchNorm updates dropped), the
  target read from the train-branch table at the drawn rows, and the drawn rows' targets then
  folded with the branch's predictions; written out by hand."""
  model = resnet.ResNet18(num_classes=5, width=4)
  rng = np.random.default_rng(1)
  images = rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8)
  labels = rng.integers(0, 5, 12).astype(np.int32)
  data = DeviceData(jnp.asarray(images), jnp.asarray(labels))
  variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
  hook = disal.DynamicLossHook(
    weight=2.5,
    warmup_epochs=0,
    batch_size=3,
    kind="mse",
    epochs=2,
    target_source="train_branch",
    weighting="mean",
  )
  table = np.zeros((12, 5), np.float32)
  table[6:] = np.asarray(jax.nn.softmax(jax.random.normal(jax.random.key(5), (6, 5))))
  folded_at = np.where(table.sum(-1) > 0, 3.0, disal.NEVER_FOLDED).astype(np.float32)
  extras = {
    disal.TARGET_MEAN: jnp.asarray(table),
    disal.TARGET_WEIGHT: jnp.asarray((table.sum(-1) > 0).astype(np.float32)),
    disal.TARGET_STEP: jnp.asarray(folded_at),
  }
  state = TrainState.create(
    apply_fn=model.apply,
    params=variables["params"],
    batch_stats=variables["batch_stats"],
    tx=make_optimizer(tiny_config().train),
    rng=jax.random.key(4),
    extras=extras,
  )
  aux = {"pool_index": jnp.arange(6, 12)}
  drawn = np.array([4, 0, 2])
  weight = 2.5 * 0.4  # a ramp's value at this step
  batch = {
    "index": jnp.arange(4),
    "pool_position_index": jnp.asarray(drawn),
    "dynamic_weight": jnp.float32(weight),
    "record_on": jnp.float32(1.0),
    "cycle_step": jnp.float32(7.0),
    "target_max_age": jnp.float32(4.0),
  }  # folded at step 3: fresh
  new_state, metrics = steps.train_step(
    state, data, batch, aux, preprocess=PRE, extra_loss=functools.partial(hook.loss, preprocess=PRE)
  )

  augment_rng, extra_rng, _ = jax.random.split(jax.random.fold_in(state.rng, state.step), 3)
  labeled_images = PRE.augment(data.images[:4], augment_rng)
  pool_images = PRE.augment(data.images[6 + drawn], extra_rng)
  target = table[6 + drawn]

  def reference_loss(params):
    v = {"params": params, "batch_stats": state.batch_stats}
    outputs, updates = model.apply(v, labeled_images, train=True, mutable=["batch_stats"])
    ce = optax.softmax_cross_entropy_with_integer_labels(outputs["logits"], labels[:4]).mean()
    pool_out, _ = model.apply(v, pool_images, train=True, mutable=["batch_stats"])
    probs = jax.nn.softmax(pool_out["logits"])
    dyn = jnp.mean(jnp.square(probs - target))
    return ce + weight * dyn, (updates, ce, dyn, probs)

  grads, (updates, ce, dyn, probs) = jax.grad(reference_loss, has_aux=True)(state.params)
  _assert_step_equals(state, new_state, metrics, grads, updates, ce, dyn)
  # the dynamic term really moved the weights: without it the step differs
  plain = state.apply_gradients(
    grads=jax.grad(lambda p: reference_loss(p)[1][1])(state.params),
    batch_stats=updates["batch_stats"],
  )
  assert (
    max(
      float(jnp.abs(a - b).max())
      for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(new_state.params))
    )
    > 1e-6
  )
  # the drawn rows' targets folded (running mean of one earlier value and this one)
  folded = np.asarray(new_state.extras[disal.TARGET_MEAN])
  np.testing.assert_allclose(folded[6 + drawn], (target + np.asarray(probs)) / 2, rtol=1e-5)
  untouched = np.setdiff1d(np.arange(12), 6 + drawn)
  np.testing.assert_array_equal(folded[untouched], table[untouched])
  steps_folded = np.asarray(new_state.extras[disal.TARGET_STEP])
  assert (steps_folded[6 + drawn] == 7.0).all()
  np.testing.assert_array_equal(steps_folded[untouched], folded_at[untouched])

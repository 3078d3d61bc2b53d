"""DISAL's config keys reach what they steer: the hook's per-epoch inputs (loss weight, pool
draws, recording switch) and its train-branch fold, built by make_hook; the score's direction."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.strategies import disal
from disal_jax.training.state import make_optimizer
from tests.helpers import tiny_config

STEPS, POOL, LABELED = 4, 300, 100


def _hook(**overrides):
  return disal.make_hook(
    tiny_config(
      **{"disal.target_source": "train_branch", "disal.branch_start_fraction": 0.0, **overrides}
    )
  )


def _weights(hook, epochs):
  return np.concatenate(
    [
      hook.epoch_inputs(None, e, STEPS, POOL, LABELED, (0, 0))["dynamic_weight"]
      for e in range(epochs)
    ]
  )


@pytest.mark.parametrize("scale, factor", [("none", 1.0), ("labeled_fraction", 0.25)])
def test_weight_scale_multiplies_lambda_by_the_labeled_fraction(scale, factor):
  hook = _hook(
    **{
      "disal.weight_scale": scale,
      "disal.weight_schedule": "constant",
      "disal.dynamic_weight": 2.0,
      "disal.dynamic_warmup_epochs": 0,
    }
  )
  # 100 labeled, 300 in the pool: 100 / (100 + 300)
  np.testing.assert_allclose(_weights(hook, 2), 2.0 * factor, rtol=1e-6)


def test_the_rampup_runs_over_its_fraction_of_the_cycle_from_the_warmup_epoch():
  hook = _hook(
    **{
      "disal.weight_schedule": "rampup",
      "disal.rampup_fraction": 0.25,
      "disal.dynamic_weight": 3.0,
      "disal.dynamic_warmup_epochs": 2,
      "train.epochs": 8,
    }
  )
  step = np.arange(8 * STEPS)
  t = np.clip((step - 2 * STEPS) / (0.25 * 8 * STEPS), 0, 1)  # 0 -> 1 over 8 steps
  expected = np.where(step >= 2 * STEPS, 3.0 * np.exp(-5 * (1 - t) ** 2), 0.0)
  np.testing.assert_allclose(_weights(hook, 8), expected, rtol=1e-6)


def test_constant_weight_starts_at_the_warmup_epoch():
  hook = _hook(
    **{
      "disal.weight_schedule": "constant",
      "disal.dynamic_weight": 0.5,
      "disal.dynamic_warmup_epochs": 3,
      "train.epochs": 5,
    }
  )
  np.testing.assert_array_equal(_weights(hook, 5), [0.0] * 3 * STEPS + [0.5] * 2 * STEPS)


def test_dynamic_batch_size_pool_draws_per_step():
  hook = _hook(**{"disal.dynamic_batch_size": 7})
  draws = hook.epoch_inputs(None, 0, STEPS, POOL, LABELED, (0, 0))["pool_position_index"]
  assert draws.shape == (STEPS, 7) and len(np.unique(draws)) == STEPS * 7
  assert draws.min() >= 0 and draws.max() < POOL


@pytest.mark.parametrize("record_start, branch_fraction, first", [(2, 0.0, 2), (1, 0.5, 3)])
def test_the_train_branch_records_from_record_start_epoch_and_the_branch(
  record_start, branch_fraction, first
):
  hook = _hook(
    **{
      "record.start_epoch": record_start,
      "train.epochs": 6,
      "disal.branch_start_fraction": branch_fraction,
    }
  )
  on = [hook.epoch_inputs(None, e, STEPS, POOL, LABELED, (0, 0))["record_on"] for e in range(6)]
  assert [bool(o.all()) for o in on] == [e >= first for e in range(6)]
  assert not any(o.any() for o in on[:first])


def _softmax(z):
  z = np.exp(z - z.max(-1, keepdims=True))
  return z / z.sum(-1, keepdims=True)


@pytest.mark.parametrize("weighting, decay", [("mean", 0.6), ("lr", 0.6), ("ema", 0.3)])
def test_the_train_branch_folds_as_record_weighting_and_ema_decay_say(weighting, decay):
  hook = _hook(**{"record.weighting": weighting, "record.ema_decay": decay})
  extras = hook.init_extras(4, 3, None)
  rows = jnp.asarray([0, 2])
  logits = np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32)
  lrs = [0.1, 0.1, 0.02]  # the lr changes between folds: 'lr' is not 'mean'
  for step, (z, lr) in enumerate(zip(logits, lrs)):
    extras = hook._fold(
      extras,
      rows,
      jnp.asarray(z),  # pylint: disable=protected-access
      {"lr": np.float32(lr), "record_on": np.float32(1), "cycle_step": np.float32(step)},
    )
  probs = _softmax(logits.astype(np.float64))
  if weighting == "ema":
    expected = np.zeros_like(probs[0])
    for p in probs:
      expected = decay * expected + (1 - decay) * p
    expected /= 1 - decay**3
  else:
    expected = np.average(probs, axis=0, weights=None if weighting == "mean" else lrs)
  np.testing.assert_allclose(np.asarray(extras[disal.TARGET_MEAN])[[0, 2]], expected, rtol=1e-5)
  assert not np.asarray(extras[disal.TARGET_MEAN])[[1, 3]].any()


@pytest.mark.parametrize("name", ["delta", "momentum"])
def test_direction_is_start_minus_end_or_the_sgd_momentum_buffer(name):
  config = tiny_config(
    **{
      "disal.direction": name,
      "train.optimizer": "sgd",
      "train.momentum": 0.7,
      "train.weight_decay": 0.0,
    }
  )
  rng = np.random.default_rng(0)
  start = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)}
  grads = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(2)]
  tx = make_optimizer(config.train)
  params, opt_state = start, tx.init(start)
  for g in grads:
    updates, opt_state = tx.update({"w": jnp.asarray(g)}, opt_state, params)
    params = {"w": params["w"] + updates["w"]}
  state = types.SimpleNamespace(params=params, opt_state=opt_state)
  ctx = types.SimpleNamespace(
    config=config, result=types.SimpleNamespace(state=state, start_params=start)
  )
  got = np.asarray(disal.direction(ctx)["w"])
  if name == "momentum":  # PyTorch's buffer: buf = momentum * buf + g
    np.testing.assert_allclose(got, 0.7 * grads[0] + grads[1], rtol=1e-6)
  else:
    np.testing.assert_allclose(got, np.asarray(start["w"]) - np.asarray(params["w"]), rtol=1e-6)


def test_target_source_decides_where_p_bar_lives():
  record = types.SimpleNamespace(mean=jnp.ones((6, 3)))
  eval_pass = {"disal.target_source": "eval_pass", "disal.dynamic_warmup_epochs": 1}
  assert _hook(**eval_pass, **{"disal.dynamic_weight": 0.0}) is None  # plain steps
  hook = _hook(**eval_pass)
  assert disal.record_level(tiny_config(**eval_pass)) == "mean"
  assert hook.init_extras(6, 3, None) == {}
  assert hook.aux(record, jnp.arange(6))["target"] is record.mean  # the eval pass's record
  branch = _hook(**{"disal.target_source": "train_branch"})
  assert disal.record_level(tiny_config(**{"disal.target_source": "train_branch"})) == "none"
  extras = branch.init_extras(6, 3, None)
  assert extras[disal.TARGET_MEAN].shape == (6, 3) and "target" not in branch.aux(
    None, jnp.arange(6)
  )


def test_target_max_age_and_min_confidence_reach_the_hooks_loss():
  """make_hook passes disal.target_max_age (as steps of the cycle) and
  disal.target_min_confidence to what the loss masks with."""
  hook = _hook(
    **{"disal.target_max_age": 0.25, "disal.target_min_confidence": 0.7, "train.epochs": 8}
  )
  inputs = hook.epoch_inputs(None, 1, STEPS, POOL, LABELED, (0, 0))
  np.testing.assert_array_equal(inputs["target_max_age"], [0.25 * 8 * STEPS] * STEPS)
  np.testing.assert_array_equal(inputs["cycle_step"], STEPS + np.arange(STEPS))
  assert hook.target_min_confidence == 0.7
  off = _hook(**{"train.epochs": 8})  # the defaults count every target
  assert off.epoch_inputs(None, 1, STEPS, POOL, LABELED, (0, 0))["target_max_age"][0] >= 8 * STEPS
  assert off.target_min_confidence == 0.0

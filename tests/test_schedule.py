"""The cycle's learning-rate schedule (disal_jax.training.schedule) and the optimiser that
applies it (disal_jax.training.state): values against their closed forms, the updates
against the optimiser whose rate was set per epoch before the schedule moved into it."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from disal_jax.data.registry import load_dataset
from disal_jax.errors import ConfigError
from disal_jax.experiment import validate
from disal_jax.models.registry import build_model
from disal_jax.training import schedule, sharding
from disal_jax.training.state import (
  STEPS_PER_EPOCH,
  TrainState,
  learning_rate,
  make_optimizer,
  with_steps_per_epoch,
)
from disal_jax.training.trainer import Trainer
from tests.helpers import CompileCounter, tiny_config


def _train_cfg(**overrides):
  return tiny_config(**{f"train.{k}": v for k, v in overrides.items()}).train


def _old_step_rates(lr, decay_at, factor, epochs, steps_per_epoch):
  """The per-epoch rule the trainer applied before the schedule moved into the optimiser,
  one float32 per step: lr, times factor from epoch int(decay_at * epochs) on, the product
  taken in double precision."""
  rates = [
    np.float32(lr * (factor if epoch >= int(decay_at * epochs) else 1.0)) for epoch in range(epochs)
  ]
  return np.repeat(np.asarray(rates, np.float32), steps_per_epoch)


def _schedule_values(train_cfg, steps_per_epoch, counts, traced=True):
  """The schedule at `counts`, with the cycle length traced (as inside the optimiser) or a
  Python int (as a host caller)."""
  sched = schedule.cycle_schedule(train_cfg)
  counts = jnp.asarray(counts, jnp.int32)
  if traced:
    return np.asarray(jax.jit(lambda n, c: sched.at(n)(c))(jnp.int32(steps_per_epoch), counts))
  return np.asarray(sched.at(steps_per_epoch)(counts))


@pytest.mark.parametrize(
  "lr, decay_at, factor, epochs, spe",
  [
    (0.1, 0.8, 0.1, 10, 7),  # the paper's x0.1 after 80%: 0.1 * 0.1 in double is not 0.1f^2
    (0.2, 0.3, 0.5, 10, 3),
    (0.05, 0.8, 0.1, 3, 5),  # configs/default.py:quick (decay at epoch int(2.4) = 2)
    (0.3, 0.67, 0.1, 3, 1),
    (0.1, 0.3, 0.1, 2, 4),  # int(0.6) = 0: decayed from the first step
    (0.1, 1.0, 0.1, 4, 2),  # decay_at 1: never
  ],
)
@pytest.mark.parametrize("traced", [True, False])
def test_step_schedule_is_the_old_per_epoch_rate_at_every_step_bit_for_bit(
  lr, decay_at, factor, epochs, spe, traced
):
  cfg = _train_cfg(learning_rate=lr, lr_decay_at=decay_at, lr_decay_factor=factor, epochs=epochs)
  assert cfg.lr_schedule == "step" and cfg.warmup_fraction == 0  # the defaults
  got = _schedule_values(cfg, spe, np.arange(epochs * spe), traced)
  assert got.dtype == np.float32
  np.testing.assert_array_equal(got, _old_step_rates(lr, decay_at, factor, epochs, spe))


def test_cosine_schedule_is_its_closed_form_over_the_cycles_steps():
  epochs, spe, lr = 4, 6, 0.3
  cfg = _train_cfg(lr_schedule="cosine", learning_rate=lr, epochs=epochs)
  t = np.arange(epochs * spe)
  expected = lr * 0.5 * (1 + np.cos(np.pi * t / (epochs * spe)))
  got = _schedule_values(cfg, spe, t)
  np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)
  assert got[0] == np.float32(lr) and np.all(np.diff(got) < 0)
  # the cycle's length is data: another length, the same compiled schedule, its own curve
  np.testing.assert_allclose(_schedule_values(cfg, 2 * spe, t * 2), expected, rtol=2e-6, atol=1e-7)


@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_warmup_ramps_from_zero_then_hands_over_to_the_schedule(kind):
  epochs, spe, lr, warmup = 5, 4, 0.2, 0.3  # 20 steps, the first 6 ramp up
  cfg = _train_cfg(
    lr_schedule=kind,
    learning_rate=lr,
    epochs=epochs,
    warmup_fraction=warmup,
    lr_decay_at=0.6,
    lr_decay_factor=0.1,
  )
  t = np.arange(epochs * spe)
  total, ramp = epochs * spe, warmup * epochs * spe
  if kind == "step":  # the decay stays at its epoch, int(0.6 * 5) = 3: step 12
    after = np.where(t < 12, lr, lr * 0.1)
  else:  # cosine over the steps after the warmup
    after = lr * 0.5 * (1 + np.cos(np.pi * (t - ramp) / (total - ramp)))
  expected = np.where(t < ramp, lr * t / ramp, after)
  got = _schedule_values(cfg, spe, t)
  np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)
  assert got[0] == 0 and got[6] == np.float32(lr)
  assert np.all(np.diff(got[:7]) > 0)


@pytest.mark.parametrize(
  "key, value, match",
  [
    (
      "train.lr_schedule",
      "linear",
      r"train.lr_schedule='linear' is invalid: one of "
      r"\('step', 'cosine'\)",
    ),
    ("train.warmup_fraction", 1.0, r"train.warmup_fraction=1.0 is invalid: in \[0, 1\)"),
    ("train.warmup_fraction", -0.1, r"train.warmup_fraction=-0.1 is invalid"),
  ],
)
def test_bad_schedule_settings_fail_naming_the_key(key, value, match):
  with pytest.raises(ConfigError, match=match):
    validate(tiny_config(**{key: value}))


def _old_optimizer(name, momentum, weight_decay, lr):
  """The optimiser as it was: the rate an injected hyper-parameter, set before each step."""

  def build(learning_rate):
    inner = (
      optax.sgd(learning_rate, momentum=momentum or None)
      if name == "sgd"
      else optax.adam(learning_rate)
    )
    return optax.chain(optax.add_decayed_weights(weight_decay), inner)

  return optax.inject_hyperparams(build)(learning_rate=lr)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_optimiser_applies_its_schedule_as_the_per_epoch_rate_did_bit_for_bit(name):
  """A cycle of steps on random gradients: the parameters, and the rate read from the
  optimiser before each update, are the old optimiser's with its rate set per epoch."""
  epochs, spe = 5, 3
  cfg = _train_cfg(
    optimizer=name,
    momentum=0.9,
    weight_decay=5e-4,
    learning_rate=0.1,
    lr_decay_at=0.8,
    lr_decay_factor=0.1,
    epochs=epochs,
  )
  rates = _old_step_rates(0.1, 0.8, 0.1, epochs, spe)
  rng = np.random.default_rng(0)
  start = {
    "w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
    "b": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
  }
  grads = [
    jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), start)
    for _ in range(epochs * spe)
  ]

  with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes its int count with floats
    old = _old_optimizer(name, 0.9, 5e-4, 0.1)

    @jax.jit
    def old_step(params, opt_state, g, lr):
      opt_state.hyperparams["learning_rate"] = lr
      updates, opt_state = old.update(g, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    params, opt_state = start, old.init(start)
    for g, lr in zip(grads, rates):
      params, opt_state = old_step(params, opt_state, g, jnp.float32(lr))
  expected = params

  tx = make_optimizer(cfg)

  @jax.jit
  def new_step(params, opt_state, g):
    rate = tx.learning_rate(opt_state)
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, rate

  params, opt_state = start, tx.init(start)
  opt_state.hyperparams[STEPS_PER_EPOCH] = jnp.int32(spe)
  seen = []
  for g in grads:
    params, opt_state, rate = new_step(params, opt_state, g)
    seen.append(rate)
  np.testing.assert_array_equal(np.asarray(seen), rates)
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_the_cycle_length_is_data_and_a_fresh_state_restarts_the_schedule():
  """with_steps_per_epoch changes the rate curve, not the state's structure; tx.init (a warm
  start's reset) starts the count, and so the schedule, at 0."""
  cfg = _train_cfg(epochs=4, learning_rate=0.1, lr_decay_at=0.5, lr_decay_factor=0.1)
  tx = make_optimizer(cfg)
  assert (
    make_optimizer(_train_cfg(epochs=4, learning_rate=0.1, lr_decay_at=0.5, lr_decay_factor=0.1))
    is tx
  )  # shared: one compile
  params = {"w": jnp.zeros((2,), jnp.float32)}
  g = {"w": jnp.ones((2,), jnp.float32)}

  state = TrainState.create(apply_fn=None, params=params, tx=tx)
  opt_state = with_steps_per_epoch(state, jnp.int32(3)).opt_state
  assert jax.tree.structure(opt_state) == jax.tree.structure(state.opt_state)
  rates = []
  for _ in range(12):
    rates.append(float(tx.learning_rate(opt_state)))
    _, opt_state = tx.update(g, opt_state, params)
  np.testing.assert_allclose(rates, [0.1] * 6 + [0.01] * 6, rtol=1e-7)  # decay at epoch 2
  assert float(tx.learning_rate(tx.init(params))) == np.float32(0.1)


def test_cycles_of_other_lengths_train_on_their_schedule_and_compile_nothing_again():
  """A warm-started cycle of twice the steps per epoch: its schedule starts afresh over its
  own steps (the epochs' rates, the optimiser's count), and nothing compiles again."""
  config = tiny_config(
    **{"data.max_train": 120, "train.epochs": 3, "train.lr_decay_at": 0.67, "train.batch_size": 16}
  )
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh()
  )
  lr = config.train.learning_rate
  rates = [float(np.float32(lr))] * 2 + [float(np.float32(lr * 0.1))]  # decayed at epoch 2
  first = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    np.arange(0, 120, 8),
    np.arange(1, 120, 8),
    (0, 0),
    cycle=0,
  )  # 15 rows: 1 step
  assert [e["lr"] for e in first.epochs] == rates
  assert int(first.state.opt_state.count) == 3
  warm = trainer.reset_optimizer(first.state, jax.random.key(1))
  assert float(learning_rate(warm)) == np.float32(lr)  # afresh
  with CompileCounter() as compiles:
    second = trainer.train_cycle(
      warm, np.arange(0, 120, 4), np.arange(1, 120, 4), (0, 1), cycle=1
    )  # 30 rows: 2 steps per epoch
  assert compiles.count == 0
  assert [e["lr"] for e in second.epochs] == rates
  assert int(second.state.opt_state.count) == 6

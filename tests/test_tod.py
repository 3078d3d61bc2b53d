"""TOD: its formulas, the EMA teacher inside the train step, the previous cycle's model on disk."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax import loop, pool
from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.strategies import tod
from disal_jax.training import sharding
from disal_jax.training.trainer import Trainer
from tests.helpers import tiny_config


def test_output_discrepancy_closed_form():
  a = np.array([[1.0, 0.0, -1.0]], np.float32)
  b = np.array([[0.0, 0.5, 0.0]], np.float32)
  pa, pb = np.exp(a) / np.exp(a).sum(), np.exp(b) / np.exp(b).sum()
  assert float(tod.output_discrepancy(jnp.asarray(a), jnp.asarray(b))[0]) == pytest.approx(
    0.5 * np.sum((pa - pb) ** 2), rel=1e-5
  )


@pytest.mark.parametrize("cycle", [0, 1, 2])
def test_the_first_cycle_picks_the_lowest_discrepancies_as_the_reference(cycle):
  """main_TOD.py keeps subset[argsort][:ADDENDUM] in the first cycle, [-ADDENDUM:] after it;
  `tod.first_cycle_picks='highest'` takes the highest in every cycle."""
  from disal_jax.config import ConfigError
  from disal_jax.strategies.base import ScoringContext

  rng = np.random.default_rng(cycle)
  candidates = np.sort(rng.choice(100, 40, replace=False))
  scores = rng.permutation(40) / 40.0  # distinct: no ties at the cut
  k = 6
  lowest = set(candidates[np.argsort(scores)[:k]].tolist())
  highest = set(candidates[np.argsort(scores)[-k:]].tolist())

  def picks(order):
    config = tiny_config(**{"tod.first_cycle_picks": order})
    ctx = ScoringContext(config, None, None, candidates, np.arange(0), jax.random.key(0), cycle)
    return set(np.asarray(tod.STRATEGY.select(scores, ctx, k)).tolist())

  assert picks("lowest") == (lowest if cycle == 0 else highest)
  assert picks("highest") == highest
  assert tiny_config().tod.first_cycle_picks == "lowest"  # the reference's is the default
  with pytest.raises(ConfigError, match="first_cycle_picks"):
    tod.check(tiny_config(**{"tod.first_cycle_picks": "low"}), 1)


@pytest.mark.slow
def test_the_auxiliary_loss_and_the_teacher_follow_the_reference_formulas():
  """loss = w (mse(s_x, c_x) + mse(s_u, c_u) + mse(c_x, T(x)) + mse(c_u, T(u))), means over
  batch x classes; T <- a T + (1 - a) theta with a = min(1 - 1/(t+1), decay)."""
  config = tiny_config(
    **{
      "data.max_train": 200,
      "tod.ema_decay": 0.9,
      "tod.pool_batch_size": 8,
      "tod.cod_weight": 0.02,
    }
  )
  hook = tod.make_hook(config)
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh(), hook=hook
  )
  state = trainer.init_state(jax.random.key(0))
  assert tod.CONSISTENCY_KEY in state.params
  teacher = jax.tree.map(lambda x: 0.5 * x, state.params)
  state = state.replace(extras={tod.TEACHER: teacher, tod.TEACHER_STEP: jnp.int32(3)})
  data, pre = trainer.train_data, trainer.preprocess
  images = pre.normalise(data.images[:8])  # the labeled batch as the model saw it

  def forward(params, x):
    return state.apply_fn(
      {"params": params, "batch_stats": state.batch_stats}, x, train=True, mutable=["batch_stats"]
    )[0]

  batch = {"pool_position_index": jnp.arange(8), "images": images}
  aux = {"pool_index": jnp.arange(8, 16)}
  rng = jax.random.key(1)

  def loss(params):
    value, metrics, extras = hook.loss(
      params, state, data, batch, aux, rng, forward(params, images), preprocess=pre
    )
    return value, extras

  (value, extras), grads = jax.value_and_grad(loss, has_aux=True)(state.params)

  params = jax.device_get(state.params)
  kernel, bias = (np.asarray(params[tod.CONSISTENCY_KEY][k]) for k in ("kernel", "bias"))
  pool_images = pre.augment(data.images[8:16], rng)
  s_x, s_u = forward(state.params, images), forward(state.params, pool_images)
  c_x, c_u = (np.asarray(o["features"]) @ kernel + bias for o in (s_x, s_u))
  t_x, t_u = (np.asarray(forward(teacher, x)["logits"]) for x in (images, pool_images))
  mean_sq = lambda a, b: np.mean((np.asarray(a, np.float64) - b) ** 2)
  expected = 0.02 * (
    mean_sq(s_x["logits"], c_x)
    + mean_sq(s_u["logits"], c_u)
    + mean_sq(c_x, t_x)
    + mean_sq(c_u, t_u)
  )
  assert float(value) == pytest.approx(expected, rel=1e-4)
  a = min(1 - 1 / 4, 0.9)  # step 3: the ramp still rules
  for t, p, new in zip(
    jax.tree.leaves(teacher), jax.tree.leaves(state.params), jax.tree.leaves(extras[tod.TEACHER])
  ):
    np.testing.assert_allclose(new, a * t + (1 - a) * p, rtol=1e-6, atol=1e-7)
  assert int(extras[tod.TEACHER_STEP]) == 4
  assert float(tod.ema_decay_at(jnp.int32(0), 0.9)) == 0.0  # the first step copies theta
  assert float(tod.ema_decay_at(jnp.int32(100), 0.9)) == pytest.approx(0.9)
  backbone = {k: v for k, v in grads.items() if k != tod.CONSISTENCY_KEY}
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(backbone)) > 0
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads[tod.CONSISTENCY_KEY])) > 0


@pytest.mark.slow
def test_three_cycles_read_the_previous_model_and_a_missing_one_is_named(tmp_path):
  config = tiny_config(
    **{
      "strategies": "tod",
      "al.final_fraction": 0.2,
      "data.max_train": 300,
      "tod.pool_batch_size": 16,
    }
  )
  results = loop.run_experiment(config, str(tmp_path))
  assert [r.labeled for r in results["tod"]] == [30, 45, 60]
  run = tmp_path / "tod" / "seed_0"
  kept = sorted(p.name for p in run.glob("tod_variables_cycle*.msgpack"))
  assert kept == ["tod_variables_cycle0.msgpack", "tod_variables_cycle1.msgpack"]
  # cycle 1 picked the pool rows where its model and cycle 0's (both kept, eval mode) disagree
  # most: 1/2 ||softmax - softmax||^2 in numpy over every row
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config,
    build_model(config.model, dataset.num_classes),
    dataset,
    sharding.make_mesh(),
    hook=tod.make_hook(config),
  )
  template = jax.device_get(trainer.init_state(jax.random.key(0)).variables())
  images = trainer.preprocess.normalise(trainer.train_data.images)

  def probs(cycle):
    variables = flax.serialization.from_bytes(
      template, (run / f"tod_variables_cycle{cycle}.msgpack").read_bytes()
    )
    logits = np.asarray(trainer.model.apply(variables, images, train=False)["logits"], np.float64)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  discrepancy = 0.5 * np.sum((probs(1) - probs(0)) ** 2, axis=-1)
  labeled = pool.initial_labeled(300, 30, seed=0)
  labeled = pool.add_labels(labeled, np.load(run / "selected_cycle0.npy"), 1, 15)
  candidates = pool.unlabeled_indices(labeled)
  ranked = candidates[np.argsort(-discrepancy[candidates], kind="stable")]
  assert discrepancy[ranked[14]] - discrepancy[ranked[15]] > 1e-6  # no tie at the cut
  assert set(np.load(run / "selected_cycle1.npy").tolist()) == set(ranked[:15].tolist())
  # the previous cycle's model gone: a clear error, not a silent fallback
  import types

  ctx = types.SimpleNamespace(
    cycle=2,
    run_dir=run,
    result=types.SimpleNamespace(
      state=types.SimpleNamespace(variables=lambda: {"params": {"w": np.zeros(2)}})
    ),
  )
  (run / "tod_variables_cycle1.msgpack").write_bytes(b"not a model")
  with pytest.raises(RuntimeError, match="--force"):
    tod._earlier_variables(ctx)

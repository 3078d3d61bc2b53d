"""TOD: its formulas, the EMA teacher inside the train step, the previous cycle's model on disk."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax import loop
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
      0.5 * np.sum((pa - pb) ** 2), rel=1e-5)


def test_the_step_moves_the_teacher_by_the_ema_rule_and_cod_reaches_the_backbone():
  config = tiny_config(**{"data.max_train": 200, "tod.ema_decay": 0.9,
                          "tod.pool_batch_size": 8})
  hook = tod.make_hook(config)
  dataset = load_dataset(config.data)
  trainer = Trainer(config, build_model(config.model, dataset.num_classes), dataset,
                    sharding.make_mesh(), hook=hook)
  state = trainer.init_state(jax.random.key(0))
  teacher = jax.tree.map(lambda x: 0.5 * x, state.params)
  state = state.replace(extras={tod.TEACHER: teacher})
  batch = {"pool_position_index": jnp.arange(8)}
  aux = {"pool_index": jnp.arange(8, 16)}

  def cod(params):
    value, metrics, extras = hook.loss(params, state, trainer.train_data, batch, aux,
                                       jax.random.key(1), None, preprocess=trainer.preprocess)
    return value, extras
  grads, extras = jax.grad(cod, has_aux=True)(state.params)
  for t, p, new in zip(jax.tree.leaves(teacher), jax.tree.leaves(state.params),
                       jax.tree.leaves(extras[tod.TEACHER])):
    np.testing.assert_allclose(new, 0.9 * t + 0.1 * p, rtol=1e-6, atol=1e-7)
  assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 0


def test_three_cycles_read_the_previous_model_and_a_missing_one_is_named(tmp_path):
  config = tiny_config(**{"strategies": "tod", "al.final_fraction": 0.2,
                          "data.max_train": 300, "tod.pool_batch_size": 16})
  results = loop.run_experiment(config, str(tmp_path))
  assert [r.labeled for r in results["tod"]] == [30, 45, 60]
  run = tmp_path / "tod" / "seed_0"
  kept = sorted(p.name for p in run.glob("tod_variables_cycle*.msgpack"))
  assert kept == ["tod_variables_cycle0.msgpack", "tod_variables_cycle1.msgpack"]
  for c in (0, 1):
    picks = np.load(run / f"selected_cycle{c}.npy")
    assert len(np.unique(picks)) == 15
  # the previous cycle's model gone: a clear error, not a silent fallback
  import types
  ctx = types.SimpleNamespace(cycle=2, run_dir=run, result=types.SimpleNamespace(
      state=types.SimpleNamespace(variables=lambda: {"params": {"w": np.zeros(2)}})))
  (run / "tod_variables_cycle1.msgpack").write_bytes(b"not a model")
  with pytest.raises(RuntimeError, match="--force"):
    tod._earlier_variables(ctx)

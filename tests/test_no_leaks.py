"""Nothing outlives its run: Trainers, and the splits they hold on device, are freed, and the
process-wide caches of compiled steps are keyed on static settings only."""

import gc
import weakref

import jax
import numpy as np
import pytest

from disal_jax import loop
from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.strategies import registry
from disal_jax.training import sharding
from disal_jax.training.augment import Preprocess
from disal_jax.training.trainer import Recording, Trainer, jitted_steps
from tests.helpers import tiny_config


def _live_arrays() -> tuple[int, int]:
  """(count, bytes) of the device arrays alive after a full collection."""
  gc.collect()
  arrays = jax.live_arrays()
  return len(arrays), sum(a.nbytes for a in arrays)


def _recorded_cycle(config, dataset, model) -> weakref.ref:
  """Trains one recorded cycle on a fresh Trainer, drops it, returns a weak reference."""
  trainer = Trainer(config, model, dataset, sharding.make_mesh())
  labeled = np.arange(0, dataset.num_train, 3)
  pool = np.setdiff1d(np.arange(dataset.num_train), labeled)
  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    labeled,
    pool,
    (0, 0),
    cycle=0,
    recording=Recording("mean"),
  )
  assert result.record is not None  # the jitted record update ran
  return weakref.ref(trainer)


def test_trainers_and_their_device_arrays_are_freed_after_a_cycle():
  config = tiny_config(**{"data.max_train": 60, "train.epochs": 1})
  dataset = load_dataset(config.data)
  model = build_model(config.model, dataset.num_classes)
  trainers, live = [], []
  for _ in range(3):
    trainers.append(_recorded_cycle(config, dataset, model))
    live.append(_live_arrays())
  assert [t() for t in trainers] == [None] * 3  # nothing keeps a Trainer
  # each Trainer put its train and test splits on device: 4 arrays a Trainer if they stayed
  assert live[2][0] <= live[1][0] and live[2][1] <= live[1][1], live


@pytest.mark.slow
def test_in_process_runs_leave_no_trainer_and_no_device_array_behind(tmp_path):
  """Runs through the loop (a hook and a record, as DISAL's eval pass has) keep nothing.
  Counted against what was alive before (other tests of this process may cache Trainers)."""
  gc.collect()
  before = sum(isinstance(o, Trainer) for o in gc.get_objects())
  live, trainers = [], []
  for run in range(4):
    config = tiny_config(
      **{
        "data.max_train": 120,
        "strategies": "disal",
        "disal.target_source": "eval_pass",
        "seed": run,
      }
    )
    loop.run_experiment(config, str(tmp_path / f"run{run}"))
    live.append(_live_arrays())
    trainers.append(sum(isinstance(o, Trainer) for o in gc.get_objects()))
  assert trainers == [before] * 4, (before, trainers)
  assert live[3][0] <= live[1][0] and live[3][1] <= live[1][1], live


@pytest.mark.parametrize(
  "name", [n for n in registry.names() if registry.get_strategy(n).make_hook is not None]
)
def test_equal_configs_give_equal_hooks_that_share_compiled_steps(name):
  """Each run builds its hook anew; equal configs must give one key of jitted_steps' cache."""
  config = tiny_config()
  make_hook = registry.get_strategy(name).make_hook
  first, second = make_hook(config), make_hook(config)
  assert first == second and hash(first) == hash(second)
  mesh, preprocess = sharding.make_mesh(), Preprocess((0.5,), (0.25,))
  assert jitted_steps(mesh, preprocess, first) is jitted_steps(mesh, preprocess, second)


def test_a_hook_hashed_by_identity_is_refused():
  class IdentityHook:  # every instance a new cache key: compiled steps kept per Trainer
    def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess):
      raise AssertionError("never traced here")

  with pytest.raises(TypeError, match="frozen dataclass"):
    jitted_steps(sharding.make_mesh(), Preprocess((0.5,), (0.25,)), IdentityHook())

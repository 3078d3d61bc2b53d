"""One cycle (disal_jax.cycle.run_cycle), the loop's and the annotation rounds' shared step."""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from disal_jax import loop, pool
from disal_jax.cycle import CycleSetup, run_cycle, start_state
from disal_jax.data.registry import load_dataset
from disal_jax.strategies import registry
from disal_jax.training import sharding
from disal_jax.training.state import learning_rate
from disal_jax.training.trainer import Checkpointing, Recording, Trainer
from tests.helpers import tiny_config

K = 20


@functools.cache
def _setup(name: str = "margin", **overrides) -> tuple[CycleSetup, np.ndarray, np.ndarray]:
  """A run's setup (recording the pool's mean, padded to 300 rows), its first labeled rows
  and 250 candidates."""
  config = tiny_config(**{"data.max_train": 400, **overrides})
  dataset = load_dataset(config.data)
  strategy = registry.get_strategy(name)
  trainer = loop.strategy_trainer(config, dataset, strategy, sharding.make_mesh())
  labeled_round = pool.initial_labeled(dataset.num_train, 40, config.seed)
  candidates = pool.scoring_candidates(labeled_round, 250, config.seed, 0)
  setup = CycleSetup(config, trainer, strategy, Recording("mean", 300), tag=f"{name} test")
  return setup, pool.labeled_indices(labeled_round), candidates


def _on_host(progress):
  """A copy of a CycleProgress off the device: the next train step donates its state, and
  the trainer appends the next epochs' metrics to its list."""
  return dataclasses.replace(
    progress,
    epochs=list(progress.epochs),
    **{f: jax.device_get(getattr(progress, f)) for f in ("state", "start_params", "record")},
  )


def _leaves_equal(a, b) -> bool:
  return all(
    np.array_equal(x, y)
    for x, y in zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b)))
  )


@pytest.mark.slow
@pytest.mark.parametrize(
  "schedule", [{}, {"train.lr_schedule": "cosine", "train.warmup_fraction": 0.25}]
)
def test_a_cycle_resumed_mid_training_trains_and_selects_as_an_uninterrupted_one(schedule):
  """The resumed epochs continue the learning-rate schedule where it stopped (the optimiser's
  count is in the checkpointed state): 'step' decays at epoch 1 of 2, 'cosine' moves at
  every step."""
  setup, labeled, candidates = _setup(**schedule)
  saved = []
  whole = run_cycle(
    setup,
    labeled,
    candidates,
    K,
    cycle=1,
    checkpointing=Checkpointing(on_progress=lambda p: saved.append(_on_host(p)), every=1),
  )
  assert [p.epoch for p in saved] == [1, 2]
  assert len(set(whole.selected.tolist())) == K and set(whole.selected) <= set(candidates)
  assert whole.evidence.shape == candidates.shape and whole.scoring_seconds > 0
  again = []
  resumed = run_cycle(
    setup,
    labeled,
    candidates,
    K,
    cycle=1,
    checkpointing=Checkpointing(
      setup.trainer.place_progress(saved[0]), lambda p: again.append(p.epoch), every=1
    ),
  )
  assert again == [2]  # epoch 1 was not trained again
  np.testing.assert_array_equal(resumed.selected, whole.selected)
  assert resumed.result.test == whole.result.test
  assert _leaves_equal(resumed.result.record, whole.result.record)
  assert _leaves_equal(resumed.result.state.params, whole.result.state.params)
  assert [e["lr"] for e in resumed.result.epochs] == [e["lr"] for e in whole.result.epochs]
  assert len({e["lr"] for e in whole.result.epochs}) == 2
  other = run_cycle(setup, labeled, candidates, K, cycle=2)  # another cycle's keys and seeds
  assert not np.array_equal(other.selected, whole.selected)


@pytest.mark.slow
def test_a_warm_cycle_starts_from_the_weights_with_a_fresh_optimiser_and_stream():
  setup, labeled, candidates = _setup(**{"train.warm_start": True})
  warm = run_cycle(setup, labeled, candidates, 0, cycle=0).result.state
  started = start_state(setup, 1, warm)
  assert _leaves_equal(started.params, warm.params)
  assert int(started.step) == 0 and int(warm.step) > 0
  # the schedule starts afresh: train.learning_rate, not the decayed rate the cycle ended at
  lr = setup.config.train.learning_rate
  assert float(learning_rate(started)) == np.float32(lr) > float(learning_rate(warm))
  assert not np.array_equal(jax.random.key_data(started.rng), jax.random.key_data(warm.rng))
  cold = start_state(
    dataclasses.replace(
      setup, config=tiny_config(**{"data.max_train": 400, "train.warm_start": False})
    ),
    1,
    warm,
  )
  assert not _leaves_equal(cold.params, warm.params)  # warm_start off: a fresh model


def test_a_last_cycle_selects_nothing_and_too_large_a_k_fails_before_training(
  monkeypatch, tmp_path
):
  """k == 0 makes no epoch callback (TracInCP's checkpoints) and selects nothing; k above the
  candidates raises before any epoch is trained."""
  setup, labeled, candidates = _setup("tracincp_last")
  trained = []
  monkeypatch.setattr(Trainer, "train_cycle", lambda *args, **kw: trained.append(kw) or "r")
  last = run_cycle(setup, labeled, candidates, 0, cycle=0, callback_dir=None)
  assert last.selected.shape == (0,) and last.evidence is None and last.strategy_metrics == {}
  assert trained[0]["on_epoch_end"] is None and trained[0]["recording"] == setup.recording
  with pytest.raises(ValueError, match="must select 251 of 250 candidates"):
    run_cycle(setup, labeled, candidates, len(candidates) + 1, cycle=0)
  with pytest.raises(ValueError, match="give callback_dir"):
    run_cycle(setup, labeled, candidates, K, cycle=0)
  assert len(trained) == 1

"""The unit-level contract of every registered strategy, in seconds each.

One tiny model per distinct training setup (plain, each train-step hook, MC-Dropout's model,
TracInCP's checkpoints) is trained twice, as the loop's cycles 0 and 1 would (the pool padded
to the run's capacity); every strategy is then scored on both contexts, and on the first with
the split streamed. The checks are strategies.testing's (`check_picks`, `check_streamed`,
`check_next_cycle`), which `testing.check_contract` runs on an untrained tiny model in the
fast tier. What the loop adds (resume, files, warm starts) stays in tests/test_strategies.py.
"""

import dataclasses
import functools

import jax
import numpy as np
import pytest

from disal_jax import loop, pool
from disal_jax.data.registry import load_dataset
from disal_jax.strategies import registry, testing
from disal_jax.strategies.base import ScoringContext, scoring_data
from disal_jax.training import sharding
from disal_jax.training.trainer import Recording
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow  # trains one model per training setup: not in the quick tier

NAMES = registry.names()
NUM_TRAIN = 200
FIRST_LABELED = 20  # cycle 0's labeled rows; cycle 1 adds BUDGET of them
BUDGET = 10


def _config():
  return tiny_config(
    **{
      "data.max_train": NUM_TRAIN,
      "train.eval_batch_size": 64,
      "gradnorm.chunk_size": 8,
      "tracin.chunk_size": 8,
      # DISAL's own ranking: a handful of labeled rows is a cold start, which picks
      # Random's rows (tests/test_disal_guard.py)
      "disal.cold_start_labels_per_class": 0.0,
    }
  )


@functools.cache
def _dataset():
  return load_dataset(_config().data)


def _rounds():
  """(labeled, candidates) of cycles 0 and 1: the second pool is the first less BUDGET rows."""
  first = pool.initial_labeled(NUM_TRAIN, FIRST_LABELED, seed=0)
  unlabeled = pool.unlabeled_indices(first)
  second = pool.add_labels(first, unlabeled[:: len(unlabeled) // BUDGET][:BUDGET], 1, BUDGET)
  return [(pool.labeled_indices(r), pool.unlabeled_indices(r)) for r in (first, second)]


@functools.cache
def _trained(make_hook, model_overrides, make_epoch_callback, level, tmp_root):
  """Both cycles' (trainer data, results, callbacks) for one training setup, trained once."""
  config, dataset = _config(), _dataset()
  strategy = next(
    s
    for s in map(registry.get_strategy, NAMES)
    if (s.make_hook, s.model_overrides, s.make_epoch_callback)
    == (make_hook, model_overrides, make_epoch_callback)
  )
  trainer = loop.strategy_trainer(config, dataset, strategy, sharding.make_mesh())
  capacity = NUM_TRAIN - FIRST_LABELED
  cycles = []
  for cycle, (labeled, candidates) in enumerate(_rounds()):
    callback = (
      None
      if make_epoch_callback is None
      else make_epoch_callback(config, tmp_root / f"{strategy.name}{cycle}")
    )
    result = trainer.train_cycle(
      trainer.init_state(jax.random.key(cycle)),
      labeled,
      candidates,
      (0, cycle),
      cycle=cycle,
      recording=Recording(level, capacity),
      on_epoch_end=callback,
    )
    cycles.append((result, callback))
  return scoring_data(trainer), cycles


def _contexts(name, tmp_root, key=0):
  strategy = registry.get_strategy(name)
  config = _config()
  level = loop.record_level(config, strategy)
  data, cycles = _trained(
    strategy.make_hook, strategy.model_overrides, strategy.make_epoch_callback, level, tmp_root
  )
  run_dir = tmp_root / "runs" / name  # what a strategy keeps between cycles (TOD's model)
  run_dir.mkdir(parents=True, exist_ok=True)
  return strategy, [
    ScoringContext(
      config, data, result, candidates, labeled, jax.random.key(key), cycle, callback, run_dir
    )
    for cycle, ((labeled, candidates), (result, callback)) in enumerate(zip(_rounds(), cycles))
  ]


def _pick(strategy, ctx):
  """(evidence, picks) as score_and_select computes them, the epoch callback kept open so
  that the same context can be scored again."""
  return testing.pick(strategy, ctx, BUDGET)


FIRST_PICKS: dict[str, frozenset] = {}  # each strategy's cycle-0 picks, filled as it is tested


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory):
  return tmp_path_factory.mktemp("contract")


@pytest.mark.parametrize("name", NAMES)
def test_strategy_contract(name, tmp_root):
  strategy, (first, second) = _contexts(name, tmp_root)
  # K distinct unlabeled candidates, finite evidence, the same key the same picks
  picks = testing.check_picks(strategy, first, BUDGET)
  # Ties (or a bug) falling to the lowest rows would pick one or two classes of an image
  # folder, which stores its rows class by class.
  assert not set(picks.tolist()) <= set(first.candidates[: 3 * BUDGET].tolist())
  FIRST_PICKS[name] = frozenset(picks.tolist())
  # Streaming placement: every batch reads its rows from a window of the split (the strategy
  # reads them through data.images_at); the same picks.
  testing.check_streamed(strategy, first, picks)
  # The next cycle's pool: other rows, the same padded shapes. Nothing may compile again:
  # device outputs keep the run's pool capacity, counts are traced, k-means holds
  # typiclust.max_clusters. A program shared by several strategies is charged to the first
  # one tested (`-k name` tests one alone).
  testing.check_next_cycle(strategy, second, BUDGET)


def test_strategies_do_not_all_choose_alike(tmp_root):
  """Two registry names bound to the same scores would pick the same rows; the one pair
  meant to is the control, random_dynamic, which picks Random's rows (it differs in training,
  which tests/test_loop.py checks)."""
  for name in NAMES:
    if name not in FIRST_PICKS:  # this test run alone
      strategy, (first, _) = _contexts(name, tmp_root)
      FIRST_PICKS[name] = frozenset(_pick(strategy, first)[1].tolist())
  assert FIRST_PICKS["random_dynamic"] == FIRST_PICKS["random"]
  others = {name: picks for name, picks in FIRST_PICKS.items() if name != "random_dynamic"}
  assert len(set(others.values())) == len(others)


def test_disal_class_balanced_selection_spreads_picks_over_predicted_classes(tmp_root):
  from disal_jax.strategies import disal
  from disal_jax.strategies.base import batched_pool_scores

  strategy, (first, _) = _contexts("disal", tmp_root)
  config = _config()
  config.disal.selection = "class_balanced"
  ctx = dataclasses.replace(first, config=config)
  _, picks = _pick(strategy, ctx)
  predicted = batched_pool_scores(
    ctx,
    functools.partial(disal.predicted_classes, preprocess=ctx.data.preprocess),
    ctx.result.state,
  )
  available = np.bincount(predicted, minlength=10)
  taken = np.bincount(predicted[np.searchsorted(ctx.candidates, picks)], minlength=10)
  assert len(np.unique(picks)) == BUDGET
  # every class gets its turn: one short of the most-picked class at worst, unless it ran out
  assert all(taken[c] == available[c] or taken[c] >= taken.max() - 1 for c in range(10))
  assert (available > 0).sum() > 1 and (taken > 0).sum() > 1

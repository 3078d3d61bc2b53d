"""The pool's bookkeeping: the budget, the initial set, the scoring subset, adding labels."""

import numpy as np
import pytest

from disal_jax import pool
from disal_jax.errors import ConfigError
from disal_jax.experiment import base_config


def test_budget_schedule_follows_the_protocol():
  al = base_config().al
  assert pool.budget_schedule(al, 50_000) == [5000, 7500, 10000, 12500, 15000, 17500, 20000]
  al.initial_count, al.step_count, al.final_count = 1000, 500, 4000  # CIFAR10-IR100
  assert pool.budget_schedule(al, 12_406) == [1000, 1500, 2000, 2500, 3000, 3500, 4000]
  with pytest.raises(ConfigError, match="al.final_count asks for 4000"):
    pool.budget_schedule(al, 3000)
  al = base_config().al
  al.initial_fraction, al.step_fraction = 0.002, 0.01  # of 200: 0, 2, 4, ...
  with pytest.raises(ConfigError, match=r"labeled counts \[0, 2, 4, .*must start >= 1 and grow"):
    pool.budget_schedule(al, 200)
  al.initial_fraction, al.step_fraction = 0.01, 0.001  # 2, 2, 2, 3, ...: does not grow
  with pytest.raises(ConfigError, match=r"labeled counts \[2, 2, 2, 3, .*must start >= 1 and grow"):
    pool.budget_schedule(al, 200)


def test_initial_labeled_is_count_distinct_rows_of_round_0_fixed_by_the_seed():
  a = pool.initial_labeled(50, 20, seed=3)
  assert a.dtype == np.int32 and a.shape == (50,)
  assert (a == 0).sum() == 20 and (a == pool.UNLABELED).sum() == 30  # 20 distinct rows
  np.testing.assert_array_equal(a, pool.initial_labeled(50, 20, seed=3))
  assert not np.array_equal(a, pool.initial_labeled(50, 20, seed=4))
  np.testing.assert_array_equal(pool.labeled_indices(a), np.flatnonzero(a == 0))
  np.testing.assert_array_equal(pool.unlabeled_indices(a), np.flatnonzero(a != 0))


def _first_half_labeled(n=100):
  """Rows 0..n/2-1 labeled: a position among the unlabeled rows is never such a row."""
  labeled_round = np.full(n, pool.UNLABELED, np.int32)
  labeled_round[: n // 2] = 0
  return labeled_round


def test_the_scoring_subset_is_distinct_unlabeled_rows_fixed_by_seed_and_cycle():
  labeled_round = _first_half_labeled()
  a = pool.scoring_candidates(labeled_round, 20, seed=0, cycle=1)
  assert a.shape == (20,) and len(np.unique(a)) == 20 and (np.diff(a) > 0).all()  # sorted
  assert (labeled_round[a] == pool.UNLABELED).all()
  np.testing.assert_array_equal(a, pool.scoring_candidates(labeled_round, 20, seed=0, cycle=1))
  # another cycle or another seed draws another subset
  assert not np.array_equal(a, pool.scoring_candidates(labeled_round, 20, seed=0, cycle=2))
  assert not np.array_equal(a, pool.scoring_candidates(labeled_round, 20, seed=1, cycle=1))
  # over the cycles every unlabeled row is drawn (a uniform draw, not always the same rows)
  drawn = np.concatenate(
    [pool.scoring_candidates(labeled_round, 20, seed=0, cycle=c) for c in range(30)]
  )
  np.testing.assert_array_equal(np.unique(drawn), np.arange(50, 100))


def test_no_scoring_subset_or_one_as_large_as_the_pool_scores_every_unlabeled_row():
  labeled_round = _first_half_labeled()
  for size in (0, 50, 80):
    np.testing.assert_array_equal(
      pool.scoring_candidates(labeled_round, size, 0, 1), np.arange(50, 100)
    )


def test_add_labels_marks_the_rows_with_the_cycle_and_leaves_the_input_alone():
  labeled_round = pool.initial_labeled(20, 4, seed=0)
  before = labeled_round.copy()
  unlabeled = pool.unlabeled_indices(labeled_round)
  grown = pool.add_labels(labeled_round, unlabeled[[5, 0, 2]], 3, 3)
  expected = before.copy()
  expected[unlabeled[[0, 2, 5]]] = 3
  np.testing.assert_array_equal(grown, expected)
  np.testing.assert_array_equal(labeled_round, before)  # a new array; the old one unchanged


def _unlabeled_last_row():
  labeled_round = np.full(20, pool.UNLABELED, np.int32)
  labeled_round[[0, 1, 2, 3]] = 0
  return labeled_round


@pytest.mark.parametrize(
  "rows, k, message",
  [
    ([4, 5, -1], 3, "cycle 2: the strategy returned indices outside the training set"),
    ([4, 5, 20], 3, "cycle 2: the strategy returned indices outside the training set"),
    ([4, 5, 5], 3, "cycle 2: the strategy returned duplicate indices"),
    ([4, 5, 3], 3, "cycle 2: the strategy returned already-labeled indices"),
    ([4, 5], 3, r"cycle 2: the strategy returned \(2,\) indices, expected \(3,\)"),
    ([[4], [5], [6]], 3, r"cycle 2: the strategy returned \(3, 1\) indices, expected \(3,\)"),
  ],
)
def test_add_labels_refuses_a_bad_selection_naming_the_cycle_and_the_problem(rows, k, message):
  # row -1 would wrap to row 19, which is unlabeled: only the range check catches it
  with pytest.raises(ValueError, match=message):
    pool.add_labels(_unlabeled_last_row(), np.array(rows), 2, k)

"""Who is labeled, and since when: one int32 array over the whole training set.

`labeled_round[i]` is -1 while sample i is unlabeled, else the cycle in which it was labeled
(0 for the initial random set). Only this module changes it.
"""

from __future__ import annotations

import ml_collections
import numpy as np

from disal_jax.errors import ConfigError

UNLABELED = -1


def budget_schedule(al: ml_collections.ConfigDict, num_train: int) -> list[int]:
  """Labeled counts per cycle: fractions of the training set, or absolute counts.

  Fractions 0.10, 0.15, ..., 0.40 of 50,000 give 5000, 7500, ..., 20000 (7 cycles).
  """
  if al.initial_count > 0:
    counts = list(range(al.initial_count, al.final_count + 1, al.step_count))
    key = "al.final_count"
  else:
    num_steps = int(round((al.final_fraction - al.initial_fraction) / al.step_fraction))
    counts = [
      int(round((al.initial_fraction + i * al.step_fraction) * num_train))
      for i in range(num_steps + 1)
    ]
    key = "al.final_fraction"
  if counts[-1] > num_train:
    raise ConfigError(
      f"config.{key} asks for {counts[-1]} labeled samples but the training set holds {num_train}"
    )
  if counts[0] < 1 or any(b <= a for a, b in zip(counts, counts[1:])):
    raise ConfigError(f"config.al gives labeled counts {counts}: they must start >= 1 and grow")
  return counts


def initial_labeled(num_train: int, count: int, seed: int) -> np.ndarray:
  """A fresh labeled_round with `count` samples drawn uniformly (seeded) as round 0."""
  rng = np.random.default_rng([seed, 0x5EED])
  labeled_round = np.full(num_train, UNLABELED, np.int32)
  labeled_round[rng.choice(num_train, count, replace=False)] = 0
  return labeled_round


def labeled_indices(labeled_round: np.ndarray) -> np.ndarray:
  """The (L,) int64 indices of the labeled rows, ascending."""
  return np.flatnonzero(labeled_round != UNLABELED)


def unlabeled_indices(labeled_round: np.ndarray) -> np.ndarray:
  """The (P,) int64 indices of the unlabeled rows, ascending."""
  return np.flatnonzero(labeled_round == UNLABELED)


def scoring_candidates(
  labeled_round: np.ndarray, subset_size: int, seed: int, cycle: int
) -> np.ndarray:
  """The unlabeled rows to score this cycle: all, or a seeded random subset (sorted)."""
  unlabeled = unlabeled_indices(labeled_round)
  if not subset_size or subset_size >= len(unlabeled):
    return unlabeled
  rng = np.random.default_rng([seed, cycle, 0x5B5E7])
  return np.sort(rng.choice(unlabeled, subset_size, replace=False))


def add_labels(labeled_round: np.ndarray, selected: np.ndarray, cycle: int, k: int) -> np.ndarray:
  """Marks `selected` as labeled in `cycle` after checking it is k new distinct rows."""
  selected = np.asarray(selected)
  if selected.shape != (k,):
    raise ValueError(
      f"cycle {cycle}: the strategy returned {selected.shape} indices, expected ({k},)"
    )
  if len(np.unique(selected)) != k:
    raise ValueError(f"cycle {cycle}: the strategy returned duplicate indices")
  if selected.min() < 0 or selected.max() >= len(labeled_round):
    raise ValueError(f"cycle {cycle}: the strategy returned indices outside the training set")
  if np.any(labeled_round[selected] != UNLABELED):
    raise ValueError(f"cycle {cycle}: the strategy returned already-labeled indices")
  grown = labeled_round.copy()
  grown[selected] = cycle
  return grown

"""Long-tailed training sets, exponential per-class profile (CIFAR100-IR10, CIFAR10-IR100)."""

from __future__ import annotations

import numpy as np

from disal_jax.data.dataset import Dataset, take


def long_tail_counts(max_per_class: int, num_classes: int, imbalance_ratio: float) -> np.ndarray:
  """n_c = floor(n_max * (1 / IR) ** (c / (C - 1))), c = 0..C-1 (Cao et al., 2019).

  CIFAR10-IR100 gives 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50 (12,406 images).
  """
  exponents = np.arange(num_classes) / max(num_classes - 1, 1)
  return np.floor(max_per_class * (1.0 / imbalance_ratio) ** exponents + 1e-9).astype(np.int64)


def make_long_tailed(dataset: Dataset, imbalance_ratio: float) -> Dataset:
  """Keeps the first n_c training images of class c (in dataset order); the test set stays.

  n_max is the smallest class's size (5000 for CIFAR-10, 500 for CIFAR-100), so every class
  can supply its count.
  """
  labels = dataset.train_labels
  max_per_class = int(np.bincount(labels, minlength=dataset.num_classes).min())
  counts = long_tail_counts(max_per_class, dataset.num_classes, imbalance_ratio)
  keep = []
  for c, n in enumerate(counts):
    members = np.flatnonzero(labels == c)
    if members.size < n:
      raise ValueError(
        f"{dataset.name}: class {dataset.class_names[c]!r} has {members.size} "
        f"training images, the long-tail profile asks for {n}"
      )
    keep.append(members[:n])
  return take(dataset, train_indices=np.sort(np.concatenate(keep)))

"""The offline default: scikit-learn's handwritten digits (1,797 real 8x8 images, 10 classes).

It ships inside the scikit-learn wheel, so it needs no network and no preparation step.
"""

from __future__ import annotations

import numpy as np

from disal_jax.data.dataset import Dataset, stratified_split

_MAX_PIXEL = 16.0  # the dataset's grey levels run 0..16


def load_digits(test_fraction: float, split_seed: int) -> Dataset:
  """A fixed stratified train/test split of the digits, images (N, 8, 8, 1) uint8."""
  from sklearn.datasets import load_digits as sk_load_digits  # pylint: disable=import-outside-toplevel

  bunch = sk_load_digits()
  images = np.round(bunch.images / _MAX_PIXEL * 255.0).astype(np.uint8)[..., None]
  labels = bunch.target.astype(np.int32)
  train_idx, test_idx = stratified_split(labels, test_fraction, split_seed)
  return Dataset(
    "digits",
    images[train_idx],
    labels[train_idx],
    images[test_idx],
    labels[test_idx],
    tuple(str(c) for c in range(10)),
  )

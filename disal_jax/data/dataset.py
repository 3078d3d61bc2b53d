"""The in-memory dataset every loader returns: uint8 images and int32 labels per split.

Classification labels are one class per image, (N,); segmentation labels are one class per
pixel, (N, H, W), with IGNORE_LABEL on pixels that count in no loss and no metric.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

IGNORE_LABEL = 255  # Cityscapes' void label; segmentation only


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A classification or segmentation dataset held as arrays.

  A sample's index in the pool is its row in `train_images`; the oracle is `train_labels`.

  Attributes:
    name: registry name.
    train_images: (N, H, W, C) uint8.
    train_labels: (N,) int32 in [0, num_classes), or (N, H, W) int32 or uint8 label maps
      whose pixels are in [0, num_classes) or IGNORE_LABEL.
    test_images: (M, H, W, C) uint8.
    test_labels: (M,) int32, or (M, H, W) label maps likewise.
    class_names: one name per class.
    val_images, val_labels: a labeled validation set carved out of the training split
      (config.data.val_fraction), never in the pool; None when there is none.
    channel_mean_std: the training images' channel statistics when known without reading
      them (a row store keeps them); None: computed from the images.
  """

  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: tuple[str, ...]
  val_images: Optional[np.ndarray] = None
  val_labels: Optional[np.ndarray] = None
  channel_mean_std: Optional[tuple[np.ndarray, np.ndarray]] = None

  def __post_init__(self):
    for split in ("train", "test", "val"):
      images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
      if split == "val" and images is None and labels is None:
        continue
      if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(
          f"{self.name}: {split} images must be uint8 (N, H, W, C), got "
          f"{images.dtype} {images.shape}"
        )
      expected = images.shape[:3] if self.is_segmentation else images.shape[:1]
      if labels.shape != expected:
        raise ValueError(
          f"{self.name}: {split} labels {labels.shape} do not match images {images.shape}"
        )
      if self.is_segmentation:
        bad = (labels < 0) | ((labels >= len(self.class_names)) & (labels != IGNORE_LABEL))
      else:
        bad = (labels < 0) | (labels >= len(self.class_names))
      if bad.any():
        allowed = f"[0, {len(self.class_names)})" + (
          f" or {IGNORE_LABEL}" if self.is_segmentation else ""
        )
        raise ValueError(f"{self.name}: {int(bad.sum())} {split} labels outside {allowed}")

  @property
  def is_segmentation(self) -> bool:
    """Whether labels are per-pixel maps (N, H, W) rather than one class per image."""
    return self.train_labels.ndim == 3

  @property
  def num_classes(self) -> int:
    """The number of classes C."""
    return len(self.class_names)

  @property
  def num_train(self) -> int:
    """The number of training rows N."""
    return int(self.train_labels.shape[0])

  @property
  def image_shape(self) -> tuple[int, int, int]:
    """One image's (H, W, channels)."""
    return tuple(self.train_images.shape[1:])

  def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the training images in [0, 1], float32 (C,)."""
    if self.channel_mean_std is not None:
      return self.channel_mean_std
    pixels = self.train_images.reshape(-1, self.train_images.shape[-1])
    mean = pixels.mean(axis=0, dtype=np.float64) / 255.0
    std = pixels.std(axis=0, dtype=np.float64) / 255.0
    return mean.astype(np.float32), np.maximum(std, 1e-3).astype(np.float32)


def carve_validation(dataset: Dataset, fraction: float, seed) -> Dataset:
  """Moves a stratified `fraction` of the training split into the validation split.

  The rows kept for training keep their order; the same (dataset, fraction, seed) always
  gives the same split. Segmentation sets are split uniformly (no class per image).
  """
  if dataset.is_segmentation:
    rng = np.random.default_rng(seed)
    order = rng.permutation(dataset.num_train)
    n_val = int(round(fraction * dataset.num_train))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
  else:
    train, val = stratified_split(dataset.train_labels, fraction, seed)
  if not len(val) or not len(train):
    raise ValueError(
      f"{dataset.name}: data.val_fraction={fraction} leaves "
      f"{len(train)} training and {len(val)} validation images; pick a "
      "fraction that leaves both non-empty"
    )
  return dataclasses.replace(
    dataset,
    train_images=dataset.train_images[train],
    train_labels=dataset.train_labels[train],
    val_images=dataset.train_images[val],
    val_labels=dataset.train_labels[val],
    channel_mean_std=None,
  )


def stratified_split(
  labels: np.ndarray, test_fraction: float, seed
) -> tuple[np.ndarray, np.ndarray]:
  """Splits indices per class: round(test_fraction * n_c) of each class go to the test side.

  Returns:
    (train_indices, test_indices), each sorted int64.
  """
  rng = np.random.default_rng(seed)
  train, test = [], []
  for c in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == c))
    n_test = int(round(test_fraction * members.size))
    test.append(members[:n_test])
    train.append(members[n_test:])
  return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def take(
  dataset: Dataset, train_indices: np.ndarray | None = None, test_indices: np.ndarray | None = None
) -> Dataset:
  """A dataset restricted to the given rows of each split (None keeps a split whole)."""
  tr = slice(None) if train_indices is None else train_indices
  te = slice(None) if test_indices is None else test_indices
  return dataclasses.replace(
    dataset,
    train_images=dataset.train_images[tr],
    train_labels=dataset.train_labels[tr],
    test_images=dataset.test_images[te],
    test_labels=dataset.test_labels[te],
    channel_mean_std=None,
  )

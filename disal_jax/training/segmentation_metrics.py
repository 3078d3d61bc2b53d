"""Segmentation metrics: a confusion matrix accumulated on device, mIoU and pixel accuracy.

The matrix is int32 (true class x predicted class); a cell overflows past 2^31 pixels, about
twice the whole Cityscapes validation split (500 x 1024 x 2048).
"""

from __future__ import annotations

import flax
import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics

from disal_jax.data.dataset import IGNORE_LABEL


def confusion_matrix(
  labels: jax.Array, predictions: jax.Array, num_classes: int, mask: jax.Array | None = None
) -> jax.Array:
  """(C, C) int32 pixel counts, row = true class, column = predicted class.

  Args:
    labels: (B, H, W) int32 in [0, C) or IGNORE_LABEL (not counted).
    predictions: (B, H, W) int32 in [0, C).
    mask: (B,) bool, False for padding images (not counted); None counts every image.
  """
  valid = labels != IGNORE_LABEL
  if mask is not None:
    valid = valid & mask[:, None, None]
  cell = jnp.where(valid, labels * num_classes + predictions, 0).reshape(-1)
  counts = (
    jnp.zeros((num_classes * num_classes,), jnp.int32)
    .at[cell]
    .add(valid.reshape(-1).astype(jnp.int32))
  )
  return counts.reshape(num_classes, num_classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
  """(C,) float64 IoU = TP / (TP + FP + FN); NaN for a class absent from labels and
  predictions alike (it is left out of the mean, as in the Cityscapes evaluation)."""
  matrix = np.asarray(matrix, np.float64)
  tp = np.diag(matrix)
  union = matrix.sum(0) + matrix.sum(1) - tp
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, tp / union, np.nan)


def mean_iou(matrix: np.ndarray) -> float:
  """The mean over classes of the IoU of the (C, C) confusion matrix, classes absent from
  both ignored; nan if none is present."""
  iou = iou_per_class(matrix)
  return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(matrix: np.ndarray) -> float:
  """The fraction of pixels on the (C, C) confusion matrix's diagonal; nan if it is empty."""
  matrix = np.asarray(matrix, np.float64)
  total = matrix.sum()
  return float(np.trace(matrix) / total) if total else float("nan")


@flax.struct.dataclass
class ConfusionMatrix(clu_metrics.Metric):
  """A clu metric holding the (C, C) matrix; `compute()` returns the matrix itself."""

  matrix: jax.Array

  @classmethod
  def from_model_output(
    cls, logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None, **_
  ) -> "ConfusionMatrix":
    """The (C, C) int32 confusion matrix of one batch's argmax predictions."""
    num_classes = logits.shape[-1]
    predictions = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return cls(confusion_matrix(labels, predictions, num_classes, mask))

  def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
    """The sum of the two matrices."""
    return type(self)(self.matrix + other.matrix)

  def compute(self) -> jax.Array:
    """The (C, C) int32 confusion matrix (rows: label, columns: prediction)."""
    return self.matrix

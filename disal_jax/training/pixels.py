"""What differs between image labels and pixel labels, in one place.

Classification: logits (B, C), labels (B,). Segmentation: logits (B, H, W, C), labels
(B, H, W) with IGNORE_LABEL on pixels that count nowhere. Every function here takes either
form, told apart by rank at trace time, so the steps and scores are written once.

Segmentation's pool record and scores work at a reduced resolution: logits averaged over
`stride` x `stride` blocks (config.record.pixel_stride), (B, H/stride, W/stride, C). A
per-image score is the mean over those pixels of the per-pixel quantity.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from disal_jax.data.dataset import IGNORE_LABEL


def is_pixelwise(logits: jax.Array) -> bool:
  """Whether `logits` are per pixel, (B, h, w, C), rather than (B, C)."""
  return logits.ndim == 4


def valid_targets(labels: jax.Array) -> jax.Array:
  """bool, the shape of `labels`: True where the label counts. Only label maps carry
  IGNORE_LABEL; every image label counts (a 1000-class problem has a class 255)."""
  if labels.ndim == 1:
    return jnp.ones(labels.shape, bool)
  return labels != IGNORE_LABEL


def cross_entropy(logits: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Per-target cross-entropy and validity, both the shape of `labels`; 0 where ignored."""
  valid = valid_targets(labels)
  ce = optax.softmax_cross_entropy_with_integer_labels(
    logits.astype(jnp.float32), jnp.where(valid, labels, 0)
  )
  return jnp.where(valid, ce, 0.0), valid


def mean_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """() float32: the mean over every valid target of the batch (pixels or images)."""
  ce, valid = cross_entropy(logits, labels)
  return jnp.sum(ce) / jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)


def per_sample_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """(B,) float32: each image's loss, the mean over its valid pixels for segmentation (0 for
  an image with none)."""
  ce, valid = cross_entropy(logits, labels)
  if ce.ndim == 1:
    return ce
  axes = tuple(range(1, ce.ndim))
  return jnp.sum(ce, axes) / jnp.maximum(jnp.sum(valid, axes), 1).astype(jnp.float32)


def to_record_resolution(logits: jax.Array, stride: int) -> jax.Array:
  """Segmentation logits (B, H, W, C) -> block means (B, H // stride, W // stride, C) (rows
  and columns past the last whole block are dropped); classification logits unchanged."""
  if not is_pixelwise(logits) or stride == 1:
    return logits
  b, h, w, c = logits.shape
  hs, ws = h // stride, w // stride
  blocks = logits[:, : hs * stride, : ws * stride].reshape(b, hs, stride, ws, stride, c)
  return jnp.mean(blocks, axis=(2, 4))


def mean_over_pixels(values: jax.Array) -> jax.Array:
  """(B, ...) -> (B,): the mean over every axis but the first (identity for (B,))."""
  return values if values.ndim == 1 else jnp.mean(values, axis=tuple(range(1, values.ndim)))

"""A synthetic segmentation dataset made in code: shapes on textured backgrounds.

The offline stand-in for Cityscapes (tests, `configs/segmentation_demo.py`). Each image holds
one to `max_shapes` filled shapes (disk, square, triangle) of random size and position, each
in a random shade of its class's hue (reddish, greenish, bluish) and filled with its class's
texture (plain, horizontal stripes, checker), over a smooth greyish background with noise;
later shapes occlude earlier ones. As in Cityscapes, a
thin band along every object's boundary carries the ignore label. Fully determined by its
seed: the same arguments give the same arrays on every machine.
"""

from __future__ import annotations

import numpy as np

from disal_jax.data.dataset import IGNORE_LABEL, Dataset

CLASS_NAMES = ("background", "disk", "square", "triangle")
_STRIPE_PERIOD = 4  # pixels per stripe / checker cell
_NOISE_STD = 12.0  # grey levels of per-pixel noise on every image
# Each object class's mean RGB colour; a shape's colour varies by _COLOUR_SPREAD around it.
_CLASS_COLOURS = np.array([[0, 0, 0], [210, 70, 60], [70, 190, 70], [70, 90, 220]], np.float64)
_COLOUR_SPREAD = 40.0


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
  """(size, size) bool mask of one shape of class `kind` (1 disk, 2 square, 3 triangle)."""
  yy, xx = np.mgrid[:size, :size].astype(np.float32)
  radius = rng.uniform(0.15, 0.3) * size
  cy, cx = rng.uniform(radius, size - radius, 2)
  if kind == 1:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
  if kind == 2:
    return (np.abs(yy - cy) <= radius * 0.9) & (np.abs(xx - cx) <= radius * 0.9)
  # An upright isosceles triangle: apex at the top, base at the bottom.
  top, bottom = cy - radius, cy + radius
  half_width = (yy - top) / (2 * radius) * radius
  return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


def _texture(kind: int, size: int) -> np.ndarray:
  """(size, size) float32 in {0.55, 1}: the class's fill pattern."""
  yy, xx = np.mgrid[:size, :size]
  if kind == 1:
    pattern = np.ones((size, size), bool)
  elif kind == 2:
    pattern = (yy // _STRIPE_PERIOD) % 2 == 0
  else:
    pattern = ((yy // _STRIPE_PERIOD) + (xx // _STRIPE_PERIOD)) % 2 == 0
  return np.where(pattern, 1.0, 0.55).astype(np.float32)


def _boundary(labels: np.ndarray) -> np.ndarray:
  """(H, W) bool: pixels of the label map with a 4-neighbour of another class (both sides)."""
  padded = np.pad(labels, 1, mode="edge")
  neighbours = [padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
  differs = np.zeros(labels.shape, bool)
  for n in neighbours:
    differs |= n != labels
  return differs


def make_image(
  rng: np.random.Generator, size: int, max_shapes: int
) -> tuple[np.ndarray, np.ndarray]:
  """One (size, size, 3) uint8 image and its (size, size) int32 label map."""
  yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
  # Background: a greyish random linear gradient plus a low-frequency wave.
  base = rng.uniform(50, 200) + rng.uniform(-20, 20, 3)
  slope = rng.uniform(-40, 40, (2, 1)) + rng.uniform(-10, 10, (2, 3))
  wave = 25 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0, 1)))
  image = base + yy[..., None] * slope[0] + xx[..., None] * slope[1] + wave[..., None]
  labels = np.zeros((size, size), np.int32)
  for _ in range(rng.integers(1, max_shapes + 1)):
    kind = int(rng.integers(1, len(CLASS_NAMES)))
    mask = _shape_mask(kind, size, rng)
    colour = _CLASS_COLOURS[kind] + rng.uniform(-_COLOUR_SPREAD, _COLOUR_SPREAD, 3)
    image = np.where(mask[..., None], colour * _texture(kind, size)[..., None], image)
    labels[mask] = kind
  image = image + rng.normal(0.0, _NOISE_STD, image.shape)
  labels[_boundary(labels)] = IGNORE_LABEL
  return np.clip(np.round(image), 0, 255).astype(np.uint8), labels


def make_split(
  num_images: int, size: int, max_shapes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
  """(N, size, size, 3) uint8 images and (N, size, size) int32 label maps."""
  rng = np.random.default_rng(seed)
  pairs = [make_image(rng, size, max_shapes) for _ in range(num_images)]
  return (
    np.stack([p[0] for p in pairs]) if pairs else np.zeros((0, size, size, 3), np.uint8),
    np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, size, size), np.int32),
  )


def load_shapes(num_train: int, num_test: int, size: int, max_shapes: int, seed: int) -> Dataset:
  """The shapes dataset; train and test come from independent streams of the same seed."""
  train_seed, test_seed = np.random.SeedSequence(seed).spawn(2)
  train_images, train_labels = make_split(
    num_train, size, max_shapes, int(train_seed.generate_state(1)[0])
  )
  test_images, test_labels = make_split(
    num_test, size, max_shapes, int(test_seed.generate_state(1)[0])
  )
  return Dataset("shapes", train_images, train_labels, test_images, test_labels, CLASS_NAMES)

"""On-device preprocessing: random crops, horizontal flips, normalisation.

Classification crops to the image size after zero padding (`augment`); segmentation crops a
`crop_size` window of image and label map together, without padding (`augment_pair`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Static preprocessing settings (hashable, so jitted steps can close over them).

  Attributes:
    mean, std: per-channel statistics of the training images in [0, 1].
    crop_padding: pixels of zero padding before the random crop; 0 = no crop.
    flip: random horizontal flips.
    crop_size: segmentation: (height, width) of the random training crop; (0, 0) = none.
  """

  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False
  crop_size: tuple[int, int] = (0, 0)

  def normalise(self, images: jax.Array) -> jax.Array:
    """(B, H, W, C) uint8 -> float32 normalised."""
    x = images.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)

  def augment(self, images: jax.Array, rng: jax.Array) -> jax.Array:
    """(B, H, W, C) uint8 -> float32 normalised, randomly cropped and flipped per sample.

    Padding is black in pixel space (as torchvision's RandomCrop before Normalize). Each
    sample draws from its own key (split from `rng`), so the result does not depend on how
    the batch is split over devices (one draw over the sharded batch did, in some steps).
    """
    height, width, channels = images.shape[1:]
    p = self.crop_padding

    def one(image, key):
      x = image.astype(jnp.float32) / 255.0
      crop_key, flip_key = jax.random.split(key)
      if p:
        padded = jnp.pad(x, ((p, p), (p, p), (0, 0)))
        offset = jax.random.randint(crop_key, (2,), 0, 2 * p + 1)
        x = jax.lax.dynamic_slice(padded, (offset[0], offset[1], 0), (height, width, channels))
      if self.flip:
        x = jnp.where(jax.random.bernoulli(flip_key), x[:, ::-1], x)
      return x

    x = jax.vmap(one)(images, jax.random.split(rng, images.shape[0]))
    return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)

  def augment_pair(
    self, images: jax.Array, labels: jax.Array, rng: jax.Array
  ) -> tuple[jax.Array, jax.Array]:
    """Segmentation: the same random crop and flip of each image and its label map.

    Args:
      images: (B, H, W, C) uint8.
      labels: (B, H, W) int32.
    Returns:
      float32 normalised images (B, h, w, C) and int32 labels (B, h, w), (h, w) = crop_size
      (the full size when crop_size is (0, 0)); each sample draws from its own key.
    """
    height, width, channels = images.shape[1:]
    crop_h, crop_w = self.crop_size if self.crop_size[0] else (height, width)

    def one(image, label, key):
      crop_key, flip_key = jax.random.split(key)
      top = jax.random.randint(crop_key, (), 0, height - crop_h + 1)
      left = jax.random.randint(jax.random.fold_in(crop_key, 1), (), 0, width - crop_w + 1)
      image = jax.lax.dynamic_slice(image, (top, left, 0), (crop_h, crop_w, channels))
      label = jax.lax.dynamic_slice(label, (top, left), (crop_h, crop_w))
      if self.flip:
        flip = jax.random.bernoulli(flip_key)
        image = jnp.where(flip, image[:, ::-1], image)
        label = jnp.where(flip, label[:, ::-1], label)
      return image, label

    images, labels = jax.vmap(one)(images, labels, jax.random.split(rng, images.shape[0]))
    return self.normalise(images), labels

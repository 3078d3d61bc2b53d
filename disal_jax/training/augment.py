"""On-device preprocessing: random crop with zero padding, horizontal flip, normalisation."""

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
  """
  mean: tuple[float, ...]
  std: tuple[float, ...]
  crop_padding: int = 0
  flip: bool = False

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

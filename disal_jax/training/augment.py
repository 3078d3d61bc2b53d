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

    Padding is black in pixel space (as torchvision's RandomCrop before Normalize).
    """
    x = images.astype(jnp.float32) / 255.0
    batch, height, width, _ = x.shape
    crop_rng, flip_rng = jax.random.split(rng)
    if self.crop_padding:
      p = self.crop_padding
      padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
      offsets = jax.random.randint(crop_rng, (batch, 2), 0, 2 * p + 1)
      x = jax.vmap(lambda im, o: jax.lax.dynamic_slice(
          im, (o[0], o[1], 0), (height, width, im.shape[-1])))(padded, offsets)
    if self.flip:
      flips = jax.random.bernoulli(flip_rng, 0.5, (batch,))
      x = jnp.where(flips[:, None, None, None], x[:, :, ::-1], x)
    return (x - jnp.asarray(self.mean)) / jnp.asarray(self.std)

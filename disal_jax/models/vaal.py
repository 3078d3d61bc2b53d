"""VAAL's networks (Sinha et al., variational adversarial active learning), in linen.

VAE: four 4x4 stride-2 convolutions (width, 2, 4, 8 x width channels; the reference's
128/256/512/1024) with BatchNorm + ReLU, then linear maps to the latent mean and log-variance;
the decoder mirrors it: a linear map to an (S/8)^2 x 8 width map, three 4x4 stride-2
transposed convolutions with BatchNorm + ReLU, and a 1x1 convolution back to the image's
channels. S, the square input size, must divide by 16 (the strategy resizes images to it).
Discriminator: latent -> hidden -> hidden -> one logit (ReLU between); the sigmoid of the
logit says "labeled".
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


class VAE(nn.Module):
  """VAAL's convolutional VAE: (B, S, S, C) images -> reconstruction, latent mean and
  log-variance."""

  latent_dim: int = 32
  width: int = 128

  def _norm(self, x: jax.Array, train: bool, mask: jax.Array | None) -> jax.Array:
    # PyTorch BatchNorm2d's running statistics: momentum 0.1 there is 0.9 here.
    norm = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)
    return norm(x, mask=None if mask is None else mask[:, None, None, None])

  def encode(
    self, x: jax.Array, train: bool, mask: jax.Array | None = None
  ) -> tuple[jax.Array, jax.Array]:
    """(B, S, S, C) float32 -> (mu, logvar), each (B, latent_dim); mask as in __call__."""
    for i in range(4):
      x = nn.Conv(
        self.width * 2**i,
        (4, 4),
        (2, 2),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        name=f"enc_conv{i}",
      )(x)
      x = nn.relu(self._norm(x, train, mask))
    x = x.reshape(x.shape[0], -1)
    return (
      nn.Dense(self.latent_dim, name="fc_mu")(x),
      nn.Dense(self.latent_dim, name="fc_logvar")(x),
    )

  def decode(
    self, z: jax.Array, size: int, channels: int, train: bool, mask: jax.Array | None = None
  ) -> jax.Array:
    """(B, latent_dim) -> (B, size, size, channels) reconstruction; mask as in __call__."""
    side = size // 8
    x = nn.Dense(side * side * self.width * 8, name="fc_dec")(z)
    x = x.reshape(z.shape[0], side, side, self.width * 8)
    for i in range(3):
      x = nn.ConvTranspose(
        self.width * 2 ** (2 - i),
        (4, 4),
        (2, 2),
        padding="SAME",
        use_bias=False,
        name=f"dec_conv{i}",
      )(x)
      x = nn.relu(self._norm(x, train, mask))
    return nn.Conv(channels, (1, 1), name="dec_out")(x)

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    rng: jax.Array | None = None,
    train: bool = False,
    mask: jax.Array | None = None,
  ) -> dict[str, jax.Array]:
    """x (B, S, S, C) -> {'mu', 'logvar': (B, latent_dim), 'reconstruction': (B, S, S, C)}.

    The reconstruction decodes z = mu + exp(logvar / 2) * eps, eps ~ N(0, I) drawn from
    `rng`; without `rng` only the encoder runs (scoring needs mu alone). In train mode
    BatchNorm standardises by the batch's statistics, over the rows where the (B,) bool
    `mask` is True when it is given (a padded batch's real rows).
    """
    if x.shape[1] != x.shape[2] or x.shape[1] % 16:
      raise ValueError(f"VAE input {x.shape[1:3]}: needs a square size divisible by 16")
    mu, logvar = self.encode(x, train, mask)
    out = {"mu": mu, "logvar": logvar}
    if rng is not None:
      z = mu + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mu.shape, mu.dtype)
      out["reconstruction"] = self.decode(z, x.shape[1], x.shape[3], train, mask)
    return out


class Discriminator(nn.Module):
  """VAAL's discriminator: (B, latent_dim) -> (B,) logits of "labeled"."""

  hidden: int = 512

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """(B, latent_dim) -> (B,) logits of "labeled"."""
    z = nn.relu(nn.Dense(self.hidden)(z))
    z = nn.relu(nn.Dense(self.hidden)(z))
    return nn.Dense(1)(z)[:, 0]

"""ResNet-18 in Flax linen, with the CIFAR stem (3x3 stride 1, no max-pool) and the ImageNet
stem (7x7 stride 2 + 3x3 max-pool), as in docs/method.md.

`__call__` returns a dict: 'logits' (B, classes) float32, 'features' (B, 8 * width) float32,
the pooled penultimate feature, and 'stages', the four stage feature maps in the compute dtype
(Learning Loss, TiDAL read them).
"""

from __future__ import annotations

import functools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# torchvision's ResNet init; BatchNorm momentum/epsilon match PyTorch's 0.1 / 1e-5. BatchNorm
# uses the two-pass variance: flax's default E[x^2] - E[x]^2 loses precision where a
# channel's mean is large against its spread, and then differs with the reduction order
# (1 vs 8 devices gave 1e-3 apart after a few steps).
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


class BasicBlock(nn.Module):
  """ResNet's basic block: two 3x3 convolutions with BatchNorm, and the shortcut."""

  filters: int
  strides: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_init, dtype=self.dtype)
    norm = functools.partial(
      nn.BatchNorm,
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      use_fast_variance=False,
      dtype=self.dtype,
    )
    residual = x
    y = conv(self.filters, (3, 3), (self.strides, self.strides), padding=1)(x)
    y = nn.relu(norm()(y))
    y = conv(self.filters, (3, 3), padding=1)(y)
    y = norm()(y)
    if residual.shape != y.shape:
      residual = conv(self.filters, (1, 1), (self.strides, self.strides))(residual)
      residual = norm()(residual)
    return nn.relu(y + residual)


class ResNet(nn.Module):
  """ResNet with BasicBlocks.

  Attributes:
    stage_sizes: blocks per stage, [2, 2, 2, 2] for ResNet-18.
    num_classes: width of the linear head.
    width: channels of the first stage; stages use width * (1, 2, 4, 8).
    stem: 'cifar' or 'imagenet'.
    dropout_rate: dropout on the pooled feature before the head (MC-Dropout); active only
      when `__call__` gets `dropout=True` and a 'dropout' rng.
    dtype: compute dtype.
  """

  stage_sizes: Sequence[int]
  num_classes: int
  width: int = 64
  stem: str = "cifar"
  dropout_rate: float = 0.0
  train_dropout: bool = True  # False: dropout only in passes with train=False (queries)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout: bool = False):
    """x: (B, H, W, C) float, normalised. Returns {'logits', 'features', 'stages'}."""
    x = x.astype(self.dtype)
    if self.stem == "cifar":
      x = nn.Conv(
        self.width,
        (3, 3),
        padding=1,
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        name="stem_conv",
      )(x)
    else:
      x = nn.Conv(
        self.width,
        (7, 7),
        (2, 2),
        padding=3,
        use_bias=False,
        kernel_init=conv_init,
        dtype=self.dtype,
        name="stem_conv",
      )(x)
    x = nn.BatchNorm(
      use_running_average=not train,
      momentum=BN_MOMENTUM,
      epsilon=BN_EPSILON,
      use_fast_variance=False,
      dtype=self.dtype,
      name="stem_bn",
    )(x)
    x = nn.relu(x)
    if self.stem == "imagenet":
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    stages = []
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = BasicBlock(
          self.width * 2**i, strides, dtype=self.dtype, name=f"stage{i + 1}_block{j + 1}"
        )(x, train)
      stages.append(x)
    # The pooled features and the head run in float32 whatever the compute dtype: scores,
    # embeddings and the record read them, and bfloat16's 8-bit mantissa would tie margins and
    # round distances (the head is a small fraction of the flops).
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    if self.dropout_rate:
      active = dropout and (self.train_dropout or not train)
      features_for_head = nn.Dropout(self.dropout_rate, deterministic=not active)(features)
    else:
      features_for_head = features
    logits = nn.Dense(self.num_classes, dtype=jnp.float32, name="head")(features_for_head)
    return {
      "logits": logits,
      "features": features,
      "stages": tuple(stages),
    }


ResNet18 = functools.partial(ResNet, stage_sizes=(2, 2, 2, 2))

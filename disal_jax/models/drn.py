"""DRN-D-22 (Yu et al., dilated residual networks), "D" variant, in Flax linen.

Layers (channels c = width * (1, 2, 4, 8, 16, 32, 32, 32); the reference has width 16):
  0: 7x7 conv, stride 1                          (conv + BN + ReLU; no max-pool: "D" stem)
  1: 3x3 conv;  2: 3x3 conv, stride 2            (plain conv layers, not residual)
  3: 2 BasicBlocks, stride 2;  4: 2 BasicBlocks, stride 2
  5: 2 BasicBlocks, dilation 2;  6: 2 BasicBlocks, dilation 4   (resolution stays 1/8)
  7: 3x3 conv, dilation 2;  8: 3x3 conv          (degridding: conv + BN + ReLU, no residual)
Convolutions have no bias (BatchNorm follows). Classification: global average pool and a
linear head (the reference's 1x1 convolution on the pooled map: the same parameters).
Segmentation (`DRNSeg`): a 1x1 classifier on the 1/8-resolution map, then bilinear
upsampling to the input size.

Verified parameter count: 16,393,752 trainable parameters with 1000 classes at width 16
(conv kernels, BatchNorm scales and shifts, the head), equal to a layer-by-layer count of the
reference constructor (fyu/drn `drn_d_22`, layers [1, 1, 2, 2, 2, 2, 1, 1]) in
tests/test_drn.py: the "about 16.4M" quoted for it.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from disal_jax.models.resnet import BN_EPSILON, BN_MOMENTUM

# the reference's init: normal(0, sqrt(2 / (k * k * out_channels)))
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
MULTIPLIERS = (1, 2, 4, 8, 16, 32, 32, 32)
LAYERS_22 = (1, 1, 2, 2, 2, 2, 1, 1)


def _conv(features, kernel, strides=1, dilation=1, dtype=jnp.float32, name=None):
  pad = dilation * (kernel // 2)
  return nn.Conv(
    features,
    (kernel, kernel),
    (strides, strides),
    padding=pad,
    kernel_dilation=dilation,
    use_bias=False,
    kernel_init=conv_init,
    dtype=dtype,
    name=name,
  )


def _norm(train: bool, dtype):
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    use_fast_variance=False,
    dtype=dtype,
  )


class DilatedBlock(nn.Module):
  """The reference's BasicBlock with dilations (d1, d2) of its two 3x3 convolutions."""

  filters: int
  strides: int = 1
  dilation: tuple[int, int] = (1, 1)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    residual = x
    y = _conv(self.filters, 3, self.strides, self.dilation[0], self.dtype)(x)
    y = nn.relu(_norm(train, self.dtype)(y))
    y = _conv(self.filters, 3, 1, self.dilation[1], self.dtype)(y)
    y = _norm(train, self.dtype)(y)
    if self.strides != 1 or x.shape[-1] != self.filters:
      residual = _conv(self.filters, 1, self.strides, 1, self.dtype)(x)
      residual = _norm(train, self.dtype)(residual)
    return nn.relu(y + residual)


class DRNBackbone(nn.Module):
  """Layers 0-8; returns the 1/8-resolution map and the maps after layers 3, 4, 6 and 8."""

  width: int = 16
  layers: tuple[int, ...] = LAYERS_22
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = [self.width * m for m in MULTIPLIERS]
    conv_layer = lambda y, features, strides=1, dilation=1: nn.relu(
      _norm(train, self.dtype)(_conv(features, 3, strides, dilation, self.dtype)(y))
    )
    x = nn.relu(_norm(train, self.dtype)(_conv(c[0], 7, dtype=self.dtype)(x)))
    for _ in range(self.layers[0]):
      x = conv_layer(x, c[0])
    for i in range(self.layers[1]):
      x = conv_layer(x, c[1], strides=2 if i == 0 else 1)
    stages = []
    for level, (strides, dilation) in zip((2, 3, 4, 5), ((2, 1), (2, 1), (1, 2), (1, 4))):
      for i in range(self.layers[level]):
        x = DilatedBlock(c[level], strides if i == 0 else 1, (dilation, dilation), self.dtype)(
          x, train
        )
      if level != 4:
        stages.append(x)
    for _ in range(self.layers[6]):
      x = conv_layer(x, c[6], dilation=2)
    for _ in range(self.layers[7]):
      x = conv_layer(x, c[7])
    stages.append(x)
    return x, stages


class DRN(nn.Module):
  """DRN-D classifier: the backbone, global average pooling, a linear head.

  `__call__` returns {'logits' (B, classes), 'features' (B, 32 * width), 'stages'}, the
  output dict the strategies read (as models.resnet.ResNet).
  """

  num_classes: int
  width: int = 16
  layers: tuple[int, ...] = LAYERS_22
  dropout_rate: float = 0.0
  train_dropout: bool = True  # False: dropout only in passes with train=False (queries)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout: bool = False):
    x, stages = DRNBackbone(self.width, self.layers, self.dtype, name="backbone")(
      x.astype(self.dtype), train
    )
    features = jnp.mean(x.astype(jnp.float32), axis=(1, 2))  # float32 as ResNet's
    pooled = features
    if self.dropout_rate:
      active = dropout and (self.train_dropout or not train)
      pooled = nn.Dropout(self.dropout_rate, deterministic=not active)(pooled)
    logits = nn.Dense(self.num_classes, name="fc")(pooled)
    return {"logits": logits, "features": features, "stages": stages}


class DRNSeg(nn.Module):
  """DRN-D segmentation: a 1x1 classifier on the 1/8 map, bilinear upsampling to the input.

  Returns {'logits': (B, H, W, classes), 'features': (B, 32 * width) the image-level mean of
  the 1/8 feature map (CoreSet's embedding), 'feature_map': (B, H/8, W/8, 32 * width),
  'stages'}. With dropout_rate > 0, dropout acts on the feature map before the classifier.
  """

  num_classes: int
  width: int = 16
  layers: tuple[int, ...] = LAYERS_22
  dropout_rate: float = 0.0
  train_dropout: bool = True  # False: dropout only in passes with train=False (queries)
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False, dropout: bool = False):
    height, width = x.shape[1:3]
    feature_map, stages = DRNBackbone(self.width, self.layers, self.dtype, name="backbone")(
      x.astype(self.dtype), train
    )
    features = jnp.mean(feature_map.astype(jnp.float32), axis=(1, 2))
    if self.dropout_rate:
      active = dropout and (self.train_dropout or not train)
      feature_map = nn.Dropout(self.dropout_rate, deterministic=not active)(feature_map)
    logits = nn.Conv(self.num_classes, (1, 1), kernel_init=conv_init, name="seg")(feature_map)
    logits = jax.image.resize(
      logits.astype(jnp.float32), (logits.shape[0], height, width, self.num_classes), "bilinear"
    )
    return {"logits": logits, "features": features, "feature_map": feature_map, "stages": stages}


DRN_D_22 = functools.partial(DRN, layers=LAYERS_22)

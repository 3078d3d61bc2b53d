"""Model registry: name -> constructor taking (config.model, num_classes)."""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from disal_jax.models import drn, resnet

Builder = Callable[[ml_collections.ConfigDict, int], nn.Module]

_MODELS: dict[str, Builder] = {
  "resnet18": lambda cfg, num_classes: resnet.ResNet18(
    num_classes=num_classes,
    width=cfg.width,
    stem=cfg.stem,
    dropout_rate=cfg.dropout_rate,
    train_dropout=cfg.train_dropout,
    dtype=jnp.dtype(cfg.dtype),
  ),
  # model.width is the first layer's channels: 16 for the reference DRN-D-22.
  "drn_d_22": lambda cfg, num_classes: drn.DRN_D_22(
    num_classes=num_classes,
    width=cfg.width,
    dropout_rate=cfg.dropout_rate,
    train_dropout=cfg.train_dropout,
    dtype=jnp.dtype(cfg.dtype),
  ),
  # Per-pixel logits at the input size (Cityscapes).
  "drn_d_22_seg": lambda cfg, num_classes: drn.DRNSeg(
    num_classes=num_classes,
    width=cfg.width,
    dropout_rate=cfg.dropout_rate,
    train_dropout=cfg.train_dropout,
    dtype=jnp.dtype(cfg.dtype),
  ),
}
_SEGMENTATION = frozenset({"drn_d_22_seg"})


def is_segmentation(name: str) -> bool:
  """Whether the model returns per-pixel logits (B, H, W, C)."""
  return name in _SEGMENTATION


def names(segmentation: bool | None = None) -> list[str]:
  """Every model's name, or only the segmentation (True) or classification (False) ones."""
  return sorted(n for n in _MODELS if segmentation is None or is_segmentation(n) == segmentation)


def build_model(cfg: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  """The linen model `cfg.name` with `num_classes` outputs; KeyError for an unknown name."""
  if cfg.name not in _MODELS:
    raise KeyError(f"Unknown model {cfg.name!r}; known models: {names()}")
  return _MODELS[cfg.name](cfg, num_classes)

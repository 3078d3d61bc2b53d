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
        num_classes=num_classes, width=cfg.width, stem=cfg.stem,
        dropout_rate=cfg.dropout_rate, dtype=jnp.dtype(cfg.dtype)),
    # model.width is the first layer's channels: 16 for the reference DRN-D-22.
    "drn_d_22": lambda cfg, num_classes: drn.DRN_D_22(
        num_classes=num_classes, width=cfg.width, dropout_rate=cfg.dropout_rate,
        dtype=jnp.dtype(cfg.dtype)),
}


def names() -> list[str]:
  return sorted(_MODELS)


def build_model(cfg: ml_collections.ConfigDict, num_classes: int) -> nn.Module:
  if cfg.name not in _MODELS:
    raise KeyError(f"Unknown model {cfg.name!r}; known models: {names()}")
  return _MODELS[cfg.name](cfg, num_classes)

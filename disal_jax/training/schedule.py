"""Learning rate per epoch: the step schedule of docs/method.md (x0.1 after 80% of the epochs)."""

from __future__ import annotations

import ml_collections


def decay_epoch(train_cfg: ml_collections.ConfigDict) -> int:
  return int(train_cfg.lr_decay_at * train_cfg.epochs)


def learning_rate(train_cfg: ml_collections.ConfigDict, epoch: int) -> float:
  factor = train_cfg.lr_decay_factor if epoch >= decay_epoch(train_cfg) else 1.0
  return float(train_cfg.learning_rate * factor)

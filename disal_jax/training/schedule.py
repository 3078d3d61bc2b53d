"""A cycle's learning-rate schedule: an optax schedule over the cycle's optimizer steps.

train.lr_schedule (docs/method.md):
  'step' (default): train.learning_rate, multiplied by train.lr_decay_factor from epoch
    int(lr_decay_at * epochs) on (x0.1 after 80% of the epochs), i.e. from step
    int(lr_decay_at * epochs) * steps_per_epoch.
  'cosine': cosine decay from train.learning_rate to 0 over the cycle's steps.
train.warmup_fraction > 0 replaces the first that fraction of the cycle's steps with a
linear ramp from 0 to train.learning_rate; after it, 'step' runs on at the absolute step (its
decay stays at its epoch) and 'cosine' decays over the remaining steps.

A cycle's step count is known only when the cycle starts (the steps per epoch follow from
the labeled count, disal_jax.training.trainer.steps_per_epoch). So `CycleSchedule.at` takes
`steps_per_epoch` as a value that may be traced: the optimiser holds it in its state as
data (disal_jax.training.state), and one compiled train step serves every cycle of a run.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import ml_collections
import optax

from disal_jax.config import LR_SCHEDULES


def decay_epoch(train_cfg: ml_collections.ConfigDict) -> int:
  """The first epoch of the 'step' schedule's decayed learning rate."""
  return int(train_cfg.lr_decay_at * train_cfg.epochs)


@dataclasses.dataclass(frozen=True)
class CycleSchedule:
  """The settings of a cycle's schedule (train.*): static, hashed and compared by value, so
  equal configs share one optimiser object and its compiled steps.

  Attributes:
    kind: one of config.LR_SCHEDULES.
    learning_rate: the peak (initial, or post-warmup) rate.
    decayed_rate: 'step': the rate from `decay_epoch` on, learning_rate * lr_decay_factor
      in double precision (rounded to float32 once, where it is used).
    decay_epoch: 'step': the first epoch at `decayed_rate`.
    epochs: epochs per cycle.
    warmup_fraction: the fraction of the cycle's steps ramped up from 0; 0 = none.
  """

  kind: str
  learning_rate: float
  decayed_rate: float
  decay_epoch: int
  epochs: int
  warmup_fraction: float

  def __post_init__(self):
    if self.kind not in LR_SCHEDULES:
      raise ValueError(f"learning-rate schedule {self.kind!r}: expected one of {LR_SCHEDULES}")

  def at(self, steps_per_epoch) -> optax.Schedule:
    """The schedule of a cycle with `steps_per_epoch` steps per epoch (a Python int, or an
    int32 scalar, traced inside the optimiser): count (the steps taken this cycle, int32,
    any shape) -> the learning rate of the update at that count (float32, same shape)."""
    total = self.epochs * steps_per_epoch

    def progress(count):
      """The fraction of the cycle's steps before `count`: count / total, float32."""
      return jnp.asarray(count).astype(jnp.float32) / jnp.asarray(total).astype(jnp.float32)

    if self.kind == "step":
      # integer steps: the decay starts exactly at its epoch's first step
      main = optax.join_schedules(
        [optax.constant_schedule(self.learning_rate), optax.constant_schedule(self.decayed_rate)],
        [self.decay_epoch * steps_per_epoch],
      )
    else:
      # over the progress, not the steps: optax's checks want a Python int step count, and
      # the cycle's is traced; after a warmup, over what remains of the cycle
      cosine = optax.cosine_decay_schedule(
        self.learning_rate, decay_steps=1.0 - self.warmup_fraction
      )

      def main(count):
        return cosine(progress(count) - self.warmup_fraction)

    if not self.warmup_fraction:
      return lambda count: jnp.asarray(main(count), jnp.float32)
    warmup = optax.linear_schedule(0.0, self.learning_rate, transition_steps=self.warmup_fraction)

    def schedule(count):
      # optax.join_schedules would restart the main schedule's count at the warmup's end:
      # the step schedule's decay must stay at its epoch
      p = progress(count)
      return jnp.where(p < self.warmup_fraction, warmup(p), main(count)).astype(jnp.float32)

    return schedule


def cycle_schedule(train_cfg: ml_collections.ConfigDict) -> CycleSchedule:
  """The schedule `train_cfg` (config.train) sets."""
  return CycleSchedule(
    kind=str(train_cfg.lr_schedule),
    learning_rate=float(train_cfg.learning_rate),
    decayed_rate=float(train_cfg.learning_rate * train_cfg.lr_decay_factor),
    decay_epoch=decay_epoch(train_cfg),
    epochs=int(train_cfg.epochs),
    warmup_fraction=float(train_cfg.warmup_fraction),
  )

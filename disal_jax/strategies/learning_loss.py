"""Learning Loss (Yoo & Kweon): a module on the four stage maps learns to predict each sample's
loss, trained jointly with the backbone; the score is the predicted loss (docs/strategies.md).

Training (one jitted step updates backbone and module): the batch's samples are paired i with
B-1-i, and the module's predictions l_hat are fitted to the order of the true cross-entropies l
with the margin ranking loss
    L = mean_pairs max(0, margin - s (l_hat_i - l_hat_j)),  s = +1 if l_i > l_j else -1
(the reference's sign convention: a tie counts as -1), total = CE + weight * L. The true losses
are constants (no gradient through them). After epoch round(detach_fraction * epochs) (from
epoch 121 of 200, counted from 0: the reference's `epoch > 120`) the module's input is
detached, so the ranking loss no longer shapes the backbone.
Scoring: the module on the eval-mode stage maps of the pool; top-K predicted loss.
Segmentation: a sample's true loss is its image's mean cross-entropy over labelled pixels
(of the training crop); the module predicts that per-image number from the DRN stage maps.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.models import stage_head
from disal_jax.strategies.base import (
  ConfigSection,
  ReferenceProtocol,
  ScoringContext,
  Strategy,
  batched_pool_scores,
)
from disal_jax.training import pixels
from disal_jax.training.augment import Preprocess
from disal_jax.training.trainer import TrainHook


def ranking_loss(predicted: jax.Array, target: jax.Array, margin: float) -> jax.Array:
  """Margin ranking loss over the pairs (i, B-1-i), i < B // 2. predicted, target: (B,)."""
  half = predicted.shape[0] // 2
  diff = (predicted - predicted[::-1])[:half]
  sign = jnp.where((target - target[::-1])[:half] > 0, 1.0, -1.0)
  return jnp.mean(jnp.maximum(0.0, margin - sign * diff))


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossPredictionHook(stage_head.DetachingHeadHook, TrainHook):
  """Learning Loss's addition to the train step (see training.trainer.TrainHook)."""

  weight: float
  margin: float
  hidden: int
  detach_from_epoch: int

  @property
  def head(self) -> stage_head.StageHead:
    """The loss prediction module: the stage maps -> (B, 1)."""
    return stage_head.StageHead(outputs=1, hidden=self.hidden)

  def init_params(self, rng, params, sample_outputs):
    """`params` with the loss prediction module's parameters added."""
    return stage_head.init_params(self.head, rng, params, sample_outputs)

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess: Preprocess):
    """(weight x ranking loss of the predicted per-sample losses, metrics, extras)."""
    del aux, rng, preprocess
    true_loss = jax.lax.stop_gradient(
      pixels.per_sample_cross_entropy(outputs["logits"], batch["labels"])
    )
    predicted = stage_head.apply(self.head, params, outputs["stages"], batch["detach_head"])
    value = ranking_loss(predicted[:, 0], true_loss, self.margin)
    return self.weight * value, {"ranking_loss": value}, state.extras


def make_hook(config: ml_collections.ConfigDict) -> LossPredictionHook:
  """The LossPredictionHook of the learning_loss config section."""
  ll = config.learning_loss
  return LossPredictionHook(
    weight=float(ll.weight),
    margin=float(ll.margin),
    hidden=int(ll.hidden),
    detach_from_epoch=stage_head.detach_epoch(config.train.epochs, float(ll.detach_fraction)),
  )


@functools.partial(jax.jit, static_argnames=("preprocess", "head"))
def predicted_losses(
  state, data, batch, *, preprocess: Preprocess, head: stage_head.StageHead
) -> jax.Array:
  """(B,) float32 predicted loss of rows batch['index'], model in eval mode."""
  images = preprocess.normalise(data.images_at(batch["index"]))
  outputs = state.apply_fn(state.variables(), images, train=False)
  return stage_head.apply(head, state.params, outputs["stages"])[:, 0]


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 predicted losses of the pool."""
  head = make_hook(ctx.config).head
  fn = functools.partial(predicted_losses, preprocess=ctx.data.preprocess, head=head)
  return batched_pool_scores(ctx, fn, ctx.result.state)


def defaults() -> ml_collections.ConfigDict:
  """The learning_loss config section's defaults."""
  s = ml_collections.ConfigDict()
  s.weight = 1.0  # of the ranking loss
  s.margin = 1.0  # of the ranking loss
  s.hidden = 128  # per-stage width of the module
  # The module's input is detached from epoch round(detach_fraction * epochs) on (epoch 121
  # of 200, counted from 0: the reference's `epoch > 120`); 1.0 never detaches.
  s.detach_fraction = 0.6
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the learning_loss section's values are invalid."""
  del num_devices
  stage_head.check_keys(config, "learning_loss")
  check_value(
    config.learning_loss.margin >= 0, "learning_loss.margin", config.learning_loss.margin, ">= 0"
  )


# al.protocol='reference': how the published code runs a cycle.
REFERENCE = ReferenceProtocol(
  subset_size=10_000,
  warm_start=True,
  source=(
    "Mephisto405/Learning-Loss-for-Active-Learning config.py:9 (SUBSET = 10000), "
    "main.py:230-236 (model built before the cycle loop), main.py:258-259"
  ),
)

STRATEGY = Strategy(
  name="learning_loss",
  record="none",
  score=score,
  make_hook=make_hook,
  description="Learning Loss: a jointly trained loss-prediction module",
  segmentation=True,
  config_section=ConfigSection("learning_loss", defaults, check),
  reference=REFERENCE,
)

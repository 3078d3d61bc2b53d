"""TiDAL (Kye et al.): a module on the stage maps learns each sample's training dynamics, the
running mean of the softmax outputs it received during training; the score is the uncertainty
of the module's prediction on the unlabeled pool (docs/strategies.md).

Training (one jitted step updates backbone, module and the running means):
- state.extras holds, for every training-set row, the running mean p_bar (N, C) and how many
  outputs went into it (N,). The step folds the batch's training-mode softmax outputs in,
  p_bar <- (n * p_bar + p) / (n + 1), n <- n + 1, once per epoch per labeled sample (the last
  batch's random fill is not folded in), so n is its epoch count, as in the reference's
  (e * p_bar + p_e) / (e + 1).
- loss = CE + weight * mean_i KL(p_bar_i || softmax(m(x_i))), with the updated p_bar as a
  constant target. The module's input stays attached to the backbone (the reference's);
  `tidal.detach_fraction` < 1 detaches it as Learning Loss does (stage_head.detach_epoch).
- The running means describe one cycle: a warm-started cycle starts them afresh (the
  reference's mean restarts at epoch 0 of every cycle).
Scoring: softmax(m(x)) on the pool's eval-mode stage maps; 'entropy' (default) or 'margin'
(score = -(top-1 - top-2), the smallest margin first).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import ClassVar

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
  entropy,
)
from disal_jax.training.augment import Preprocess
from disal_jax.training.trainer import TrainHook

MEAN, COUNT = "tidal_mean", "tidal_count"


def update_running_mean(
  mean: jax.Array, count: jax.Array, rows: jax.Array, probs: jax.Array, fresh: jax.Array
) -> tuple[jax.Array, jax.Array]:
  """Folds probs (B, C) into the running means of `rows` (B,): returns new (mean, count).

  mean: (N, C) float32, count: (N,) float32. Only rows marked `fresh` (B,) bool are folded in:
  the trainer marks each labeled sample's first appearance in an epoch, so the random fill of
  the last batch (which repeats samples) neither counts twice nor writes a row twice.
  """
  n = count[rows][:, None]
  new_rows = (n * mean[rows] + probs) / (n + 1.0)
  target = jnp.where(fresh, rows, mean.shape[0])  # out of bounds: dropped
  return (
    mean.at[target].set(new_rows, mode="drop"),
    count.at[target].set(count[rows] + 1.0, mode="drop"),
  )


def kl_to_module(target: jax.Array, module_logits: jax.Array) -> jax.Array:
  """(B,) KL(target || softmax(module_logits)); 0 log 0 = 0."""
  log_q = jax.nn.log_softmax(module_logits.astype(jnp.float32), axis=-1)
  return jnp.sum(jax.scipy.special.xlogy(target, target) - target * log_q, axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicsHook(stage_head.DetachingHeadHook, TrainHook):
  """TiDAL's addition to the train step (see training.trainer.TrainHook)."""

  weight: float
  hidden: int
  detach_from_epoch: int
  extras_per_cycle: ClassVar[bool] = True  # the running means restart every cycle

  def head(self, num_classes: int) -> stage_head.StageHead:
    """The training-dynamics module: the stage maps -> (B, num_classes) logits."""
    return stage_head.StageHead(outputs=num_classes, hidden=self.hidden)

  def init_params(self, rng, params, sample_outputs):
    """`params` with the training-dynamics module's parameters added."""
    head = self.head(sample_outputs["logits"].shape[-1])
    return stage_head.init_params(head, rng, params, sample_outputs)

  def init_extras(self, num_train: int, num_classes: int, params) -> dict:
    """The running mean of each training row's predictions: (num_train, C) float32 and
    its (num_train,) float32 count."""
    del params
    return {
      MEAN: jnp.zeros((num_train, num_classes), jnp.float32),
      COUNT: jnp.zeros((num_train,), jnp.float32),
    }

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess: Preprocess):
    """(weight x KL(running mean || module), metrics, extras with the mean updated)."""
    del data, aux, rng, preprocess
    rows = batch["index"]
    probs = jax.nn.softmax(jax.lax.stop_gradient(outputs["logits"]).astype(jnp.float32))
    mean, count = update_running_mean(
      state.extras[MEAN], state.extras[COUNT], rows, probs, batch["fresh"]
    )
    head = self.head(outputs["logits"].shape[-1])
    predicted = stage_head.apply(head, params, outputs["stages"], batch["detach_head"])
    value = jnp.mean(kl_to_module(mean[rows], predicted))
    return self.weight * value, {"dynamics_kl": value}, {**state.extras, MEAN: mean, COUNT: count}


def make_hook(config: ml_collections.ConfigDict) -> DynamicsHook:
  """The DynamicsHook of the tidal config section."""
  t = config.tidal
  return DynamicsHook(
    weight=float(t.weight),
    hidden=int(t.hidden),
    detach_from_epoch=stage_head.detach_epoch(config.train.epochs, float(t.detach_fraction)),
  )


def uncertainty(module_logits: jax.Array, kind: str) -> jax.Array:
  """(B,) score of the module's prediction: its entropy, or minus its top-2 margin."""
  probs = jax.nn.softmax(module_logits.astype(jnp.float32), axis=-1)
  if kind == "entropy":
    return entropy(probs)
  top2 = jax.lax.top_k(probs, 2)[0]
  return -(top2[:, 0] - top2[:, 1])


@functools.partial(jax.jit, static_argnames=("preprocess", "head", "kind"))
def dynamics_scores(
  state, data, batch, *, preprocess: Preprocess, head: stage_head.StageHead, kind: str
) -> jax.Array:
  """(B,) float32 uncertainty of the module's prediction for rows batch['index'] (eval mode)."""
  images = preprocess.normalise(data.images_at(batch["index"]))
  outputs = state.apply_fn(state.variables(), images, train=False)
  return uncertainty(stage_head.apply(head, state.params, outputs["stages"]), kind)


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 entropy or margin of the module's predictions (tidal.score)."""
  head = make_hook(ctx.config).head(ctx.data.dataset.num_classes)
  fn = functools.partial(
    dynamics_scores, preprocess=ctx.data.preprocess, head=head, kind=ctx.config.tidal.score
  )
  return batched_pool_scores(ctx, fn, ctx.result.state)


SCORES = ("entropy", "margin")


def defaults() -> ml_collections.ConfigDict:
  """The tidal config section's defaults."""
  s = ml_collections.ConfigDict()
  s.weight = 1.0  # of KL(p_bar || module)
  s.hidden = 128  # per-stage width of the module
  # Detach the module's input from epoch round(detach_fraction * epochs) on; 1.0 never, as
  # the TiDAL reference (which detaches Learning Loss's module only).
  s.detach_fraction = 1.0
  s.score = "entropy"  # or 'margin'
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the tidal section's values are invalid."""
  del num_devices
  stage_head.check_keys(config, "tidal")
  check_value(config.tidal.score in SCORES, "tidal.score", config.tidal.score, f"one of {SCORES}")


# al.protocol='reference': how the published code runs a cycle.
REFERENCE = ReferenceProtocol(
  subset_size=10_000,
  warm_start=True,
  source=(
    "hyperconnect/TiDAL main.py:64-67 (subset 10000), main.py:115-117 and 137 (model "
    "built before the cycle loop), main.py:138-141"
  ),
)

STRATEGY = Strategy(
  name="tidal",
  record="none",
  score=score,
  make_hook=make_hook,
  description="TiDAL: a module predicting training dynamics; its uncertainty",
  config_section=ConfigSection("tidal", defaults, check),
  reference=REFERENCE,
)

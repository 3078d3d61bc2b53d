"""DISAL: dynamic influence based selection (../shared/METHOD.md, "DISAL").

1. Record: each epoch the pool's softmax outputs fold into a running mean p_bar(u) on device
   (disal_jax.training.record; weighting per config.record.weighting).
2. Dynamic loss: each train step draws `disal.dynamic_batch_size` pool samples and adds
   lambda * mean_u CE(p_bar(u), p_theta(u)) after `disal.dynamic_warmup_epochs` epochs.
3. Direction: d = theta_start - theta_end of the cycle (or the SGD momentum buffer).
4. Score: s(u) = <grad_theta l_dyn(u; theta_end), d>, all samples from one forward-mode pass
   per batch (jax.jvp of the per-sample loss vector along d); or ||grad_theta l_dyn(u)||.
   Top-K.

Notes on choices the sources leave open (each is a config key):
- The dynamic branch runs in train mode on augmented pool images (like the labeled branch);
  its BatchNorm statistics updates are discarded, so lambda = 0 trains exactly as plain
  training (running statistics come from labeled data only).
- 'kl' and 'ce' differ by the entropy of p_bar, a constant in theta: same gradients, same
  scores; only the logged loss value differs.
- Segmentation (METHOD.md 5): p_bar is recorded at the reduced resolution of
  config.record.pixel_stride; l_dyn(u) is the mean over those pixels of the per-pixel soft
  CE between p_bar and the block-mean logits (every pixel of an unlabeled image counts, none
  is known to be void). The dynamic branch sees whole pool images, normalised but neither
  cropped nor flipped, so they stay aligned with their recorded p_bar.
- The ablations: `disal.dynamic_weight=0` trains without the dynamic loss but scores with the
  recorded target; `disal.score_target='expected'` scores without the dynamic target, with the
  expected loss under the model's own prediction, E_{y~p_theta} CE(y, p_theta) = H(p_theta),
  differentiated through p_theta. (With p_theta held fixed as a target, the gradient of
  CE(p, p_theta) vanishes at p_theta = p, so that variant would score everything 0.)
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.strategies import per_sample
from disal_jax.strategies.base import (ScoringContext, Strategy, batch_logits,
                                       batched_pool_scores, entropy_of_logits,
                                       per_sample_batch_size)
from disal_jax.training import pixels
from disal_jax.training.augment import Preprocess
from disal_jax.training.state import momentum_trace


def score_losses(logits: jax.Array, target: jax.Array, kind: str, score_target: str
                 ) -> jax.Array:
  """Per-sample losses (B,) whose gradients DISAL scores: the dynamic loss against p_bar
  ('dynamic'), or the entropy of the prediction ('expected', the no-dynamic-target ablation);
  segmentation: the mean over the recorded pixels."""
  if score_target == "expected":
    return pixels.mean_over_pixels(entropy_of_logits(logits))
  return dynamic_loss(logits, target, kind)


def dynamic_loss(logits: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-sample soft-target loss (B,) between p_bar `target` and softmax(logits), both (B, C),
  or for segmentation both (B, h, w, C), averaged over the pixels."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  ce = -jnp.sum(target * log_p, axis=-1)
  if kind == "kl":
    ce = ce + jnp.sum(jax.scipy.special.xlogy(target, target), axis=-1)
  return pixels.mean_over_pixels(ce)


@dataclasses.dataclass(frozen=True)
class DynamicLossHook:
  """DISAL's addition to the train step (see disal_jax.training.trainer.TrainHook)."""
  weight: float
  warmup_epochs: int
  batch_size: int
  kind: str
  pixel_stride: int = 1  # segmentation: the record's resolution

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess: Preprocess):
    del outputs
    position = batch["pool_position_index"]  # (Bp,) positions in the recorded pool
    rows = aux["pool_index"][position]
    target = aux["target"][position]
    if data.labels.ndim > 1:  # segmentation: whole images, aligned with the recorded p_bar
      images = preprocess.normalise(data.images[rows])
    else:
      images = preprocess.augment(data.images[rows], rng)
    pool_outputs, _ = state.apply_fn(state.variables(params), images, train=True,
                                     mutable=["batch_stats"])  # statistics updates dropped
    logits = pixels.to_record_resolution(pool_outputs["logits"], self.pixel_stride)
    value = dynamic_loss(logits, target, self.kind).mean()
    return batch["dynamic_weight"] * value, {"dynamic_loss": value}, state.extras

  def epoch_inputs(self, rng: np.random.Generator, epoch: int, num_steps: int,
                   pool_size: int) -> dict[str, np.ndarray]:
    weight = self.weight if epoch >= self.warmup_epochs else 0.0
    return {"pool_position_index": rng.integers(0, pool_size, (num_steps, self.batch_size),
                                                dtype=np.int32),
            "dynamic_weight": np.full((num_steps,), weight, np.float32)}

  def aux(self, record, pool_index):
    return {"pool_index": pool_index, "target": record.mean}


def make_hook(config: ml_collections.ConfigDict) -> Optional[DynamicLossHook]:
  """The dynamic-loss hook, or None for lambda = 0: plain train steps (the pool is still
  recorded for the score), without a pool batch's forward and backward that adds nothing."""
  s = config.disal
  if s.dynamic_weight == 0:
    return None
  return DynamicLossHook(float(s.dynamic_weight), int(s.dynamic_warmup_epochs),
                         int(s.dynamic_batch_size), s.dynamic_loss,
                         int(config.record.pixel_stride))


@functools.partial(jax.jit, static_argnames=("preprocess", "kind", "score_target",
                                             "pixel_stride"))
def projection_scores(scoring, data, batch, *, preprocess: Preprocess, kind: str,
                      score_target: str = "dynamic", pixel_stride: int = 1) -> jax.Array:
  """<grad_theta l_dyn(u; theta), d> for a batch, (B,) float32, by one jax.jvp.

  Args:
    scoring: {'state': TrainState at theta_end, 'direction': params-shaped d}.
    data: DeviceData of the training split.
    batch: {'index': (B,) rows, 'target': (B, C) p_bar, or (B, h, w, C) for segmentation}.
  Cost: about one forward and one forward-mode pass of the batch (no per-sample gradients).
  BatchNorm in eval mode, so each sample's loss depends on that sample alone.
  """
  state = scoring["state"]
  images = preprocess.normalise(data.images[batch["index"]])

  def losses(params):
    logits = state.apply_fn(state.variables(params), images, train=False)["logits"]
    logits = pixels.to_record_resolution(logits, pixel_stride)
    return score_losses(logits, batch["target"], kind, score_target)

  return jax.jvp(losses, (state.params,), (scoring["direction"],))[1]


@functools.partial(jax.jit, static_argnames=("preprocess", "kind", "score_target", "engine",
                                             "pixel_stride"))
def gradient_norm_scores(scoring, data, batch, *, preprocess: Preprocess, kind: str,
                         engine: per_sample.Engine, score_target: str = "dynamic",
                         pixel_stride: int = 1) -> jax.Array:
  """||grad_theta l_dyn(u; theta)|| over all parameters, (B,) float32, by `engine`."""
  state = scoring["state"]
  loss = lambda logits, target: score_losses(logits, target, kind, score_target)
  return jnp.sqrt(engine.grad_sq_norms(batch_logits(state, preprocess, pixel_stride),
                                       state.variables(state.params),
                                       data.images[batch["index"]], loss, batch["target"]))


def direction(ctx: ScoringContext):
  """d: theta_start - theta_end (the sum of the cycle's updates, sign flipped), or momentum."""
  state = ctx.result.state
  if ctx.config.disal.direction == "momentum":
    return momentum_trace(state)
  return jax.tree.map(lambda start, end: start - end, ctx.result.start_params, state.params)


def disal_scores(ctx: ScoringContext) -> np.ndarray:
  s = ctx.config.disal
  scoring = {"state": ctx.result.state, "direction": direction(ctx)}
  extra = {"target": ctx.result.record.mean}
  batch_size = None
  if s.score == "projection":
    fn = functools.partial(projection_scores, preprocess=ctx.trainer.preprocess,
                           kind=s.dynamic_loss, score_target=s.score_target,
                           pixel_stride=ctx.trainer.pixel_stride)
  else:
    engine = per_sample.engine_from_config(ctx.config, s.norm_chunk_size)
    fn = functools.partial(gradient_norm_scores, preprocess=ctx.trainer.preprocess,
                           kind=s.dynamic_loss, score_target=s.score_target, engine=engine,
                           pixel_stride=ctx.trainer.pixel_stride)
    batch_size = per_sample_batch_size(ctx, fn, scoring, engine.samples_per_call(), extra)
  return batched_pool_scores(ctx, fn, scoring, extra, batch_size)


STRATEGY = Strategy(name="disal", record="mean", score=disal_scores, make_hook=make_hook,
                    description="dynamic influence: <grad of the dynamic loss, accumulated update>",
                    segmentation=True)

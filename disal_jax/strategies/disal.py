"""DISAL: dynamic influence based selection (docs/disal.md).

1. Target: each pool sample's predictions across a cycle's training fold into p_bar(u)
   (config.record.weighting: running mean, bias-corrected EMA, or lr-weighted), from
   `disal.target_source`: an eval-mode pass over the pool after every epoch ('eval_pass',
   kept in the trainer's PoolRecord), or the dynamic branch's own train-mode predictions,
   each sample folded in when its batch is drawn ('train_branch', kept per training row in
   state.extras: no separate pass over the pool).
2. Dynamic loss: each train step draws `disal.dynamic_batch_size` pool samples (shuffled
   passes over the pool) and adds w_t * mean_u D(p_bar(u), p_theta(u)), D one of soft CE / KL
   / MSE between probability vectors; w_t is lambda from `disal.dynamic_warmup_epochs` on,
   constant or ramped up as exp(-5 (1 - t)^2), optionally times the labeled fraction.
   A sample without a target yet counts 0 in the mean.
3. Direction: d = theta_start - theta_end of the cycle (or the SGD momentum buffer).
4. Score: s(u) = <grad_theta l_dyn(u; theta_end), d>, all samples from one forward-mode pass
   per batch (jax.jvp of the per-sample loss vector along d); or ||grad_theta l_dyn(u)||.
   Top-K.

Notes on choices the sources leave open (each is a config key):
- The dynamic branch runs in train mode on augmented pool images (like the labeled branch).
  `disal.branch='separate'`: its own forward pass, its BatchNorm statistics updates
  discarded, so lambda = 0 trains exactly as plain training (running statistics come from
  labeled data only). 'joint': the pool batch is appended to the labeled batch's forward
  pass (as FixMatch-style semi-supervised training does): one pass of B + Bp images, cheaper
  than two, but BatchNorm's batch and running statistics then cover both batches, so
  lambda = 0 is plain training with the pool batch in the statistics.
- 'kl' and 'ce' differ by the entropy of p_bar, a constant in theta: same gradients, same
  scores; only the logged loss value differs.
- Segmentation (docs/disal.md): p_bar is recorded at the reduced resolution of
  config.record.pixel_stride by the eval pass; l_dyn(u) is the mean over those pixels of the
  per-pixel divergence between p_bar and the block-mean logits (every pixel of an unlabeled
  image counts, none is known to be void). The dynamic branch sees whole pool images,
  normalised but neither cropped nor flipped, so they stay aligned with their recorded p_bar.
- The ablations: `disal.dynamic_weight=0` trains without the dynamic loss but scores with the
  recorded target; `disal.score_target='expected'` scores without the dynamic target, with the
  expected loss under the model's own prediction, E_{y~p_theta} CE(y, p_theta) = H(p_theta),
  differentiated through p_theta. (With p_theta held fixed as a target, the gradient of
  CE(p, p_theta) vanishes at p_theta = p, so that variant would score everything 0.)
- A pool sample the train branch never drew has no target (an all-zero row): its loss and
  its score are 0.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax import pool as pool_lib
from disal_jax.errors import ConfigError, check_value
from disal_jax.strategies import per_sample, selectors
from disal_jax.strategies import random as random_strategy
from disal_jax.strategies.base import (
  TIE_BREAK_STREAM,
  ConfigSection,
  ScoringContext,
  Strategy,
  batch_logits,
  batched_pool_scores,
  entropy_of_logits,
  per_sample_batch_size,
  pool_capacity,
  select_top_k,
)
from disal_jax.training import pixels
from disal_jax.training import record as record_lib
from disal_jax.training.augment import Preprocess
from disal_jax.training.state import momentum_trace
from disal_jax.training.trainer import CycleShape, TrainHook, steps_per_epoch

log = logging.getLogger(__name__)


SCORES = ("projection", "norm")
SELECTIONS = ("top_k", "class_balanced")
LOSSES = ("ce", "kl", "mse")
TARGET_SOURCES = ("eval_pass", "train_branch")
BRANCHES = ("separate", "joint")
WEIGHT_SCHEDULES = ("constant", "rampup")
WEIGHT_SCALES = ("none", "labeled_fraction")
DIRECTIONS = ("delta", "momentum")
SCORE_TARGETS = ("dynamic", "expected")
LOSS_GUARDS = ("adapt", "refuse", "off")


def score_losses(logits: jax.Array, target: jax.Array, kind: str, score_target: str) -> jax.Array:
  """Per-sample losses (B,) whose gradients DISAL scores: the dynamic loss against p_bar
  ('dynamic'), or the entropy of the prediction ('expected', the no-dynamic-target ablation);
  segmentation: the mean over the recorded pixels."""
  if score_target == "expected":
    return pixels.mean_over_pixels(entropy_of_logits(logits))
  return dynamic_loss(logits, target, kind)


def dynamic_loss(logits: jax.Array, target: jax.Array, kind: str) -> jax.Array:
  """Per-sample divergence (B,) between p_bar `target` and softmax(logits), both (B, C), or
  for segmentation both (B, h, w, C), averaged over the pixels.

  'ce': -sum_c p_bar_c log p_c; 'kl': 'ce' minus the entropy of p_bar; 'mse': the mean over
  classes of (p_c - p_bar_c)^2 (bounded, as consistency losses use). A target row of zeros
  (no prediction recorded yet) gives 0.
  """
  logits = logits.astype(jnp.float32)
  if kind == "mse":
    value = jnp.mean(jnp.square(jax.nn.softmax(logits, axis=-1) - target), axis=-1)
  else:
    value = -jnp.sum(target * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    if kind == "kl":
      value = value + jnp.sum(jax.scipy.special.xlogy(target, target), axis=-1)
  has_target = jnp.sum(target, axis=-1) > 0
  return pixels.mean_over_pixels(jnp.where(has_target, value, 0.0))


# state.extras keys of the train-branch target: per training row, p_bar (N, C), the weight
# folded into it (N,), as in disal_jax.training.record.fold, and the cycle step of its last
# fold (N,) float32 (NEVER_FOLDED before the first).
TARGET_MEAN = "disal_target_mean"
TARGET_WEIGHT = "disal_target_weight"
TARGET_STEP = "disal_target_step"
NEVER_FOLDED = -1.0


def weight_schedule(
  lam: float,
  schedule: str,
  rampup_fraction: float,
  start_epoch: int,
  epochs: int,
  epoch: int,
  num_steps: int,
) -> np.ndarray:
  """The dynamic loss weight of each step of `epoch`, (num_steps,) float32.

  0 before `start_epoch`; then 'constant' lambda, or 'rampup' lambda * exp(-5 (1 - t)^2)
  where t goes from 0 at the first step of `start_epoch` to 1 after `rampup_fraction` of the
  cycle's steps (then stays 1), the temporal-ensembling ramp.
  """
  step = epoch * num_steps + np.arange(num_steps)
  first = start_epoch * num_steps
  weight = np.where(step >= first, lam, 0.0)
  if schedule == "rampup":
    t = np.clip((step - first) / max(1.0, rampup_fraction * epochs * num_steps), 0.0, 1.0)
    weight = weight * np.exp(-5.0 * np.square(1.0 - t))
  return weight.astype(np.float32)


def fresh_targets(
  target: jax.Array,
  folded_at: jax.Array,
  step: jax.Array,
  max_age: jax.Array,
  min_confidence: float = 0.0,
) -> jax.Array:
  """The train-branch targets (B, C) of drawn rows, zeroed (no target: the row counts 0 in
  the loss) where the last fold `folded_at` (B,) is more than `max_age` steps before `step`,
  or where the target's largest probability is below `min_confidence`.

  Why: a row drawn once early and again late in a cycle (a pool much larger than the cycle's
  draws) would be pulled toward a prediction the model made with a fraction of its training,
  at the ramp's full weight and the final low learning rate; a flat target (predictions that
  disagree across draws, or a model near chance) pulls toward noise (docs/disal.md).
  """
  counted = ((step - folded_at) <= max_age) & (jnp.max(target, axis=-1) >= min_confidence)
  return jnp.where(counted[:, None], target, 0.0)


# Seeds the pool draws' passes apart from the cycle's other host random streams.
POOL_DRAW_STREAM = 0xD15A


def pool_draws(
  cycle_seed: tuple[int, ...], pool_size: int, epoch: int, num_steps: int, batch_size: int
) -> np.ndarray:
  """(num_steps, batch_size) int32 pool positions for `epoch`: its slice of one sequence of
  shuffled passes over the pool that runs through the whole cycle, so every sample is drawn
  once before any is drawn again. Pass k's order derives from (cycle_seed, k) alone, so a
  resumed epoch draws what it would have."""
  total = num_steps * batch_size
  first, last = epoch * total, (epoch + 1) * total
  passes = range(first // pool_size, -(-last // pool_size))
  order = np.concatenate(
    [
      np.random.default_rng([*cycle_seed, POOL_DRAW_STREAM, k]).permutation(pool_size)
      for k in passes
    ]
  )
  offset = first - passes[0] * pool_size
  return order[offset : offset + total].reshape(num_steps, batch_size).astype(np.int32)


def unsafe_loss_reason(
  pool_size: int, branch_steps: int, batch_size: int, target_source: str, min_pool_draws: float
) -> Optional[str]:
  """Why the dynamic loss would pull toward stale targets in a cycle of these sizes, or None
  (docs/disal.md, "Few labels in a large pool").

  A train-branch target counts from a row's second draw, and a row's draws are
  1 / draws-per-row of the cycle apart: under 2 draws per row most pulls come late in the
  cycle, at the ramp's full weight and the low learning rate, toward predictions made with a
  fraction of the training (on digits the labeled accuracy then drops when they start).

  Args:
    pool_size: the cycle's pool rows.
    branch_steps: the cycle's train steps with the dynamic branch on.
    batch_size: pool samples drawn per step (disal.dynamic_batch_size).
    target_source: disal.target_source; the eval pass refreshes every target each epoch.
    min_pool_draws: the bound (disal.guard_min_pool_draws); 0 turns the guard off.

  Returns:
    One clause naming the sizes and the keys to change, or None.
  """
  draws = branch_steps * batch_size / max(1, pool_size)
  if target_source == "train_branch" and draws < min_pool_draws:
    return (
      f"the cycle draws each of its {pool_size} pool samples {draws:.2f} times, under "
      f"disal.guard_min_pool_draws={min_pool_draws:g} (raise train.min_steps or "
      "disal.dynamic_batch_size)"
    )
  return None


def cycle_guard_reasons(
  config: ml_collections.ConfigDict, num_train: int
) -> list[tuple[int, Optional[str]]]:
  """(labeled count, `unsafe_loss_reason` or None) of every cycle of a run of `config` on a
  training split of `num_train` rows: what the guard decides, known before training
  (disal.loss_guard='refuse' checks it up front)."""
  s, t = config.disal, config.train
  branch_epochs = t.epochs - branch_start_epoch(config)
  reasons = []
  for labeled in pool_lib.budget_schedule(config.al, num_train):
    pool_size = num_train - labeled
    if config.al.subset_size:
      pool_size = min(pool_size, config.al.subset_size)
    steps = steps_per_epoch(labeled, t.batch_size, t.epochs, t.min_steps)
    reasons.append(
      (
        labeled,
        unsafe_loss_reason(
          pool_size,
          branch_epochs * steps,
          s.dynamic_batch_size,
          s.target_source,
          s.guard_min_pool_draws,
        ),
      )
    )
  return reasons


@dataclasses.dataclass(frozen=True, kw_only=True)
class DynamicLossHook(TrainHook):
  """DISAL's addition to the train step (see disal_jax.training.trainer.TrainHook)."""

  weight: float
  warmup_epochs: int
  batch_size: int
  kind: str
  epochs: int
  target_source: str = "eval_pass"
  schedule: str = "constant"
  rampup_fraction: float = 0.5
  scale: str = "none"
  weighting: str = "mean"  # train branch: config.record.weighting
  ema_decay: float = 0.9
  record_start_epoch: int = 0
  pixel_stride: int = 1  # segmentation: the record's resolution
  branch: str = "separate"  # 'joint': the pool batch shares the labeled batch's forward pass
  first_epoch: int = 0  # epochs before it are plain steps (no branch, no recording)
  # Train branch: a target last folded more than this fraction of the cycle's steps ago
  # counts 0 in the loss (see `fresh_targets`); 1 = every target counts.
  target_max_age: float = 1.0
  # Train branch: a target whose largest probability is below this counts 0; 0 = off.
  target_min_confidence: float = 0.0
  # What a cycle outside the safe regime does (`unsafe_loss_reason`): 'adapt' trains it with
  # lambda = 0 (plain training; the branch still records the target the score reads),
  # 'refuse' stops before training, 'off' trains as configured.
  loss_guard: str = "off"
  guard_min_pool_draws: float = 0.0
  extras_per_cycle: ClassVar[bool] = True  # the train-branch target describes one cycle
  # each step's pool draws: positions in the padded pool index, whose rows the step reads
  pool_position_inputs: ClassVar[tuple[str, ...]] = ("pool_position_index",)

  @property
  def train_branch(self) -> bool:
    """Whether the targets are folded from the training branch's predictions."""
    return self.target_source == "train_branch"

  def init_extras(self, num_train: int, num_classes: int, params) -> dict:
    """The train-branch targets: (num_train, C) float32 mean, (num_train,) float32 weight
    and step; {} for the eval-pass target."""
    del params
    if not self.train_branch:
      return {}
    return {
      TARGET_MEAN: jnp.zeros((num_train, num_classes), jnp.float32),
      TARGET_WEIGHT: jnp.zeros((num_train,), jnp.float32),
      TARGET_STEP: jnp.full((num_train,), NEVER_FOLDED, jnp.float32),
    }

  def _pool_images(self, data, batch, aux, rng, preprocess: Preprocess) -> jax.Array:
    rows = aux["pool_index"][batch["pool_position_index"]]
    if data.labels.ndim > 1:  # segmentation: whole images, aligned with the recorded p_bar
      return preprocess.normalise(data.images_at(rows))
    return preprocess.augment(data.images_at(rows), rng)

  def joint_images(self, state, data, batch, aux, rng, *, preprocess: Preprocess):
    """The pool batch, run in the labeled batch's forward pass when branch='joint'."""
    del state
    if self.branch != "joint":
      return None
    return self._pool_images(data, batch, aux, rng, preprocess)

  def loss(
    self,
    params,
    state,
    data,
    batch,
    aux,
    rng,
    outputs,
    *,
    preprocess: Preprocess,
    joint_outputs=None,
  ):
    """(weight x dynamic loss of the pool batch against its targets, metrics, extras)."""
    del outputs
    position = batch["pool_position_index"]  # (Bp,) positions in the recorded pool
    rows = aux["pool_index"][position]
    if self.train_branch:
      target = fresh_targets(
        state.extras[TARGET_MEAN][rows],
        state.extras[TARGET_STEP][rows],
        batch["cycle_step"],
        batch["target_max_age"],
        self.target_min_confidence,
      )
    else:
      target = aux["target"][position]
    if joint_outputs is not None:
      pool_outputs = joint_outputs
    else:
      images = self._pool_images(data, batch, aux, rng, preprocess)
      if self.weight == 0:  # records only: no gradient path, so training stays plain
        params = jax.lax.stop_gradient(params)
      pool_outputs, _ = state.apply_fn(
        state.variables(params), images, train=True, mutable=["batch_stats"]
      )  # statistics updates dropped
    logits = pixels.to_record_resolution(pool_outputs["logits"], self.pixel_stride)
    value = dynamic_loss(logits, target, self.kind).mean()
    extras = state.extras
    if self.train_branch:
      extras = self._fold(extras, rows, jax.lax.stop_gradient(logits), batch)
    return batch["dynamic_weight"] * value, {"dynamic_loss": value}, extras

  def _fold(self, extras: dict, rows: jax.Array, logits: jax.Array, batch) -> dict:
    """Folds the branch's predictions into the drawn rows' targets (when recording)."""
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    g, w = record_lib.fold_factors(self.weighting, self.ema_decay, batch["lr"])
    w = w * batch["record_on"]
    g = jnp.where(batch["record_on"] > 0, g, 1.0)
    mean, weight = record_lib.fold(
      extras[TARGET_MEAN][rows], extras[TARGET_WEIGHT][rows][:, None], probs, g, w
    )
    step = jnp.where(batch["record_on"] > 0, batch["cycle_step"], extras[TARGET_STEP][rows])
    return {
      **extras,
      TARGET_MEAN: extras[TARGET_MEAN].at[rows].set(mean),
      TARGET_WEIGHT: extras[TARGET_WEIGHT].at[rows].set(weight[:, 0]),
      TARGET_STEP: extras[TARGET_STEP].at[rows].set(step),
    }

  def epoch_inputs(
    self,
    rng: np.random.Generator,
    epoch: int,
    num_steps: int,
    pool_size: int,
    labeled_size: int,
    cycle_seed: tuple[int, ...],
  ) -> dict[str, np.ndarray]:
    """The epoch's per-step inputs, (num_steps, ...) each: the pool positions drawn, the loss
    weight, whether the target records, the cycle step and the target's largest age."""
    del rng  # the draws continue across epochs: from cycle_seed
    lam = self.weight
    if self.scale == "labeled_fraction":
      lam *= labeled_size / (labeled_size + pool_size)
    weights = weight_schedule(
      lam, self.schedule, self.rampup_fraction, self.warmup_epochs, self.epochs, epoch, num_steps
    )
    recording = np.float32(epoch >= self.record_start_epoch)
    draws = pool_draws(cycle_seed, pool_size, epoch, num_steps, self.batch_size)
    cycle_step = (epoch * num_steps + np.arange(num_steps)).astype(np.float32)
    max_age = np.float32(self.target_max_age * self.epochs * num_steps)
    return {
      "pool_position_index": draws,
      "dynamic_weight": weights,
      "record_on": np.full((num_steps,), recording),
      "cycle_step": cycle_step,
      "target_max_age": np.full((num_steps,), max_age),
    }

  def for_cycle(self, shape: CycleShape) -> "DynamicLossHook":
    """The hook a cycle of `shape`'s sizes trains with: itself, or under disal.loss_guard=
    'adapt' outside the safe regime the same hook at lambda = 0 (logged)."""
    if self.loss_guard == "off" or self.weight == 0:
      return self
    reason = unsafe_loss_reason(
      shape.pool_size,
      (shape.epochs - self.first_epoch) * shape.steps_per_epoch,
      self.batch_size,
      self.target_source,
      self.guard_min_pool_draws,
    )
    if reason is None:
      return self
    if self.loss_guard == "refuse":
      raise ConfigError(
        f"DISAL's dynamic loss is unsafe for this cycle: {reason}; change that "
        "key, or set disal.loss_guard='adapt' (train such cycles without it)"
      )
    log.warning(
      "DISAL: this cycle trains without the dynamic loss (lambda 0; the branch still "
      "records the target the score reads): %s. disal.loss_guard='off' keeps it.",
      reason,
    )
    return dataclasses.replace(self, weight=0.0)

  def active(self, epoch: int) -> bool:
    """Whether `epoch` runs the branch; the trainer runs plain steps in the others."""
    return epoch >= self.first_epoch

  def aux(self, record, pool_index):
    """The pool index, and the record's mean p_bar (P, ...) as the target unless it comes
    from the train branch."""
    if self.train_branch:
      return {"pool_index": pool_index}
    return {"pool_index": pool_index, "target": record.mean}


def make_hook(config: ml_collections.ConfigDict) -> Optional[DynamicLossHook]:
  """The dynamic-loss hook, or None for lambda = 0 with the eval pass: plain train steps (the
  pool is still recorded for the score). With the train branch, lambda = 0 keeps the branch
  to record p_bar (its loss weighs 0, so the parameters train exactly as plainly)."""
  s = config.disal
  if s.dynamic_weight == 0 and s.target_source == "eval_pass":
    return None
  start = branch_start_epoch(config)
  record_start = int(config.record.start_epoch)
  if s.target_source == "train_branch":
    record_start = max(record_start, start)
  return DynamicLossHook(
    weight=float(s.dynamic_weight),
    warmup_epochs=max(int(s.dynamic_warmup_epochs), start),
    batch_size=int(s.dynamic_batch_size),
    kind=s.dynamic_loss,
    epochs=int(config.train.epochs),
    target_source=s.target_source,
    schedule=s.weight_schedule,
    rampup_fraction=float(s.rampup_fraction),
    scale=s.weight_scale,
    weighting=config.record.weighting,
    ema_decay=float(config.record.ema_decay),
    record_start_epoch=record_start,
    pixel_stride=int(config.record.pixel_stride),
    branch=s.branch,
    first_epoch=start,
    target_max_age=float(s.target_max_age),
    target_min_confidence=float(s.target_min_confidence),
    loss_guard=s.loss_guard,
    guard_min_pool_draws=float(s.guard_min_pool_draws),
  )


def branch_start_epoch(config: ml_collections.ConfigDict) -> int:
  """The first epoch of the dynamic branch: round(disal.branch_start_fraction * epochs).
  Before it the trainer runs plain steps (the hook's `active`): they cost Random's."""
  return int(round(float(config.disal.branch_start_fraction) * int(config.train.epochs)))


def record_level(config: ml_collections.ConfigDict) -> str:
  """The eval pass records p_bar ('mean'); the train branch keeps it in state.extras."""
  return "mean" if config.disal.target_source == "eval_pass" else "none"


@functools.partial(jax.jit, static_argnames=("preprocess", "kind", "score_target", "pixel_stride"))
def projection_scores(
  scoring,
  data,
  batch,
  *,
  preprocess: Preprocess,
  kind: str,
  score_target: str = "dynamic",
  pixel_stride: int = 1,
) -> jax.Array:
  """<grad_theta l_dyn(u; theta), d> for a batch, (B,) float32, by one jax.jvp.

  Args:
    scoring: {'state': TrainState at theta_end, 'direction': params-shaped d}.
    data: DeviceData of the training split.
    batch: {'index': (B,) rows, 'target': (B, C) p_bar, or (B, h, w, C) for segmentation}.
  Cost: about one forward and one forward-mode pass of the batch (no per-sample gradients).
  BatchNorm in eval mode, so each sample's loss depends on that sample alone.
  """
  state = scoring["state"]
  images = preprocess.normalise(data.images_at(batch["index"]))

  def losses(params):
    logits = state.apply_fn(state.variables(params), images, train=False)["logits"]
    logits = pixels.to_record_resolution(logits, pixel_stride)
    return score_losses(logits, batch["target"], kind, score_target)

  return jax.jvp(losses, (state.params,), (scoring["direction"],))[1]


@functools.partial(
  jax.jit, static_argnames=("preprocess", "kind", "score_target", "engine", "pixel_stride")
)
def gradient_norm_scores(
  scoring,
  data,
  batch,
  *,
  preprocess: Preprocess,
  kind: str,
  engine: per_sample.Engine,
  score_target: str = "dynamic",
  pixel_stride: int = 1,
) -> jax.Array:
  """||grad_theta l_dyn(u; theta)|| over all parameters, (B,) float32, by `engine`."""
  state = scoring["state"]
  loss = lambda logits, target: score_losses(logits, target, kind, score_target)
  return jnp.sqrt(
    engine.grad_sq_norms(
      batch_logits(state, preprocess, pixel_stride),
      state.variables(state.params),
      data.images_at(batch["index"]),
      loss,
      batch["target"],
    )
  )


def direction(ctx: ScoringContext):
  """d: theta_start - theta_end (the sum of the cycle's updates, sign flipped), or momentum."""
  state = ctx.result.state
  if ctx.config.disal.direction == "momentum":
    return momentum_trace(state)
  return jax.tree.map(lambda start, end: start - end, ctx.result.start_params, state.params)


def pool_target(ctx: ScoringContext) -> jax.Array:
  """p_bar aligned with the padded pool index (P_pad, ...): the record's, or gathered from
  the train branch's per-row target."""
  if ctx.result.record is not None:
    return ctx.result.record.mean
  return _gather_rows(ctx.result.state.extras[TARGET_MEAN], ctx.result.pool_index)


@jax.jit
def _gather_rows(table: jax.Array, rows: jax.Array) -> jax.Array:
  return table[rows]


def select(evidence, ctx: ScoringContext, k: int) -> np.ndarray:
  """Top-K of the scores, or with disal.selection='class_balanced' the same number per class
  the trained model predicts (selectors.balanced_top_k; one eval-mode pass over the pool)."""
  if ctx.config.disal.selection == "top_k" or cold_start(ctx):
    return select_top_k(evidence, ctx, k)
  ties = selectors.tie_break(
    jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), len(ctx.candidates), pool_capacity(ctx)
  )
  fn = functools.partial(predicted_classes, preprocess=ctx.data.preprocess)
  predicted = batched_pool_scores(ctx, fn, ctx.result.state)
  return ctx.candidates[selectors.balanced_top_k(evidence, predicted, k, ties)]


@functools.partial(jax.jit, static_argnames=("preprocess",))
def predicted_classes(state, data, batch, *, preprocess: Preprocess) -> jax.Array:
  """(B,) int32 argmax of the model's eval-mode logits for rows batch['index']."""
  images = preprocess.normalise(data.images_at(batch["index"]))
  logits = state.apply_fn(state.variables(), images, train=False)["logits"]
  return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def cold_start(ctx: ScoringContext) -> bool:
  """Whether the cycle's labeled set averages fewer labels per class than
  disal.cold_start_labels_per_class (classification; 0 = never).

  Why: with a few labels per class the influence scores rank a model near its first guesses,
  and their top-K crowds into a few classes; Random's picks with DISAL's training label better
  (results/disal_budget_grid/, digits at 2-6 labels per class)."""
  bound = float(ctx.config.disal.cold_start_labels_per_class)
  if bound == 0 or ctx.data.dataset.is_segmentation:
    return False
  return len(ctx.labeled) / ctx.data.dataset.num_classes < bound


def disal_scores(ctx: ScoringContext) -> np.ndarray:
  """(P,) float scores of the candidates (docs/disal.md), or in a cold start (`cold_start`)
  Random's, from the same key: the picks are then Random's, and the training DISAL's."""
  if cold_start(ctx):
    log.info(
      "DISAL: %d labels for %d classes is a cold start (under "
      "disal.cold_start_labels_per_class=%g): cycle %d picks at random",
      len(ctx.labeled),
      ctx.data.dataset.num_classes,
      ctx.config.disal.cold_start_labels_per_class,
      ctx.cycle,
    )
    return random_strategy.random_scores(ctx)
  s = ctx.config.disal
  scoring = {"state": ctx.result.state, "direction": direction(ctx)}
  extra = {"target": pool_target(ctx)}
  batch_size = None
  if s.score == "projection":
    fn = functools.partial(
      projection_scores,
      preprocess=ctx.data.preprocess,
      kind=s.dynamic_loss,
      score_target=s.score_target,
      pixel_stride=ctx.data.pixel_stride,
    )
  else:
    engine = per_sample.engine_from_config(ctx.config, s.norm_chunk_size)
    fn = functools.partial(
      gradient_norm_scores,
      preprocess=ctx.data.preprocess,
      kind=s.dynamic_loss,
      score_target=s.score_target,
      engine=engine,
      pixel_stride=ctx.data.pixel_stride,
    )
    batch_size = per_sample_batch_size(ctx, fn, scoring, engine.samples_per_call(), extra)
  return batched_pool_scores(ctx, fn, scoring, extra, batch_size)


def defaults() -> ml_collections.ConfigDict:
  """The disal config section's defaults."""
  s = ml_collections.ConfigDict()
  # Defaults chosen on validation splits (docs/results.md, "DISAL's dynamic loss").
  s.dynamic_weight = 10.0  # lambda (the most it reaches); 0 trains exactly like plain training
  # Divergence between p_bar and the prediction: soft-target cross-entropy 'ce', 'kl' (same
  # gradients as 'ce'), or 'mse' (mean over classes of squared differences of probabilities).
  s.dynamic_loss = "mse"
  # Where p_bar comes from: 'eval_pass' (an eval-mode pass over the pool after every epoch),
  # or 'train_branch' (the dynamic branch's own train-mode predictions, each pool sample
  # folded in when its batch is drawn: no separate pass; classification only).
  s.target_source = "train_branch"
  s.dynamic_warmup_epochs = 1  # the dynamic loss starts at this epoch (after p_bar has data)
  # The dynamic branch (its loss and, with the train branch, its recording) starts at epoch
  # round(branch_start_fraction * train.epochs); the steps before are plain (and cost so).
  # 0: from the first epoch (chosen on validation, docs/disal.md); 0.5 is cheaper, a tie in AULC.
  s.branch_start_fraction = 0.0
  s.weight_schedule = "rampup"  # lambda * exp(-5 (1 - t)^2) up to t = 1, or 'constant'
  s.rampup_fraction = 0.5  # rampup: the fraction of the cycle's steps over which t goes 0 -> 1
  s.weight_scale = "none"  # or 'labeled_fraction': lambda times labeled / (labeled + pool)
  s.dynamic_batch_size = 32  # pool samples drawn per train step (1/4 of train.batch_size)
  # Train branch: a target last folded more than this fraction of the cycle's steps before
  # a draw counts 0 in the loss (a stale prediction); 1 = every target counts.
  s.target_max_age = 1.0
  # Train branch: a target whose largest probability is below this counts 0 in the loss (a
  # flat, uninformative p_bar); 0 = every target counts.
  s.target_min_confidence = 0.0
  # A cycle (train branch) drawing each pool sample fewer than guard_min_pool_draws times:
  # 'adapt' trains it without the dynamic loss (lambda 0, logged; the score still reads the
  # recorded target), 'refuse' stops before training, 'off' trains as configured.
  s.loss_guard = "adapt"
  # Pool draws per row and cycle (branch steps x dynamic_batch_size / pool) the dynamic loss
  # needs: under 2 most targets are pulled late, toward stale predictions; 0 = no guard.
  s.guard_min_pool_draws = 2.0
  # 'separate': the pool batch has its own forward pass (its BatchNorm statistics dropped);
  # 'joint': it is appended to the labeled batch's pass (one pass, shared BatchNorm
  # statistics; cheaper); classification only.
  s.branch = "separate"
  s.direction = "delta"  # theta_start - theta_end, or the optimiser's momentum buffer
  s.score = "projection"  # <grad l_dyn, d> via one jvp, or the per-sample gradient norm
  # The scored loss: 'dynamic' (CE against the recorded p_bar) or 'expected' (the entropy of
  # the current prediction: the "no dynamic target" ablation).
  s.score_target = "dynamic"
  s.norm_chunk_size = 32  # per-sample gradients per chunk, vmap engine (score='norm')
  # 'top_k' (the paper's), or 'class_balanced': the same number of picks per class the
  # trained model predicts, each class's highest scores first (classification only).
  s.selection = "top_k"
  # A cycle whose labeled set averages fewer labels per class than this picks as Random does
  # (the same rows; training stays DISAL's): a cold start, where the influence ranking is
  # worse than chance (docs/disal.md). 0 = always DISAL's ranking, as in the paper.
  s.cold_start_labels_per_class = 10.0
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the disal section's values, or the record and train keys
  it reads, are invalid."""
  s, r, t = config.disal, config.record, config.train
  for key, allowed in (
    ("dynamic_loss", LOSSES),
    ("target_source", TARGET_SOURCES),
    ("weight_schedule", WEIGHT_SCHEDULES),
    ("weight_scale", WEIGHT_SCALES),
    ("branch", BRANCHES),
    ("direction", DIRECTIONS),
    ("score", SCORES),
    ("score_target", SCORE_TARGETS),
    ("selection", SELECTIONS),
    ("loss_guard", LOSS_GUARDS),
  ):
    check_value(s[key] in allowed, f"disal.{key}", s[key], f"one of {allowed}")
  check_value(s.dynamic_weight >= 0, "disal.dynamic_weight", s.dynamic_weight, ">= 0")
  # eval_pass: p_bar exists once an epoch from record.start_epoch has been recorded;
  # train_branch: samples without a target yet are masked out of the loss.
  first = r.start_epoch + 1 if s.target_source == "eval_pass" else 0
  check_value(
    s.dynamic_warmup_epochs >= first,
    "disal.dynamic_warmup_epochs",
    s.dynamic_warmup_epochs,
    f">= {first} (record.start_epoch + 1 with "
    "target_source='eval_pass': the dynamic target needs a recorded epoch)",
  )
  start = round(s.branch_start_fraction * t.epochs)
  check_value(
    0 <= s.branch_start_fraction and start < t.epochs,
    "disal.branch_start_fraction",
    s.branch_start_fraction,
    f">= 0, starting the branch before the last of the {t.epochs} epochs",
  )
  check_value(0 < s.rampup_fraction <= 1, "disal.rampup_fraction", s.rampup_fraction, "in (0, 1]")
  check_value(
    0 <= s.target_min_confidence < 1,
    "disal.target_min_confidence",
    s.target_min_confidence,
    "in [0, 1) (0 = off)",
  )
  check_value(
    0 < s.target_max_age <= 1,
    "disal.target_max_age",
    s.target_max_age,
    "in (0, 1] (a fraction of the cycle's steps; 1 = every target counts)",
  )
  check_value(
    s.dynamic_batch_size >= 1 and s.dynamic_batch_size % num_devices == 0,
    "disal.dynamic_batch_size",
    s.dynamic_batch_size,
    f"a positive multiple of the device count ({num_devices})",
  )
  for key in ("guard_min_pool_draws", "cold_start_labels_per_class"):
    check_value(s[key] >= 0, f"disal.{key}", s[key], ">= 0 (0 = off)")
  check_value(s.norm_chunk_size >= 1, "disal.norm_chunk_size", s.norm_chunk_size, ">= 1")
  if s.direction == "momentum":
    check_value(
      t.optimizer == "sgd" and t.momentum > 0,
      "disal.direction",
      s.direction,
      "'delta' unless train.optimizer='sgd' with train.momentum > 0",
    )


def check_for_dataset(config: ml_collections.ConfigDict, dataset) -> None:
  """Segmentation: the eval-pass target and a separate branch; disal.loss_guard='refuse':
  every cycle inside the safe regime (ConfigError otherwise)."""
  s = config.disal
  if s.loss_guard == "refuse" and s.dynamic_weight > 0:
    for labeled, reason in cycle_guard_reasons(config, dataset.num_train):
      if reason is not None:
        raise ConfigError(
          f"DISAL's dynamic loss is unsafe at {labeled} labels: {reason}; "
          "change that key, or set disal.loss_guard='adapt' (train such "
          "cycles without it)"
        )
  if not dataset.is_segmentation:
    return
  check_value(
    config.disal.target_source == "eval_pass",
    "disal.target_source",
    config.disal.target_source,
    "'eval_pass' for segmentation (a per-pixel target "
    "per training image would be held on every device)",
  )
  check_value(
    config.disal.selection == "top_k",
    "disal.selection",
    config.disal.selection,
    "'top_k' for segmentation (an image has no one predicted class)",
  )
  check_value(
    config.disal.branch == "separate",
    "disal.branch",
    config.disal.branch,
    "'separate' for segmentation (pool images are whole images, labeled ones "
    "crops: they cannot share a forward pass)",
  )


STRATEGY = Strategy(
  name="disal",
  record=record_level,
  score=disal_scores,
  select=select,
  make_hook=make_hook,
  description="dynamic influence: <grad of the dynamic loss, accumulated update>",
  segmentation=True,
  config_section=ConfigSection("disal", defaults, check, check_for_dataset),
)

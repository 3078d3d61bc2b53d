"""Pure train, eval and predict steps. They are jitted by the trainer at the call site.

Each step gets `DeviceData` and a batch of row indices (split over the 'data' axis) and reads
its rows with `images_at` / `labels_at`. Device-resident placement passes the whole split
(replicated): no image crosses from host to device during training. Streaming placement
(disal_jax.data.placement) passes a window holding just the rows the step reads; the same
indices then find their rows in it, so a step computes the same thing in both placements.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import flax
import jax
import jax.numpy as jnp
from clu import metrics as clu_metrics

from disal_jax.training import pixels
from disal_jax.training.augment import Preprocess
from disal_jax.training.segmentation_metrics import ConfusionMatrix
from disal_jax.training.state import TrainState, learning_rate

Metrics = dict[str, clu_metrics.Metric]


class DeviceData(NamedTuple):
  """A split's rows on device: the whole split (`rows` None) or a window of it.

  A window holds W rows of the split: `rows` (W,) int32, sorted, are their indices in the
  split (repeats allowed), and row i of `images` / `labels` is split row rows[i].
  """

  images: jax.Array  # (N or W, H, W, C) uint8
  labels: jax.Array  # (N or W,) int32, or (N or W, H, W) int32 or uint8 label maps
  rows: Optional[jax.Array] = None  # (W,) int32 sorted split indices of a window's rows

  def _positions(self, index: jax.Array) -> jax.Array:
    """Where the split's rows `index` sit in these arrays (each must be held)."""
    if self.rows is None:
      return index
    return jnp.searchsorted(self.rows, index).astype(jnp.int32)

  def images_at(self, index: jax.Array) -> jax.Array:
    """The images of split rows `index` (B,): (B, H, W, C) uint8."""
    return self.images[self._positions(index)]

  def labels_at(self, index: jax.Array) -> jax.Array:
    """The labels of split rows `index` (B,): (B,) or (B, H, W)."""
    return self.labels[self._positions(index)]

  @property
  def num_rows(self) -> int:
    """The number of rows N."""
    return int(self.labels.shape[0])

  def window(self, rows) -> "DeviceData":
    """The data a step reading split rows `rows` needs: all of it, already on device."""
    del rows
    return self


# extra_loss(params, state, data, batch, aux, rng, outputs)
#   -> (scalar loss, {name: scalar}, new state.extras).
# `batch` also holds 'images' and 'labels': the labeled batch as the model saw it (augmented;
# segmentation crops and their label maps), and 'lr': () float32, the learning rate of this
# step's update.
# A strategy's training hook (DISAL's dynamic loss, the baselines' modules). The returned
# extras replace state.extras after the step (TiDAL's running means); return state.extras to
# keep them.
ExtraLoss = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]

# joint_images(state, data, batch, aux, rng) -> (Bj, H, W, C) float32 or None: images a hook
# has appended to the labeled batch's forward pass, so both are one BatchNorm batch and one
# (larger, more efficient) pass; the hook's loss then gets their outputs as `joint_outputs`.
# None (decided while tracing): the labeled batch alone.
JointImages = Callable[..., jax.Array]


@flax.struct.dataclass
class LastValue(clu_metrics.Metric):
  """A scalar of the last merged step (an epoch's learning rate: its last update's), kept as
  it is: clu's LastValue divides a total by a count at every merge."""

  value: jax.Array

  @classmethod
  def from_model_output(cls, value: jax.Array, **_) -> "LastValue":
    """The metric holding `value`."""
    return cls(value)

  def merge(self, other: "LastValue") -> "LastValue":
    """`other`: the later value wins."""
    return other

  def compute(self) -> jax.Array:
    """The value last seen."""
    return self.value


def merge_metrics(a: Optional[Metrics], b: Metrics) -> Metrics:
  """`b` merged into `a` key by key (`b` alone when `a` is None)."""
  return b if a is None else {k: a[k].merge(b[k]) for k in a}


def compute_metrics(m: Metrics) -> dict[str, Any]:
  """Scalars as floats; array-valued metrics (the confusion matrix) as numpy arrays."""
  values = {k: v.compute() for k, v in jax.device_get(m).items()}
  return {k: float(v) if getattr(v, "ndim", 0) == 0 else v for k, v in values.items()}


def _valid(labels: jax.Array, mask: Optional[jax.Array]) -> jax.Array:
  """Targets that count: labeled (not IGNORE_LABEL) and in a real row of `mask` (B,)."""
  valid = pixels.valid_targets(labels)
  if mask is not None:
    valid = valid & mask.reshape(mask.shape + (1,) * (labels.ndim - 1))
  return valid


def _accuracy(logits: jax.Array, labels: jax.Array, valid: jax.Array) -> clu_metrics.Metric:
  """Top-1 accuracy over the valid targets (images, or pixels for segmentation)."""
  return clu_metrics.Accuracy.from_model_output(
    logits=logits.reshape(-1, logits.shape[-1]),
    labels=jnp.where(valid, labels, 0).reshape(-1),
    mask=valid.reshape(-1),
  )


def train_step(
  state: TrainState,
  data: DeviceData,
  batch: dict[str, jax.Array],
  aux: dict[str, Any],
  *,
  preprocess: Preprocess,
  extra_loss: Optional[ExtraLoss] = None,
  joint_images: Optional[JointImages] = None,
) -> tuple[TrainState, Metrics]:
  """One SGD step on the labeled batch `batch['index']` (B,) at the optimiser's learning rate.

  Segmentation batches are cropped and flipped with their label maps, and the loss is the
  mean over the batch's labeled pixels (IGNORE_LABEL excluded). The augmentation and dropout
  keys derive from (state.rng, state.step); an extra loss gets its own key, so adding one
  never changes the supervised branch's random numbers. Dropout is active only in models
  built with a dropout rate (MC-Dropout's). With `joint_images`, the hook's images join the
  labeled ones in one forward pass (one set of BatchNorm batch statistics over both); the
  supervised loss, its metrics and the hook's `outputs` cover the labeled rows only.

  The learning rate is the optimiser's schedule at its step count (state.Optimizer): the hook
  gets it as batch['lr'] and the metrics as 'lr' (the last step's, per epoch), the very
  value the update applies.
  """
  lr = learning_rate(state)  # () float32, this update's
  step_rng = jax.random.fold_in(state.rng, state.step)
  augment_rng, extra_rng, dropout_rng = jax.random.split(step_rng, 3)
  index = batch["index"]
  labels = data.labels_at(index).astype(jnp.int32)  # label maps may be stored as uint8
  if labels.ndim > 1:
    images, labels = preprocess.augment_pair(data.images_at(index), labels, augment_rng)
  else:
    images = preprocess.augment(data.images_at(index), augment_rng)

  labeled_images = images
  joint = None if joint_images is None else joint_images(state, data, batch, aux, extra_rng)
  if joint is not None:
    images = jnp.concatenate([images, joint.astype(images.dtype)])

  def loss_fn(params):
    outputs, updates = state.apply_fn(
      state.variables(params),
      images,
      train=True,
      dropout=True,
      rngs={"dropout": dropout_rng},
      mutable=["batch_stats"],
    )
    hook_kwargs = {}
    if joint is not None:
      num_labeled = labeled_images.shape[0]
      hook_kwargs["joint_outputs"] = jax.tree.map(lambda a: a[num_labeled:], outputs)
      outputs = jax.tree.map(lambda a: a[:num_labeled], outputs)
    ce = pixels.mean_cross_entropy(outputs["logits"], labels)
    loss, extra_metrics, extras = ce, {}, state.extras
    if extra_loss is not None:
      # the hook sees the images the model saw (augmented) and their labels (cropped with them)
      hook_batch = {**batch, "labels": labels, "images": labeled_images, "lr": lr}
      extra, extra_metrics, extras = extra_loss(
        params, state, data, hook_batch, aux, extra_rng, outputs, **hook_kwargs
      )
      loss = loss + extra
    return loss, (outputs, updates, ce, extra_metrics, extras)

  grads, (outputs, updates, ce, extra_metrics, extras) = jax.grad(loss_fn, has_aux=True)(
    state.params
  )
  state = state.apply_gradients(grads=grads, batch_stats=updates["batch_stats"], extras=extras)
  metrics = {
    "loss": clu_metrics.Average.from_model_output(ce),
    "accuracy": _accuracy(outputs["logits"], labels, _valid(labels, None)),
    "lr": LastValue.from_model_output(lr),
  }
  metrics.update({k: clu_metrics.Average.from_model_output(v) for k, v in extra_metrics.items()})
  return state, metrics


def eval_step(
  state: TrainState, data: DeviceData, index: jax.Array, mask: jax.Array, *, preprocess: Preprocess
) -> Metrics:
  """Loss and accuracy on rows `index` (B,) where `mask` (B,) bool marks real (not pad) rows.

  Segmentation (whole images): the loss over labeled pixels and the 'confusion' matrix
  (segmentation_metrics), from which the trainer derives pixel accuracy and mIoU.
  """
  outputs = state.apply_fn(
    state.variables(), preprocess.normalise(data.images_at(index)), train=False
  )
  labels = data.labels_at(index).astype(jnp.int32)  # label maps may be stored as uint8
  loss, _ = pixels.cross_entropy(outputs["logits"], labels)
  valid = _valid(labels, mask)
  metrics = {
    "loss": clu_metrics.Average.from_model_output(loss.reshape(-1), mask=valid.reshape(-1))
  }
  if labels.ndim > 1:
    metrics["confusion"] = ConfusionMatrix.from_model_output(outputs["logits"], labels, mask)
  else:
    metrics["accuracy"] = _accuracy(outputs["logits"], labels, valid)
  return metrics


def predict_probs(
  state: TrainState,
  data: DeviceData,
  index: jax.Array,
  *,
  preprocess: Preprocess,
  pixel_stride: int = 1,
) -> jax.Array:
  """Softmax probabilities float32 of rows `index` (B,), eval mode, no augmentation: (B, C),
  or for segmentation (B, H/stride, W/stride, C) of the block-mean logits (pixels)."""
  outputs = state.apply_fn(
    state.variables(), preprocess.normalise(data.images_at(index)), train=False
  )
  logits = pixels.to_record_resolution(outputs["logits"].astype(jnp.float32), pixel_stride)
  return jax.nn.softmax(logits, axis=-1)

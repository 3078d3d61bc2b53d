"""Trains one cycle: epochs of jitted data-parallel steps, then the pool-recording pass.

The trainer is built once per run (its jitted functions compile once, since every batch has
a fixed shape) and called once per cycle with that cycle's labeled and pool indices.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, ClassVar, Optional

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from disal_jax import faults
from disal_jax.data import row_store
from disal_jax.data.dataset import Dataset
from disal_jax.errors import TrainingDiverged
from disal_jax.models import pretrained
from disal_jax.training import placement, progress_bar, segmentation_metrics, sharding, steps
from disal_jax.training import record as record_lib
from disal_jax.training.augment import Preprocess
from disal_jax.training.state import TrainState, create_state, make_optimizer, with_steps_per_epoch

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CycleShape:
  """The sizes of one cycle's training, which `TrainHook.for_cycle` may adapt a hook to.

  Attributes:
    labeled_size: labeled rows the cycle trains on (L).
    pool_size: pool rows it records and a hook draws from (P, before padding).
    num_classes: the dataset's classes (C).
    steps_per_epoch: optimizer steps in each epoch (`steps_per_epoch`).
    epochs: epochs in the cycle (config.train.epochs).
  """

  labeled_size: int
  pool_size: int
  num_classes: int
  steps_per_epoch: int
  epochs: int


class TrainHook:
  """What a strategy adds to the train step (disal_jax.strategies.disal's DynamicLossHook is
  one). A hook subclasses this as a frozen dataclass of its settings, built with keywords
  (`@dataclasses.dataclass(frozen=True, kw_only=True)`).

  A hook is static configuration, hashed and compared by value and holding no arrays: equal
  hooks (the same config's, run after run) share one entry of `jitted_steps`' cache, and each
  distinct hook compiles its own train step.

  Required (the base raises NotImplementedError): `loss`, `epoch_inputs` and `aux`.
  Declared step inputs (class attributes naming keys of `epoch_inputs`; every other input is
  replicated on every device):
    batch_inputs: per-sample inputs, split over the devices along their batch axis as
      batch['index'] is.
    pool_position_inputs: positions in the padded pool index (aux's 'pool_index' in DISAL's
      and TOD's hooks), split over the devices too. The trainer puts their pool rows in the
      step's data window: a step reads those rows of the split (`data.images_at`) and
      batch['index']'s, no others (a streamed split's window holds no others).
  Optional, with defaults that add nothing: `extras_per_cycle`, `init_params`, `init_extras`,
  `joint_images`, `active` and `for_cycle`.
  """

  batch_inputs: ClassVar[tuple[str, ...]] = ()
  pool_position_inputs: ClassVar[tuple[str, ...]] = ()
  # True: a warm-started cycle also starts from fresh extras (they describe one cycle's
  # training, as DISAL's train-branch target does); False: they carry over.
  extras_per_cycle: ClassVar[bool] = False

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess: Preprocess):
    """The extra loss (steps.ExtraLoss): (scalar loss, {name: scalar metric}, new extras).

    With `joint_images`, it also receives the joined images' outputs as the keyword
    `joint_outputs`.
    """
    raise NotImplementedError(f"{type(self).__name__} defines no loss")

  def epoch_inputs(
    self,
    rng: np.random.Generator,
    epoch: int,
    num_steps: int,
    pool_size: int,
    labeled_size: int,
    cycle_seed: tuple[int, ...],
  ) -> dict[str, np.ndarray]:
    """Per-step host arrays of `epoch`, each with leading axis `num_steps`; step s gets
    row s of each in its batch, under the same key (see the declared inputs above).

    `rng` is the epoch's own generator; `cycle_seed` (a tuple of ints) seeds what must
    continue across the cycle's epochs (a resumed epoch derives it again).
    """
    raise NotImplementedError(f"{type(self).__name__} defines no epoch_inputs")

  def aux(
    self, record: Optional[record_lib.PoolRecord], pool_index: jax.Array
  ) -> dict[str, jax.Array]:
    """On-device arrays the loss reads, rebuilt from the record after each recording pass;
    `pool_index` (P_pad,) int32 is the padded pool index."""
    raise NotImplementedError(f"{type(self).__name__} defines no aux")

  def init_params(self, rng: jax.Array, params: Any, sample_outputs: dict) -> Any:
    """A fresh model's params with a module's added (trained by the same optimiser as the
    backbone); `sample_outputs` are the model's outputs for one zero image. Default: none."""
    del rng, sample_outputs
    return params

  def init_extras(self, num_train: int, num_classes: int, params: Any) -> dict:
    """The state.extras a fresh state starts with (`params`: the fresh model's, e.g. for an
    EMA teacher). Default: none."""
    del num_train, num_classes, params
    return {}

  def joint_images(
    self, state, data, batch, aux, rng, *, preprocess: Preprocess
  ) -> Optional[jax.Array]:
    """Images (Bj, H, W, C) to run in the labeled batch's forward pass (steps.JointImages),
    or None. Default: None (the labeled batch alone)."""
    del state, data, batch, aux, rng, preprocess
    return None

  def active(self, epoch: int) -> bool:
    """Whether the hook takes part in `epoch`; the epochs it sits out run the plain train
    step (state.extras pass through unchanged). Default: every epoch."""
    del epoch
    return True

  def for_cycle(self, shape: CycleShape) -> TrainHook:
    """The hook this cycle trains with: a hook may adapt its static settings to the cycle's
    sizes (and log why); the default trains as configured.

    The trainer asks once per cycle, before its first epoch; the answer must depend on
    `shape` alone, so that a resumed cycle trains with the same hook. The returned hook's
    `loss`, `joint_images`, `active`, `epoch_inputs`, `aux` and declared inputs serve the
    cycle's epochs; the state's structure stays the configured hook's (`init_params`,
    `init_extras` and `extras_per_cycle` build the state before the cycle).
    """
    del shape
    return self


@dataclasses.dataclass
class CycleResult:
  """Attributes:
  state: the trained state (replicated).
  start_params: the parameters the cycle started from.
  record: the pool's probability record (None when nothing was recorded).
  pool_index: (P_pad,) int32 on device, the pool rows the record covers (padded).
  test: test-set metrics after the last epoch.
  val: validation-set metrics after the last epoch ({} without a validation split).
  epochs: one dict of train metrics per epoch.
  train_seconds / record_seconds: wall time of the steps and of the recording passes.
  """

  state: TrainState
  start_params: Any
  record: Optional[record_lib.PoolRecord]
  pool_index: jax.Array
  test: dict[str, float]
  epochs: list[dict[str, float]]
  train_seconds: float
  record_seconds: float
  val: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class CycleProgress:
  """How far a cycle's training has come: what a mid-cycle checkpoint holds.

  Attributes:
    state: the train state after `epoch` epochs.
    start_params: the parameters the cycle started from (DISAL's direction needs them).
    record: the pool's probability record so far, or None.
    epoch: epochs completed.
    epochs: one dict of train metrics per completed epoch.
    train_seconds / record_seconds: wall time so far.
  """

  state: TrainState
  start_params: Any
  record: Optional[record_lib.PoolRecord]
  epoch: int
  epochs: list[dict[str, float]]
  train_seconds: float
  record_seconds: float


@dataclasses.dataclass(frozen=True)
class Recording:
  """What a cycle records of its pool (`train_cycle`'s `recording`).

  Attributes:
    level: one of record.LEVELS; 'none' records nothing (`CycleResult.record` is None).
    pool_capacity: the largest pool of the run; the record is padded to it so that every
      cycle has the same shapes (nothing compiles again in later cycles). 0: this pool's size.
  """

  level: str = "none"
  pool_capacity: int = 0


@dataclasses.dataclass(frozen=True)
class Checkpointing:
  """Where a cycle's training starts and when it hands out its progress to be saved
  (`train_cycle`'s `checkpointing`).

  Attributes:
    resume: progress restored from a checkpoint: training continues after its epoch (the
      starting state given to `train_cycle` is then ignored). None: from the first epoch.
    on_progress: called with the cycle's CycleProgress every `every` epochs and after the
      last one (the loop checkpoints it); None: never.
    every: epochs between `on_progress` calls; 0: only after the last epoch.
  """

  resume: Optional[CycleProgress] = None
  on_progress: Optional[Callable[[CycleProgress], None]] = None
  every: int = 0


def progress_tree(progress: CycleProgress) -> dict[str, Any]:
  """The arrays of `progress` as a checkpoint tree (its counters: `progress_meta`)."""
  return {"state": progress.state, "start_params": progress.start_params, "record": progress.record}


def progress_meta(progress: Optional[CycleProgress]) -> dict[str, Any]:
  """The counters of `progress` (or of none) for a checkpoint's metadata, but its epoch."""
  if progress is None:
    return {"epochs": [], "train_seconds": 0.0, "record_seconds": 0.0}
  return {
    "epochs": progress.epochs,
    "train_seconds": progress.train_seconds,
    "record_seconds": progress.record_seconds,
  }


def progress_from(tree: dict[str, Any], meta: dict[str, Any]) -> CycleProgress:
  """The CycleProgress that `progress_tree` and `progress_meta` (+ 'epoch') wrote."""
  return CycleProgress(
    tree["state"],
    tree["start_params"],
    tree["record"],
    meta["epoch"],
    meta["epochs"],
    meta["train_seconds"],
    meta["record_seconds"],
  )


def pad_to_multiple(index: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
  """Pads an index vector with row 0 to a multiple; returns (padded int32, valid mask)."""
  n = len(index)
  padded_len = max(multiple, math.ceil(n / multiple) * multiple)
  padded = np.zeros(padded_len, np.int32)
  padded[:n] = index
  mask = np.zeros(padded_len, bool)
  mask[:n] = True
  return padded, mask


def steps_per_epoch(num_labeled: int, batch_size: int, epochs: int, min_steps: int) -> int:
  """Optimizer steps in each epoch of a cycle: one pass over the labeled set, or more when
  `min_steps` (config.train.min_steps) asks for more steps per cycle than `epochs` passes give.

  Small labeled sets thus still get enough updates to converge; the epoch count (and with it
  the learning-rate schedule, the record and the checkpoints) stays the same.
  """
  one_pass = math.ceil(num_labeled / batch_size)
  return max(one_pass, math.ceil(min_steps / epochs)) if min_steps else one_pass


def epoch_batches(
  rng: np.random.Generator, labeled: np.ndarray, batch_size: int, num_steps: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Shuffled passes over `labeled`: batches (steps, batch_size) int32 and `fresh`, a bool
  array of the same shape marking each sample's appearances in a full shuffled pass.

  Every labeled sample appears once per pass; passes follow one another until `num_steps`
  batches are filled (0: one pass). The last batch is completed with labeled samples drawn at
  random (marked not fresh), so every step has the same shape (no recompilation, sane
  BatchNorm statistics).
  """
  num_steps = num_steps or math.ceil(len(labeled) / batch_size)
  total = num_steps * batch_size
  passes = total // len(labeled)
  order = [rng.permutation(labeled) for _ in range(passes)]
  fill = total - passes * len(labeled)
  if fill:
    order.append(rng.choice(labeled, fill, replace=len(labeled) < fill))
  fresh = np.arange(total) < passes * len(labeled)
  return (
    np.concatenate(order).reshape(num_steps, batch_size).astype(np.int32),
    fresh.reshape(num_steps, batch_size),
  )


def format_seconds(seconds: float) -> str:
  """`seconds` as '1h02m' from an hour on, else '3m05s'."""
  seconds = int(seconds)
  return (
    f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    if seconds >= 3600
    else f"{seconds // 60}m{seconds % 60:02d}s"
  )


@dataclasses.dataclass(frozen=True)
class JittedSteps:
  """The jitted train, eval and predict step functions of one model and mesh."""

  train: Callable
  eval: Callable
  predict: Callable


def jitted_steps(
  mesh: Mesh, preprocess: Preprocess, hook: Optional[TrainHook], pixel_stride: int = 1
) -> JittedSteps:
  """The jitted steps for one (mesh, preprocessing, hook), shared by every Trainer.

  Sharing them lets JAX reuse compiled executables across strategies, seeds and cycles of
  one process (a sweep, the tests): a new jit wrapper per Trainer would compile again.

  Raises:
    TypeError: `hook` is hashed by identity (a plain class). Each run builds its own hook,
      so such a key would add an entry, compiled steps included, with every Trainer.
  """
  if hook is not None and type(hook).__hash__ is object.__hash__:
    raise TypeError(
      f"{type(hook).__name__}: a train hook is static configuration, hashed "
      "by value; make it a frozen dataclass of its settings, so that equal "
      "configs share one entry of the compiled-steps cache"
    )
  return _jitted_steps(mesh, preprocess, hook, pixel_stride)


@functools.lru_cache(maxsize=None)
def _jitted_steps(
  mesh: Mesh, preprocess: Preprocess, hook: Optional[TrainHook], pixel_stride: int
) -> JittedSteps:
  """`jitted_steps`, cached on its arguments: static settings, none of them holding arrays."""
  replicated = sharding.replicated(mesh)
  extra_loss = None if hook is None else functools.partial(hook.loss, preprocess=preprocess)
  joint_images = (
    None if hook is None else functools.partial(hook.joint_images, preprocess=preprocess)
  )
  return JittedSteps(
    train=jax.jit(
      functools.partial(
        steps.train_step, preprocess=preprocess, extra_loss=extra_loss, joint_images=joint_images
      ),
      donate_argnums=0,
      out_shardings=replicated,
    ),
    eval=jax.jit(
      functools.partial(steps.eval_step, preprocess=preprocess), out_shardings=replicated
    ),
    predict=jax.jit(
      functools.partial(steps.predict_probs, preprocess=preprocess, pixel_stride=pixel_stride),
      out_shardings=sharding.along_data(mesh),
    ),
  )


@functools.lru_cache(maxsize=None)
def record_update(
  weighting: str, ema_decay: float, record_sharding: record_lib.PoolRecord
) -> Callable:
  """The jitted `record_lib.update_record` for one (weighting, decay, record layout), shared
  by every Trainer (compiled once per layout in a process).

  `record_sharding` is a PoolRecord of NamedShardings (`record_lib.record_shardings`). The key
  is static configuration only: a cache that held a Trainer would keep it, and the splits it
  holds on device, alive for the rest of the process.
  """
  return jax.jit(
    functools.partial(record_lib.update_record, weighting=weighting, ema_decay=ema_decay),
    donate_argnums=0,
    out_shardings=record_sharding,
  )


def declared_inputs(
  hook: TrainHook, inputs: dict[str, np.ndarray]
) -> tuple[frozenset[str], frozenset[str]]:
  """The names of `inputs` (hook.epoch_inputs') to split over the devices and those holding
  pool positions, as `hook` declares them (TrainHook.batch_inputs, pool_position_inputs).

  Raises:
    ValueError: a declared input is missing from `inputs` (a misspelt declaration would
      otherwise replicate the input and leave its rows out of a streamed step's window).
  """
  positions = frozenset(hook.pool_position_inputs)
  split = frozenset(hook.batch_inputs) | positions
  missing = sorted(split - inputs.keys())
  if missing:
    raise ValueError(
      f"{type(hook).__name__} declares the step inputs {missing}, which its "
      f"epoch_inputs did not return (it returned {sorted(inputs)})"
    )
  return split, positions


class Trainer:
  """Jitted steps over one dataset on one mesh; `train_cycle` runs a cycle."""

  def __init__(
    self,
    config: ml_collections.ConfigDict,
    model,
    dataset: Dataset,
    mesh: Mesh,
    hook: Optional[TrainHook] = None,
    writer=None,
  ):
    if hook is not None and not isinstance(hook, TrainHook):
      raise TypeError(
        f"{type(hook).__name__}: a train hook subclasses disal_jax.training.trainer.TrainHook"
      )
    self.config = config
    self.model = model
    self.dataset = dataset
    self.mesh = mesh
    self.hook = hook
    self.writer = writer
    self.tx = make_optimizer(config.train)
    self._pretrained: dict = {}  # config.model.init_from's arrays, read once
    mean, std = dataset.channel_stats()
    self.preprocess = Preprocess(
      tuple(map(float, mean)),
      tuple(map(float, std)),
      config.augment.crop_padding,
      bool(config.augment.flip),
      tuple(config.augment.crop_size),
    )
    self.pixel_stride = config.record.pixel_stride if dataset.is_segmentation else 1
    # each split: steps.DeviceData on every device, or placement.StreamedSplit
    self.streamed = row_store.streams(config.data, row_store.split_bytes(dataset))
    self.train_data = placement.place_split(
      dataset.train_images, dataset.train_labels, mesh, self.streamed
    )
    self.test_data = placement.place_split(
      dataset.test_images, dataset.test_labels, mesh, self.streamed
    )
    self.val_data = placement.place_split(
      dataset.val_images, dataset.val_labels, mesh, self.streamed
    )
    compiled = jitted_steps(mesh, self.preprocess, hook, self.pixel_stride)
    self._eval_step, self._predict = compiled.eval, compiled.predict

  def _plain_step(self) -> Callable:
    """The plain train step, for the epochs a hook sits out (compiled on first use)."""
    return jitted_steps(self.mesh, self.preprocess, None, self.pixel_stride).train

  @property
  def prob_shape(self) -> tuple[int, ...]:
    """One sample's recorded probabilities: (C,), or (H/stride, W/stride, C) for segmentation
    (disal_jax.training.pixels)."""
    if not self.dataset.is_segmentation:
      return (self.dataset.num_classes,)
    height, width = self.dataset.image_shape[:2]
    return (height // self.pixel_stride, width // self.pixel_stride, self.dataset.num_classes)

  def _fresh_state(self, rng: jax.Array) -> TrainState:
    """A fresh state with the hook's module parameters and extras (host or traced)."""
    extend = None if self.hook is None else self.hook.init_params
    state = create_state(self.model, self.tx, rng, self.dataset.image_shape, extend)
    if self.config.model.init_from:
      params, batch_stats = pretrained.initialise(
        state.params, state.batch_stats, self.config.model.init_from, self._pretrained
      )
      state = state.replace(params=params, batch_stats=batch_stats)
    return state.replace(extras=self._fresh_extras(state.params))

  def _fresh_extras(self, params) -> dict:
    if self.hook is None:
      return {}
    return self.hook.init_extras(len(self.dataset.train_labels), self.dataset.num_classes, params)

  def init_state(self, rng: jax.Array) -> TrainState:
    """A fresh TrainState from `rng`, replicated over the mesh."""
    return sharding.put_replicated(self._fresh_state(rng), self.mesh)

  def reset_optimizer(self, state: TrainState, rng: jax.Array) -> TrainState:
    """Keeps the weights, restarts the optimiser and step count (warm start); extras that
    describe one cycle (the hook's `extras_per_cycle`) start afresh too. `rng` is the cycle's
    own stream: the step's keys derive from (state.rng, step), so keeping the previous
    cycle's rng with the step count restarted would replay its augmentations."""
    fresh = state.tx.init(state.params)
    state = state.replace(step=0, opt_state=fresh, rng=rng)
    if self.hook is not None and self.hook.extras_per_cycle:
      state = state.replace(extras=self._fresh_extras(state.params))
    return sharding.put_replicated(state, self.mesh)

  # -- passes over fixed-size batches ---------------------------------------------------
  def _batches(self, data: placement.SplitData, index: np.ndarray, batch_size: int):
    """(window, rows, mask) per batch of `index`: the data holding the batch's rows, the
    rows (B,) and the real-row mask (B,) on device; the next batch read ahead."""
    padded, mask = pad_to_multiple(index, batch_size)
    along = sharding.along_data(self.mesh)

    def inputs(start):
      rows = padded[start : start + batch_size]
      return (
        data.window(rows),
        sharding.put_host(rows, along),
        sharding.put_host(mask[start : start + batch_size], along),
      )

    return placement.prefetched(inputs, range(0, len(padded), batch_size))

  def evaluate(self, state: TrainState, split: str = "test") -> dict[str, float]:
    """Metrics on the 'test' (or 'val') split: 'accuracy' (pixel accuracy for segmentation)
    and 'loss', and for segmentation 'miou' (the mean IoU over classes present in labels or
    predictions). NaN when the split is empty (an annotation project without a test split)."""
    data = self.test_data if split == "test" else self.val_data
    if data is None or not data.num_rows:
      nan = float("nan")
      return {
        "accuracy": nan,
        "loss": nan,
        **({"miou": nan} if self.dataset.is_segmentation else {}),
      }
    total = None
    index = np.arange(data.num_rows)
    for window, idx, mask in self._batches(data, index, self.config.train.eval_batch_size):
      total = steps.merge_metrics(total, self._eval_step(state, window, idx, mask))
    metrics = steps.compute_metrics(total)
    if "confusion" in metrics:
      matrix = metrics.pop("confusion")
      metrics["accuracy"] = segmentation_metrics.pixel_accuracy(matrix)
      metrics["miou"] = segmentation_metrics.mean_iou(matrix)
    return metrics

  def pool_probs(self, state: TrainState, pool: np.ndarray, capacity: int) -> jax.Array:
    """Softmax outputs (capacity, *prob_shape) of the `pool` rows on device; rows past
    len(pool) are 0.

    Only the batches that hold pool rows are computed.
    """
    parts = [
      self._predict(state, window, idx)
      for window, idx, _ in self._batches(self.train_data, pool, self.config.train.eval_batch_size)
    ]
    probs = jax.numpy.concatenate(parts) if len(parts) > 1 else parts[0]
    padding = [(0, capacity - probs.shape[0])] + [(0, 0)] * (probs.ndim - 1)
    return jax.numpy.pad(probs, padding)

  # -- one cycle ------------------------------------------------------------------------
  def padded_pool_length(self, pool_size: int, pool_capacity: int) -> int:
    """Length of the record's pool axis: the capacity, padded to whole eval batches."""
    n = max(pool_size, pool_capacity)
    return (
      max(1, math.ceil(n / self.config.train.eval_batch_size)) * self.config.train.eval_batch_size
    )

  def state_template(self) -> TrainState:
    """The TrainState's structure, shapes and dtypes (the hook's module parameters and extras
    included), without computing anything."""
    return jax.eval_shape(lambda: self._fresh_state(jax.random.key(0)))

  def progress_template(self, record_level: str, pool_length: int) -> "CycleProgress":
    """A CycleProgress of abstract arrays: what a mid-cycle checkpoint must hold."""
    state = self.state_template()
    record = None
    if record_level != "none":
      record = jax.eval_shape(
        lambda: record_lib.init_record(record_level, pool_length, self.prob_shape)
      )
    return CycleProgress(state, state.params, record, 0, [], 0.0, 0.0)

  def place_progress(self, progress: "CycleProgress") -> "CycleProgress":
    """Puts restored host arrays back on the mesh with the shardings training uses."""
    record = progress.record
    if record is not None:
      record = jax.device_put(record, record_lib.record_shardings(record, self.mesh))
    return dataclasses.replace(
      progress,
      state=sharding.put_replicated(progress.state, self.mesh),
      start_params=sharding.put_replicated(progress.start_params, self.mesh),
      record=record,
    )

  def train_cycle(
    self,
    state: TrainState,
    labeled: np.ndarray,
    pool: np.ndarray,
    seed: tuple[int, ...],
    *,
    cycle: int,
    recording: Recording = Recording(),
    checkpointing: Checkpointing = Checkpointing(),
    tag: str = "",
    on_epoch_end: Optional[Callable[[TrainState, int, float], None]] = None,
  ) -> CycleResult:
    """Trains `config.train.epochs` epochs on `labeled` rows, recording `pool` rows' outputs.

    The trainer's hook trains the cycle as `hook.for_cycle` returns it for the cycle's sizes
    (CycleShape).

    Args:
      state: the starting state (fresh or warm); ignored when resuming.
      labeled: (L,) int training-set rows with labels.
      pool: (P,) int training-set rows to record (the unlabeled pool or its scoring subset).
      seed: entropy for the host generators of batch order and of hook inputs. Each epoch
        draws from its own generators, derived from (seed, epoch), so a cycle resumed at any
        epoch continues exactly as it would have.
      cycle: cycle number, for logs, the metric writer's steps and fault points.
      recording: what is recorded of `pool` (Recording; by default nothing).
      checkpointing: the progress to resume from and the callback that saves it
        (Checkpointing; by default from the first epoch, saving nothing).
      tag: a label for the progress lines (strategy and seed).
      on_epoch_end: called as on_epoch_end(state, epoch, lr) after each epoch (TracInCP's
        checkpoints), lr the rate of the epoch's last update; it must copy what it keeps,
        since the state is donated to the next step.
    Raises:
      TrainingDiverged: a non-finite loss, naming the cycle, epoch and step.
    """
    record_level, pool_capacity = recording.level, recording.pool_capacity
    resume, on_progress = checkpointing.resume, checkpointing.on_progress
    cfg = self.config.train
    if len(labeled) == 0:
      raise ValueError("cannot train on an empty labeled set")
    pool_length = self.padded_pool_length(len(pool), pool_capacity)
    pool_index_np = np.zeros(pool_length, np.int32)
    pool_index_np[: len(pool)] = pool
    pool_index = jax.device_put(pool_index_np, sharding.along_data(self.mesh))
    update_record = None
    if resume is None:
      record = None
      if record_level != "none":
        record = record_lib.init_record(record_level, pool_length, self.prob_shape)
        record = jax.device_put(record, record_lib.record_shardings(record, self.mesh))
      start_params = jax.tree.map(lambda x: x.copy(), state.params)
      progress = CycleProgress(state, start_params, record, 0, [], 0.0, 0.0)
    else:
      progress = resume
    if progress.record is not None:
      update_record = record_update(
        self.config.record.weighting,
        self.config.record.ema_decay,
        record_lib.record_shardings(progress.record, self.mesh),
      )
    state, record = progress.state, progress.record
    epochs = list(progress.epochs)
    train_seconds, record_seconds = progress.train_seconds, progress.record_seconds
    along, replicated = sharding.along_data(self.mesh), sharding.replicated(self.mesh)
    num_steps = steps_per_epoch(len(labeled), cfg.batch_size, cfg.epochs, cfg.min_steps)
    # the optimiser's schedule spans this cycle's steps (a resumed state holds the same value)
    state = with_steps_per_epoch(state, sharding.put_host(np.int32(num_steps), replicated))
    hook = (
      None
      if self.hook is None
      else self.hook.for_cycle(
        CycleShape(
          labeled_size=len(labeled),
          pool_size=len(pool),
          num_classes=self.dataset.num_classes,
          steps_per_epoch=num_steps,
          epochs=cfg.epochs,
        )
      )
    )
    hooked_step = (
      None
      if hook is None
      else jitted_steps(self.mesh, self.preprocess, hook, self.pixel_stride).train
    )
    # on a terminal, one bar per cycle; a failure below leaves it for tqdm to close
    bar = (
      progress_bar.CycleBar(tag, cycle, cfg.epochs, progress.epoch)
      if progress_bar.on_terminal()
      else None
    )
    for epoch in range(progress.epoch, cfg.epochs):
      batch_rng, hook_rng = map(
        np.random.default_rng, np.random.SeedSequence([*seed, epoch]).spawn(2)
      )
      batches, fresh = epoch_batches(batch_rng, labeled, cfg.batch_size, num_steps)
      hooked = hook is not None and hook.active(epoch)
      hook_inputs, split, positions = {}, frozenset(), frozenset()
      if hooked:
        hook_inputs = hook.epoch_inputs(
          hook_rng, epoch, num_steps, len(pool), len(labeled), tuple(seed)
        )
        split, positions = declared_inputs(hook, hook_inputs)
      aux = {} if not hooked else hook.aux(record, pool_index)
      train_step = hooked_step if hooked else self._plain_step()

      def step_inputs(
        s: int,
        batches=batches,
        fresh=fresh,
        hook_inputs=hook_inputs,
        split=split,
        positions=positions,
      ):
        """Step s's batch on device and the data holding the rows it reads."""
        batch = {
          "index": sharding.put_host(batches[s], along),
          "fresh": sharding.put_host(fresh[s], along),
        }
        rows = [batches[s]]
        for key, value in hook_inputs.items():
          batch[key] = sharding.put_host(value[s], along if key in split else replicated)
          if key in positions:
            rows.append(pool_index_np[value[s]])
        return batch, self.train_data.window(np.concatenate([r.ravel() for r in rows]))

      t0 = time.perf_counter()
      totals, step_losses = None, []
      for s, (batch, data) in enumerate(placement.prefetched(step_inputs, range(len(batches)))):
        faults.point(f"train:{tag}:{cycle}:{epoch}:{s}")
        state, metrics = train_step(state, data, batch, aux)
        totals = steps.merge_metrics(totals, metrics)
        step_losses.append(metrics["loss"].total)  # stays on device; read only on failure
      epoch_metrics = steps.compute_metrics(totals)  # waits for the epoch's steps
      step_seconds = time.perf_counter() - t0
      train_seconds += step_seconds
      if not math.isfinite(epoch_metrics["loss"]):
        losses = np.asarray(jax.device_get(step_losses))
        bad = int(np.flatnonzero(~np.isfinite(losses))[0])
        raise TrainingDiverged(
          f"non-finite training loss ({losses[bad]}) in cycle {cycle}, epoch {epoch + 1}, "
          f"step {bad + 1} of {len(batches)} ({tag}). Nothing of this epoch was saved; the "
          "last checkpoint is intact. Lower train.learning_rate or check the data."
        )
      lr = epoch_metrics["lr"]  # the rate of the epoch's last update (steps.train_step)
      if record is not None and epoch >= self.config.record.start_epoch:
        t1 = time.perf_counter()
        probs = self.pool_probs(state, pool, pool_length)
        record = update_record(record, probs, sharding.put_host(np.float32(lr), replicated))
        jax.block_until_ready(record)
        record_seconds += time.perf_counter() - t1
      if on_epoch_end is not None:
        on_epoch_end(state, epoch, lr)
      epoch_metrics.update(images_per_second=batches.size / step_seconds)
      epochs.append(epoch_metrics)
      self._log_epoch(cycle, epoch, epoch_metrics, train_seconds + record_seconds, tag, bar)
      done = epoch + 1
      if on_progress is not None and (
        done == cfg.epochs or (checkpointing.every and done % checkpointing.every == 0)
      ):
        on_progress(
          CycleProgress(
            state, progress.start_params, record, done, epochs, train_seconds, record_seconds
          )
        )
    if bar is not None:
      bar.close()
    val = {} if self.val_data is None else self.evaluate(state, "val")
    return CycleResult(
      state,
      progress.start_params,
      record,
      pool_index,
      self.evaluate(state),
      epochs,
      train_seconds,
      record_seconds,
      val,
    )

  def _log_epoch(
    self,
    cycle: int,
    epoch: int,
    m: dict[str, float],
    elapsed: float,
    tag: str,
    bar: Optional[progress_bar.CycleBar] = None,
  ) -> None:
    epochs = self.config.train.epochs
    if self.writer is not None:
      self.writer.write(
        cycle * epochs + epoch,
        {f"train/{k}": v for k, v in m.items()},
        cycle=cycle,
        epoch=epoch + 1,
      )
    if bar is not None:
      bar.update(m)
    elif (epoch + 1) % self.config.train.log_every_epochs == 0 or epoch + 1 == epochs:
      eta = elapsed / (epoch + 1) * (epochs - epoch - 1)
      extra = "".join(
        f" {k} {v:.4f}"
        for k, v in m.items()
        if k not in ("loss", "accuracy", "lr", "images_per_second")
      )
      log.info(
        "[%s] cycle %d epoch %d/%d loss %.4f acc %.3f%s lr %.3g | %.0f img/s | ETA %s",
        tag,
        cycle,
        epoch + 1,
        epochs,
        m["loss"],
        m["accuracy"],
        extra,
        m["lr"],
        m["images_per_second"],
        format_seconds(eta),
      )

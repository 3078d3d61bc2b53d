"""The strategy contract: declared needs, a pure score, a selector.

A strategy never changes who is labeled and never trains by itself: it states what it needs
recorded during training (and what it adds to the train step, the model or the end of each
epoch), scores the candidates from what the loop hands it, and its selector turns the
scores into global indices. Only `disal_jax.pool` grows the labeled set.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any, Callable, Mapping, Optional, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.data.dataset import Dataset
from disal_jax.strategies import selectors
from disal_jax.training import pixels, placement, sharding
from disal_jax.training.augment import Preprocess
from disal_jax.training.state import TrainState
from disal_jax.training.trainer import CycleResult, Trainer, TrainHook, pad_to_multiple


class EpochCallback(Protocol):
  """Called by the trainer after every epoch of a cycle (TracInCP keeps checkpoints so).

  `metrics()` returns what it cost (bytes, seconds) for the cycle's results; `close()`
  releases what it holds once the cycle's scoring is done.
  """

  def __call__(self, state: TrainState, epoch: int, lr: float) -> None: ...

  def metrics(self) -> dict[str, float]:
    """Scalars about what the callback kept (logged with the cycle's metrics)."""

  def close(self) -> None:
    """Releases what the callback kept."""


@dataclasses.dataclass(frozen=True)
class ScoringData:
  """The training set and device layout strategies read, without the Trainer that trains.

  Attributes:
    dataset: the host-side dataset (num_classes, image_shape, train_labels, ...).
    train_data: the training split: steps.DeviceData replicated over `mesh`, or a
      placement.StreamedSplit (read a batch's rows with `train_data.window(rows)`).
    mesh: the device mesh; scoring batches are split along its data axis.
    preprocess: the normalisation and augmentation settings of training.
    pixel_stride: the record's pixel stride (segmentation; 1 for classification).
    init_state: rng -> a fresh replicated state of the trained model, hook modules included
      (TOD scores against the untrained model).
  """

  dataset: Dataset
  train_data: placement.SplitData
  mesh: jax.sharding.Mesh
  preprocess: Preprocess
  pixel_stride: int
  init_state: Callable[[jax.Array], TrainState]


def scoring_data(trainer: Trainer) -> ScoringData:
  """What a strategy reads of `trainer`: its data on device, mesh and preprocessing."""
  return ScoringData(
    trainer.dataset,
    trainer.train_data,
    trainer.mesh,
    trainer.preprocess,
    trainer.pixel_stride,
    trainer.init_state,
  )


@dataclasses.dataclass(frozen=True)
class ScoringContext:
  """What the loop hands a strategy after a cycle's training.

  Attributes:
    config: the experiment config (a strategy reads its own section, config.<name>).
    data: the training set on device, the mesh and the preprocessing (ScoringData).
    result: the cycle's training result (state, start parameters, record, pool index).
    candidates: (P,) training-set rows that may be selected, in record order.
    labeled: (L,) training-set rows labeled so far.
    rng: a jax key for this cycle's scoring.
    cycle: the cycle number.
    epoch_callback: the strategy's epoch callback of this cycle, or None.
    run_dir: this (strategy, seed) run's folder, for what a strategy keeps between cycles.
  """

  config: ml_collections.ConfigDict
  data: ScoringData
  result: CycleResult
  candidates: np.ndarray
  labeled: np.ndarray
  rng: jax.Array
  cycle: int
  epoch_callback: Optional[EpochCallback] = None
  run_dir: Optional[pathlib.Path] = None


# score(ctx) -> evidence for the selector: (P,) float scores for ctx.candidates (higher =
# select first) for top-k strategies, or what a greedy selector needs (CoreSet: features).
ScoreFn = Callable[[ScoringContext], Any]
# select(evidence, ctx, k) -> (k,) distinct global training-set rows from ctx.candidates.
SelectFn = Callable[[Any, ScoringContext, int], np.ndarray]


# Folded into a cycle's scoring key for the order among tied scores.
TIE_BREAK_STREAM = 0x71E
# Folded into a cycle's scoring key for the keys of the scoring batches (batch['rng']).
BATCH_KEY_STREAM = 0xBA7C


def pool_capacity(ctx: ScoringContext) -> int:
  """The padded pool length of the run (fixed over its cycles), or the candidates' count."""
  if ctx.result is None:
    return len(ctx.candidates)
  return int(ctx.result.pool_index.shape[0])


def select_top_k(scores: np.ndarray, ctx: ScoringContext, k: int) -> np.ndarray:
  """The k candidates with the highest scores; ties broken at random with the cycle's key."""
  scores = np.asarray(scores, np.float64)
  if scores.shape != ctx.candidates.shape:
    raise ValueError(f"scores {scores.shape} do not match candidates {ctx.candidates.shape}")
  if not np.all(np.isfinite(scores)):
    bad = int(np.sum(~np.isfinite(scores)))
    raise FloatingPointError(f"{bad} non-finite scores in cycle {ctx.cycle}")
  ties = selectors.tie_break(
    jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), len(scores), pool_capacity(ctx)
  )
  return ctx.candidates[selectors.top_k(scores, k, ties)]


# Scoring and selection run at full float32 precision: on GPUs JAX otherwise computes float32
# matmuls and convolutions in TF32 (a 10-bit mantissa), enough to reorder close scores.
SCORING_PRECISION = "highest"


def score_and_select(strategy: "Strategy", ctx: ScoringContext, k: int) -> tuple[Any, np.ndarray]:
  """The strategy's evidence and its k selected rows, at SCORING_PRECISION; the epoch callback
  (if any) is closed afterwards, whatever happens. The one path of the loop and the
  annotation rounds."""
  try:
    with jax.default_matmul_precision(SCORING_PRECISION):
      evidence = strategy.score(ctx)
      selected = np.asarray(strategy.select(evidence, ctx, k))
  finally:
    if ctx.epoch_callback is not None:
      ctx.epoch_callback.close()
  return evidence, selected


@dataclasses.dataclass(frozen=True)
class ConfigSection:
  """A strategy's own keys, config.<name>: `defaults()` builds them (each key with a one-line
  comment where it is assigned: `python -m disal_jax.config_keys` prints it), `check(config,
  num_devices)` raises ConfigError naming a bad value (`disal_jax.errors.check_value`).
  `experiment.base_config` and `experiment.validate` collect the registered strategies'
  sections, so a new strategy's keys live in its own module.
  `check_for_dataset(config, dataset)`, if given, runs once the dataset is loaded, for the
  strategies a config runs (what depends on the task or the image size).

  Resuming a run compares its saved config with the new one (disal_jax.checkpoint):
  `resume_safe` names the keys of this section that may differ without invalidating the saved
  run, because they change nothing it computed (a guard's limit that only decides whether to
  stop: vaal's `max_loss`); every other key that differs refuses the resume. `moved_keys`
  maps a key this section had in an earlier version to the dotted key that holds its setting
  now ({'embedding': 'embedding.source'}): a saved run config is compared, and an annotation
  project's config read, as if it held the new key.
  """

  name: str
  defaults: Callable[[], ml_collections.ConfigDict]
  check: Optional[Callable[[ml_collections.ConfigDict, int], None]] = None
  check_for_dataset: Optional[Callable[[ml_collections.ConfigDict, Dataset], None]] = None
  resume_safe: tuple[str, ...] = ()
  # Not hashed (a dict): a section stays hashable, as a frozen dataclass is.
  moved_keys: Mapping[str, str] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True)
class ReferenceProtocol:
  """How the strategy's published code runs an AL cycle, where it differs from the unified
  protocol (the whole pool scored, a fresh model each cycle); config.al.protocol='reference'
  runs the strategy so (disal_jax.protocol).

  Attributes:
    subset_size: unlabeled rows scored per cycle, a random subset drawn afresh each cycle
      (config.al.subset_size); 0 = the whole pool.
    warm_start: each cycle trains on from the previous cycle's model (config.train.warm_start).
    source: the reference lines these values come from (repository, file, line).
  """

  subset_size: int
  warm_start: bool
  source: str


@dataclasses.dataclass(frozen=True)
class Strategy:
  """Attributes:
  name: registry name.
  record: the least record level it needs (disal_jax.training.record.LEVELS), or a function
    of the config that returns it (DISAL's depends on disal.target_source).
  score: the scoring function.
  select: the selector (top-k unless the strategy is a greedy procedure).
  make_hook: builds its train-step hook from the config, or None.
  model_overrides: config -> {config.model key: value} for the model it trains, or None.
  make_epoch_callback: (config, run folder) -> a fresh EpochCallback for one cycle, or None.
  description: one line for listings.
  segmentation: whether it scores segmentation pools (a per-image score from per-pixel
    quantities at the record's resolution; its docstring says which reduction).
  config_section: its own config keys, or None (several strategies may share one).
  reads_sections: the names of the other sections it also reads: another strategy's, or
    one no strategy owns (`embedding`). A run's resume check compares only the sections
    its strategy owns or reads (registry.sections_read).
  reference: how its published code runs a cycle (subset scored, warm start), for
    config.al.protocol='reference'; None where that is the unified protocol.
  """

  name: str
  record: str | Callable[[ml_collections.ConfigDict], str]
  score: ScoreFn
  select: SelectFn = select_top_k
  make_hook: Optional[Callable[[ml_collections.ConfigDict], TrainHook]] = None
  model_overrides: Optional[Callable[[ml_collections.ConfigDict], dict[str, Any]]] = None
  make_epoch_callback: Optional[
    Callable[[ml_collections.ConfigDict, pathlib.Path], EpochCallback]
  ] = None
  description: str = ""
  segmentation: bool = False
  config_section: Optional[ConfigSection] = None
  reads_sections: tuple[str, ...] = ()
  reference: Optional[ReferenceProtocol] = None


@functools.lru_cache(maxsize=None)
def _batch_slicer(batch_size: int, split: jax.sharding.Sharding):
  """jitted (array, start) -> array[start:start + batch_size], laid out as `split`."""
  return jax.jit(
    lambda array, start: jax.lax.dynamic_slice_in_dim(array, start, batch_size), out_shardings=split
  )


def _batches_key(ctx: ScoringContext, rng: Optional[jax.Array]) -> Optional[jax.Array]:
  """The key the scoring batches' keys come from: `rng`, else the cycle's, ctx.rng; None for a
  stand-in context that has no key (a test's namespace): its batches then get none."""
  return rng if rng is not None else getattr(ctx, "rng", None)


@functools.lru_cache(maxsize=None)
def _batch_key_maker(replicated: jax.sharding.Sharding):
  """jitted (key, number) -> the key of scoring batch `number`, replicated over the mesh."""
  return jax.jit(
    lambda key, number: jax.random.fold_in(jax.random.fold_in(key, BATCH_KEY_STREAM), number),
    out_shardings=replicated,
  )


def _map_batches(
  batch_fn: Callable[..., jax.Array],
  scoring_state: Any,
  ctx: ScoringContext,
  index: jax.Array,
  count: int,
  extra: Optional[dict[str, jax.Array]],
  batch_size: Optional[int] = None,
  rng: Optional[jax.Array] = None,
) -> jax.Array:
  """Runs `batch_fn(scoring_state, data, batch)` over the first `count` rows of `index`, in
  batches of `batch_size` (default: config.train.eval_batch_size).

  With `rng`, batch['rng'] is batch number b's key (b = 0, 1, ... within this call),
  fold_in(fold_in(rng, BATCH_KEY_STREAM), b), a replicated scalar key.

  Returns the outputs of every row of `index` rounded up to whole batches, (N_pad, ...) on
  device; rows from `count` on are padding (whole batches past it are zeros, not computed).
  The output's shape depends on len(index) only (the pool index is padded to the run's
  capacity), so a smaller pool in a later cycle compiles nothing again.
  """
  batch_size = batch_size or ctx.config.train.eval_batch_size
  batches = -(-count // batch_size)
  slots = max(batches, -(-index.shape[0] // batch_size))
  # Each batch is cut from the on-device arrays by a jitted slice whose output is split over
  # the devices: an eager slice of a sharded array comes back replicated, and every device
  # then scored the whole batch (measured: 8 forced devices took 7-8x one device's time).
  # A batch that does not divide over the devices stays replicated.
  mesh = ctx.data.mesh
  take = _batch_slicer(
    batch_size,
    sharding.along_data(mesh) if batch_size % mesh.size == 0 else sharding.replicated(mesh),
  )

  def padded(array):  # whole batches, so nothing compiles again for the last one
    short = slots * batch_size - array.shape[0]
    return array if short <= 0 else jnp.pad(array, [(0, short)] + [(0, 0)] * (array.ndim - 1))

  index = padded(index)
  extra = {key: padded(value) for key, value in (extra or {}).items()}
  # Each batch is waited for before the next is dispatched. With several (forced) CPU devices,
  # a deep queue of in-flight programs whose slices and outputs need collectives deadlocked
  # XLA:CPU (measured: DISAL scoring of 4,000 samples on 2 forced devices hung in an
  # all-gather rendezvous; 512 did not). One sync per scoring batch costs little.
  # A streamed split reads each batch's rows into a window (placement), from the host copy.
  source = ctx.data.train_data
  host_index = sharding.fetch(index) if isinstance(source, placement.StreamedSplit) else None

  def window(start):  # transfers only: the programs stay on this thread, one at a time
    return source.window(None if host_index is None else host_index[start : start + batch_size])

  batch_key = _batch_key_maker(sharding.replicated(mesh))
  starts = range(0, batches * batch_size, batch_size)
  parts = []
  for start, data in zip(starts, placement.prefetched(window, starts)):
    keys = {} if rng is None else {"rng": batch_key(rng, np.int32(start // batch_size))}
    start = np.int32(start)
    batch = {"index": take(index, start), **{k: take(v, start) for k, v in extra.items()}, **keys}
    parts.append(jax.block_until_ready(batch_fn(scoring_state, data, batch)))
  parts += [jax.tree.map(jnp.zeros_like, parts[0])] * (slots - batches)
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def pool_outputs(
  ctx: ScoringContext,
  batch_fn: Callable[..., jax.Array],
  scoring_state: Any,
  extra: Optional[dict[str, jax.Array]] = None,
  batch_size: Optional[int] = None,
  rng: Optional[jax.Array] = None,
) -> jax.Array:
  """Runs a jitted `batch_fn(scoring_state, data, batch) -> (B, ...)` over the recorded pool.

  `batch` holds 'index' (B,) int32 training-set rows; 'rng', a key of its own for each batch
  (a replicated scalar key: fold_in of the batch's number into `rng`, default the cycle's
  key ctx.rng, in its own stream BATCH_KEY_STREAM); and, for each key of `extra` (arrays
  aligned with the padded pool index, e.g. the record's mean), that array's rows for the
  batch. A scorer that ignores batch['rng'] computes what it did before there was one. One
  that draws from it draws per batch: its scores then depend on where the batches fall (the
  eval batch size, the candidates' order); a draw that must not (a sample's dropout masks)
  folds the row into a key that does not depend on the batch (mc_dropout.py's, from its
  scoring state). Two calls in one score draw the same keys unless given different `rng`.

  Only the batches that hold candidates are computed. `batch_size` (default: the eval batch)
  bounds what one call holds in memory (per-sample gradients). Returns the (P_pad, ...)
  outputs on device, P_pad the run's padded pool length: the first P = len(ctx.candidates)
  rows are the candidates', the rest padding. The shape is the same in every cycle of a run,
  so a smaller pool compiles nothing again; cut on the host, or pass the count to a jitted
  consumer (as selectors.k_center_greedy takes it).
  """
  return _map_batches(
    batch_fn,
    scoring_state,
    ctx,
    ctx.result.pool_index,
    len(ctx.candidates),
    extra,
    batch_size,
    _batches_key(ctx, rng),
  )


def batched_pool_scores(
  ctx: ScoringContext,
  batch_fn: Callable[..., jax.Array],
  scoring_state: Any,
  extra: Optional[dict[str, jax.Array]] = None,
  batch_size: Optional[int] = None,
  rng: Optional[jax.Array] = None,
) -> np.ndarray:
  """`pool_outputs` fetched to the host: the (P,) scores of ctx.candidates as numpy (each
  batch gets its key, batch['rng'], as there)."""
  outputs = pool_outputs(ctx, batch_fn, scoring_state, extra, batch_size, rng)
  return sharding.fetch(outputs)[: len(ctx.candidates)]


def compiled_bytes(
  batch_fn: Callable[..., jax.Array],
  scoring_state: Any,
  ctx: ScoringContext,
  batch_size: int,
  extra: Optional[dict[str, jax.Array]] = None,
) -> int:
  """Device bytes one call of `batch_fn` on `batch_size` rows needs beyond its inputs: XLA's
  compiled temporaries plus outputs, per device (the batch split as in `pool_outputs`)."""
  split = sharding.along_data(ctx.data.mesh)
  batch = {"index": jax.ShapeDtypeStruct((batch_size,), jnp.int32, sharding=split)}
  key = _batches_key(ctx, None)
  if key is not None:  # as pool_outputs hands it
    batch["rng"] = jax.ShapeDtypeStruct(
      key.shape, key.dtype, sharding=sharding.replicated(ctx.data.mesh)
    )
  for key, value in (extra or {}).items():
    batch[key] = jax.ShapeDtypeStruct((batch_size,) + value.shape[1:], value.dtype, sharding=split)
  data = placement.abstract_window(ctx.data.train_data, batch_size)
  compiled = jax.jit(batch_fn).lower(scoring_state, data, batch).compile()
  memory = compiled.memory_analysis()
  return int(memory.temp_size_in_bytes + memory.output_size_in_bytes)


def fit_batch_size(
  bytes_at: Callable[[int], int], budget_bytes: int, multiple: int, limit: int, probe: int = 8
) -> int:
  """The largest batch (a multiple of `multiple`, at most `limit`) whose measured memory
  `bytes_at(batch)` fits `budget_bytes`.

  Memory is close to affine in the batch (fixed buffers + per-sample activations or
  gradients): two probes give the line, the prediction is checked by measuring it, and
  shrunk in proportion while it does not fit. Raises MemoryError when one `multiple` does
  not fit, naming the bytes it needs.
  """
  probe = max(multiple, probe // multiple * multiple)
  small, large = bytes_at(probe), bytes_at(2 * probe)
  per_sample = max((large - small) / probe, 1.0)
  fixed = small - per_sample * probe
  limit = max(multiple, limit // multiple * multiple)
  size = int((budget_bytes - fixed) // per_sample) // multiple * multiple
  size = min(max(size, multiple), limit)
  for _ in range(8):
    needed = bytes_at(size)
    if needed <= budget_bytes:
      return size
    if size == multiple:
      raise MemoryError(
        f"scoring {size} sample(s) per call needs {needed / 2**20:.1f} MiB, "
        f"more than per_sample.memory_budget_mb={budget_bytes / 2**20:g}; "
        "raise it (or set it to 0 and size the chunks by hand)"
      )
    size = max(multiple, int(size * budget_bytes / needed) // multiple * multiple)
  return size


def per_sample_batch_size(
  ctx: ScoringContext,
  batch_fn: Callable[..., jax.Array],
  scoring_state: Any,
  fixed: int,
  extra: Optional[dict[str, jax.Array]] = None,
) -> int:
  """Samples per call of a per-sample-gradient scorer: `fixed` (the chunk keys), or, when
  config.per_sample.memory_budget_mb > 0, the most that fit that budget on one device
  (measured from XLA's compiled memory, `fit_batch_size`)."""
  budget_mb = ctx.config.per_sample.memory_budget_mb
  if not budget_mb:
    return fixed
  devices = ctx.data.mesh.size
  limit = max(devices, -(-len(ctx.candidates) // devices) * devices)
  bytes_at = functools.cache(lambda size: compiled_bytes(batch_fn, scoring_state, ctx, size, extra))
  return fit_batch_size(bytes_at, int(budget_mb * 2**20), devices, limit)


def map_rows(
  ctx: ScoringContext,
  batch_fn: Callable[..., jax.Array],
  scoring_state: Any,
  rows: np.ndarray,
  capacity: int = 0,
  batch_size: Optional[int] = None,
  extra: Optional[dict[str, np.ndarray]] = None,
  rng: Optional[jax.Array] = None,
) -> jax.Array:
  """Runs `batch_fn(scoring_state, data, {'index': (B,), 'rng': key, **extra}) -> (B, ...)`
  over rows.

  Rows (N,) of the training set are padded to whole batches of `batch_size` (default: the
  eval batch) and split over the devices; each batch has its key as in `pool_outputs` (from
  `rng`, default ctx.rng); each array of `extra` (N, ...), aligned with
  `rows`, is padded with zeros (False) alike and gives the batch its rows. The result
  (N, ...) stays on device. With `capacity` > 0 the result keeps max(N, capacity) rows
  rounded up to whole batches (rows from N on are padding), the same shape for every N up to
  capacity.
  """
  batch_size = batch_size or ctx.config.train.eval_batch_size
  padded, _ = pad_to_multiple(np.asarray(rows), batch_size)
  if capacity > len(padded):
    padded = np.pad(padded, (0, capacity - len(padded)))
  split = sharding.along_data(ctx.data.mesh)
  index = jax.device_put(padded, split)
  extra = {
    key: jax.device_put(
      np.pad(value, [(0, len(padded) - len(value))] + [(0, 0)] * (value.ndim - 1)), split
    )
    for key, value in (extra or {}).items()
  }
  outputs = _map_batches(
    batch_fn, scoring_state, ctx, index, len(rows), extra, batch_size, _batches_key(ctx, rng)
  )
  return outputs if capacity else jax.tree.map(lambda x: x[: len(rows)], outputs)


def batch_logits(state: TrainState, preprocess: Preprocess, pixel_stride: int = 1):
  """model(variables, images) -> (B, C) float32 logits of (B, H, W, C) uint8 images, eval mode
  (the form `per_sample.Engine` takes); segmentation: (B, H/stride, W/stride, C) block means
  (disal_jax.training.pixels)."""

  def model(variables, images):
    logits = state.apply_fn(variables, preprocess.normalise(images), train=False)["logits"]
    return pixels.to_record_resolution(logits, pixel_stride)

  return model


def entropy(probs: jax.Array, axis: int = -1) -> jax.Array:
  """Shannon entropy in nats along `axis`; 0 log 0 = 0."""
  return -jnp.sum(jax.scipy.special.xlogy(probs, probs), axis=axis)


def entropy_of_logits(logits: jax.Array) -> jax.Array:
  """(...,) entropy of softmax(logits) along the last axis, differentiable everywhere.

  `entropy(softmax(z))` has a NaN gradient once a probability underflows to 0 (d/dp p log p
  = -inf, times dp/dz = 0), which a confident trained model reaches; -sum p log_softmax(z)
  has the same value and a finite gradient.
  """
  logits = logits.astype(jnp.float32)
  return -jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits), axis=-1)

"""A tiny scoring context, so that a strategy's contract runs in the fast tier in seconds.

`tiny_context` builds the ScoringContext the loop would hand a strategy after a cycle's
training, without training: a small synthetic dataset on the device mesh, the strategy's own
model (its model overrides and train-step hook's module and extras included) in a fresh
state or one the caller sets by hand, the candidates and labeled rows the caller names, and
the pool index padded to the run's capacity as the trainer pads it. A test then runs the
registered strategy on it (`base.score_and_select`) and checks the picks against a
computation of its own.

    config = ...  # a config whose model is small (e.g. model.width=2)
    dataset = testing.tiny_dataset(num_train=16, num_classes=3)
    ctx = testing.tiny_context(config, registry.get_strategy("entropy"), dataset,
                               candidates=[7, 3, 11, 0, 9], labeled=[1, 2])
    scores, picks = base.score_and_select(registry.get_strategy("entropy"), ctx, 2)
"""

from __future__ import annotations

import pathlib
from typing import Any, Optional, Sequence

import jax
import ml_collections
import numpy as np

from disal_jax.data.dataset import Dataset
from disal_jax.models.registry import build_model
from disal_jax.strategies.base import EpochCallback, ScoringContext, Strategy, scoring_data
from disal_jax.training import record as record_lib
from disal_jax.training import sharding
from disal_jax.training.state import TrainState
from disal_jax.training.trainer import CycleResult, Trainer


def tiny_dataset(num_train: int = 16, num_classes: int = 3, size: int = 8, channels: int = 3,
                 num_test: int = 4, seed: int = 0) -> Dataset:
  """A synthetic classification dataset of uniform-noise uint8 images, (size, size, channels),
  every class present in both splits."""
  rng = np.random.default_rng(seed)

  def split(count):
    images = rng.integers(0, 256, (count, size, size, channels), dtype=np.uint8)
    return images, (np.arange(count) % num_classes).astype(np.int32)

  train_images, train_labels = split(num_train)
  test_images, test_labels = split(num_test)
  return Dataset("tiny", train_images, train_labels, test_images, test_labels,
                 tuple(f"class{c}" for c in range(num_classes)))


def tiny_trainer(config: ml_collections.ConfigDict, strategy: Strategy, dataset: Dataset,
                 mesh: Optional[jax.sharding.Mesh] = None) -> Trainer:
  """The trainer of `strategy`'s runs on `dataset` (its model overrides and train-step hook),
  as the loop builds it; nothing is trained or compiled."""
  model_cfg = ml_collections.ConfigDict(config.model.to_dict())
  if strategy.model_overrides is not None:
    model_cfg.update(strategy.model_overrides(config))
  hook = strategy.make_hook(config) if strategy.make_hook else None
  return Trainer(config, build_model(model_cfg, dataset.num_classes), dataset,
                 mesh or sharding.make_mesh(), hook=hook)


def perturbed(tree: Any, key: jax.Array, scale: float) -> Any:
  """`tree` with independent N(0, scale^2) noise added to every floating leaf (hand-made
  parameters: a checkpoint, a cycle's start, a less uniform fresh model)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  out = [x + scale * jax.random.normal(k, x.shape, x.dtype)
         if jax.numpy.issubdtype(x.dtype, jax.numpy.floating) else x
         for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, out)


def mean_record(mean: np.ndarray) -> record_lib.PoolRecord:
  """A PoolRecord holding only `mean` (P_pad, ...) aligned with the padded pool index, as the
  trainer's eval-pass record at level 'mean' (one epoch recorded)."""
  return record_lib.PoolRecord(jax.numpy.asarray(mean, jax.numpy.float32),
                               jax.numpy.float32(1.0), jax.numpy.int32(1), None, None)


def tiny_context(config: ml_collections.ConfigDict, strategy: Strategy, dataset: Dataset,
                 candidates: Sequence[int], labeled: Sequence[int], *,
                 state: Optional[TrainState] = None, start_params: Any = None,
                 record: Optional[record_lib.PoolRecord] = None,
                 epoch_callback: Optional[EpochCallback] = None, rng: Optional[jax.Array] = None,
                 cycle: int = 0, pool_capacity: int = 0,
                 run_dir: Optional[pathlib.Path] = None,
                 trainer: Optional[Trainer] = None) -> ScoringContext:
  """The ScoringContext of one cycle of `strategy` on `dataset`, as the loop builds it.

  Args:
    config: the experiment config; its model should be small (model.width 2-4), and
      config.train.eval_batch_size sets the scoring batches and the pool padding.
    strategy: the strategy scored (its model overrides and hook shape the model).
    dataset: e.g. `tiny_dataset()`; placed on the mesh as the trainer places it.
    candidates: (P,) unlabeled training rows, in record order (any order, not only sorted).
    labeled: (L,) labeled training rows.
    state: the trained state; default: a fresh one, `trainer.init_state(key(0))`.
    start_params: the parameters the cycle started from (DISAL's direction); default: the
      state's own (a zero direction).
    record: the pool's probability record aligned with the padded pool index, or None.
    epoch_callback: the cycle's epoch callback (TracInCP's checkpoints), or None.
    rng: the cycle's scoring key; default: key(0).
    cycle: the cycle number.
    pool_capacity: the run's largest pool; the pool index is padded to it (and to whole
      eval batches), as `Trainer.train_cycle` pads it.
    run_dir: the run's folder, for strategies that keep files between cycles.
    trainer: the trainer to take the data and fresh state from (default: `tiny_trainer`).
  Returns:
    The context; its `result.state` is replicated on the mesh.
  """
  candidates = np.asarray(candidates, np.int64)
  labeled = np.asarray(labeled, np.int64)
  if np.intersect1d(candidates, labeled).size or len(np.unique(candidates)) != len(candidates):
    raise ValueError("candidates must be distinct rows, none of them labeled")
  trainer = trainer or tiny_trainer(config, strategy, dataset)
  if state is None:
    state = trainer.init_state(jax.random.key(0))
  state = sharding.put_replicated(state, trainer.mesh)
  pool_index = np.zeros(trainer.padded_pool_length(len(candidates), pool_capacity), np.int32)
  pool_index[:len(candidates)] = candidates
  result = CycleResult(state=state,
                       start_params=state.params if start_params is None else start_params,
                       record=record,
                       pool_index=jax.device_put(pool_index,
                                                 sharding.along_data(trainer.mesh)),
                       test={}, epochs=[], train_seconds=0.0, record_seconds=0.0)
  return ScoringContext(config, scoring_data(trainer), result, candidates, labeled,
                        jax.random.key(0) if rng is None else rng, cycle, epoch_callback,
                        run_dir)

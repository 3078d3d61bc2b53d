"""The train hook's seam with the trainer (training/trainer.py: TrainHook): what a hook leaves
out adds nothing, a cycle trains with the hook `for_cycle` returns for its sizes, and the step
inputs a hook declares are split over the devices and windowed whatever their names."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.training import sharding
from disal_jax.training import trainer as trainer_lib
from disal_jax.training.trainer import CycleShape, Trainer, TrainHook
from tests.helpers import REPO, subprocess_env, tiny_config, xla_flags

# A small cycle on digits: every third of 120 rows labeled (40), the other 80 the pool.
NUM_ROWS = 120
LABELED = np.arange(0, NUM_ROWS, 3)
POOL = np.setdiff1d(np.arange(NUM_ROWS), LABELED)
# 6 steps over 2 epochs: 3 per epoch, more than the 2 of one pass over 40 rows in batches of 32
MIN_STEPS = 6
# What the configured (not yet adapted) hook of `_SizedHook` reports for every size.
NO_SHAPE = -1.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Bare(TrainHook):
  """A hook defining nothing: the base's defaults and its refusals."""


def test_a_hook_adds_nothing_it_does_not_define():
  hook, params = _Bare(), {"w": np.ones(2)}
  shape = CycleShape(labeled_size=1, pool_size=2, num_classes=3, steps_per_epoch=4, epochs=5)
  assert hook.init_params(jax.random.key(0), params, {}) is params
  assert hook.init_extras(10, 3, params) == {}
  assert hook.extras_per_cycle is False
  assert hook.joint_images(None, None, {}, {}, None, preprocess=None) is None
  assert all(hook.active(epoch) for epoch in range(5))
  assert hook.for_cycle(shape) is hook
  assert hook.batch_inputs == () and hook.pool_position_inputs == ()
  with pytest.raises(NotImplementedError, match="_Bare defines no loss"):
    hook.loss(params, None, None, {}, {}, None, {}, preprocess=None)
  with pytest.raises(NotImplementedError, match="_Bare defines no epoch_inputs"):
    hook.epoch_inputs(np.random.default_rng(0), 0, 1, 2, 3, (0,))
  with pytest.raises(NotImplementedError, match="_Bare defines no aux"):
    hook.aux(None, jnp.zeros(4, jnp.int32))


def test_a_hook_is_built_with_keywords():
  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Weighted(_Bare):
    weight: float

  with pytest.raises(TypeError):
    Weighted(1.0)  # pylint: disable=too-many-function-args
  assert Weighted(weight=1.0) == Weighted(weight=1.0)


def test_a_declared_input_epoch_inputs_lacks_is_refused():
  @dataclasses.dataclass(frozen=True, kw_only=True)
  class Misspelt(_Bare):
    batch_inputs: ClassVar[tuple[str, ...]] = ("weights",)
    pool_position_inputs: ClassVar[tuple[str, ...]] = ("draws",)

  inputs = {"draws": np.zeros((2, 4), np.int32), "weight": np.zeros((2, 4), np.float32)}
  with pytest.raises(ValueError, match=r"Misspelt declares the step inputs \['weights'\]"):
    trainer_lib.declared_inputs(Misspelt(), inputs)
  inputs["weights"] = inputs.pop("weight")
  split, positions = trainer_lib.declared_inputs(Misspelt(), inputs)
  assert split == {"draws", "weights"} and positions == {"draws"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class _SizedHook(TrainHook):
  """Adds no loss; reports, as metrics, the sizes of the cycle it was adapted to (NO_SHAPE
  as configured): the epochs' metrics say which hook trained them."""

  shape: Optional[CycleShape] = None

  def for_cycle(self, shape: CycleShape) -> _SizedHook:
    return dataclasses.replace(self, shape=shape)

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess):
    del params, data, batch, aux, rng, outputs, preprocess
    sizes = (
      {f.name: NO_SHAPE for f in dataclasses.fields(CycleShape)}
      if self.shape is None
      else dataclasses.asdict(self.shape)
    )
    return (jnp.zeros((), jnp.float32), {k: jnp.float32(v) for k, v in sizes.items()}, state.extras)

  def epoch_inputs(self, rng, epoch, num_steps, pool_size, labeled_size, cycle_seed):
    del rng, epoch, num_steps, pool_size, labeled_size, cycle_seed
    return {}

  def aux(self, record, pool_index):
    del record, pool_index
    return {}


def _trainer(config, hook: TrainHook) -> Trainer:
  dataset = load_dataset(config.data)
  return Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh(), hook=hook
  )


def test_a_cycle_trains_with_the_hook_for_cycle_returns_for_its_sizes():
  config = tiny_config(**{"data.max_train": NUM_ROWS, "train.min_steps": MIN_STEPS})
  trainer = _trainer(config, _SizedHook())
  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)), LABELED, POOL, (0, 0), cycle=0
  )
  epochs = config.train.epochs
  assert int(result.state.step) == MIN_STEPS  # the steps the cycle really ran
  expected = {
    "labeled_size": len(LABELED),
    "pool_size": len(POOL),
    "num_classes": trainer.dataset.num_classes,
    "steps_per_epoch": MIN_STEPS // epochs,
    "epochs": epochs,
  }
  assert len(result.epochs) == epochs
  for metrics in result.epochs:
    assert {k: metrics[k] for k in expected} == expected


@dataclasses.dataclass(frozen=True, kw_only=True)
class _PoolReader(TrainHook):
  """Reads the pool rows of `draws` (a position input named without any suffix); `scale`
  is a per-step number, replicated. Its metric is the mean pixel of the rows it read."""

  batch_size: int
  pool_position_inputs: ClassVar[tuple[str, ...]] = ("draws",)

  def epoch_inputs(self, rng, epoch, num_steps, pool_size, labeled_size, cycle_seed):
    del epoch, labeled_size, cycle_seed
    return {
      "draws": rng.integers(0, pool_size, (num_steps, self.batch_size), np.int32),
      "scale": np.full((num_steps,), 2.0, np.float32),
    }

  def aux(self, record, pool_index):
    del record
    return {"pool_index": pool_index}

  def loss(self, params, state, data, batch, aux, rng, outputs, *, preprocess):
    del params, rng, outputs, preprocess
    images = data.images_at(aux["pool_index"][batch["draws"]]).astype(jnp.float32)
    return (
      jnp.zeros((), jnp.float32),
      {"pool_pixel": batch["scale"] * jnp.mean(images)},
      state.extras,
    )


def check_declared_inputs_reach_the_step(cache_dir: str) -> None:
  """One streamed cycle with `_PoolReader` on all devices: each step's `draws` is split over
  the devices, `scale` replicated, the window holds the drawn pool rows, and the step read
  those rows' images (its metric against the host's)."""
  devices = jax.device_count()
  config = tiny_config(
    **{
      "data.max_train": NUM_ROWS,
      "train.min_steps": MIN_STEPS,
      "data.placement": "stream",
      "data.cache_dir": cache_dir,
    }
  )
  hook = _PoolReader(batch_size=2 * devices)
  seen = []
  real = trainer_lib.jitted_steps

  def spying(mesh, preprocess, hook, pixel_stride=1):
    compiled = real(mesh, preprocess, hook, pixel_stride)
    if hook is None:
      return compiled

    def train(state, data, batch, aux):
      draws = batch["draws"]
      assert draws.sharding.spec == jax.sharding.PartitionSpec(sharding.DATA_AXIS)
      assert draws.sharding.shard_shape(draws.shape) == (hook.batch_size // devices,)
      assert batch["scale"].sharding.is_fully_replicated
      seen.append((np.asarray(draws), np.asarray(data.rows)))
      return compiled.train(state, data, batch, aux)

    return dataclasses.replace(compiled, train=train)

  trainer_lib.jitted_steps = spying
  try:
    trainer = _trainer(config, hook)
    result = trainer.train_cycle(
      trainer.init_state(jax.random.key(0)), LABELED, POOL, (0, 0), cycle=0
    )
  finally:
    trainer_lib.jitted_steps = real
  assert trainer.streamed and len(seen) == MIN_STEPS
  images = np.asarray(trainer.dataset.train_images, np.float64)
  pixels = []
  for draws, window in seen:
    assert np.isin(POOL[draws], window).all()  # a streamed window holds no other rows
    pixels.append(2.0 * images[POOL[draws]].mean())
  steps = MIN_STEPS // config.train.epochs
  for epoch, metrics in enumerate(result.epochs):
    np.testing.assert_allclose(
      metrics["pool_pixel"], np.mean(pixels[epoch * steps : (epoch + 1) * steps]), rtol=1e-5
    )


def test_declared_pool_positions_are_windowed_and_split_whatever_their_name(tmp_path):
  check_declared_inputs_reach_the_step(str(tmp_path))


_ON_EIGHT_DEVICES = """
import jax
from disal_jax import platform_settings
platform_settings.apply()
from tests.test_train_hook import check_declared_inputs_reach_the_step
assert jax.device_count() == 8
check_declared_inputs_reach_the_step({cache!r})
print("ok")
"""


@pytest.mark.slow
def test_declared_pool_positions_are_split_over_eight_devices(tmp_path):
  done = subprocess.run(
    [sys.executable, "-c", _ON_EIGHT_DEVICES.format(cache=str(tmp_path))],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env=subprocess_env(XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=8")),
  )
  assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]

"""DISAL's guards: a cycle drawing each pool sample too few times trains without the dynamic
loss ('adapt', logged) or stops before training ('refuse'); a cold start (few labels per class)
picks Random's rows; the shipped configs' cycles are untouched (their published results hold)."""

import dataclasses
import logging
import types

import jax
import numpy as np
import pytest

from disal_jax.data import long_tail
from disal_jax.data import registry as data_registry
from disal_jax.errors import ConfigError
from disal_jax.strategies import disal
from disal_jax.strategies import random as random_strategy
from disal_jax.strategies.base import select_top_k
from disal_jax.training.trainer import CycleShape
from tests.helpers import load_config, tiny_config, with_overrides


def test_the_reason_names_the_draws_and_the_keys_and_none_from_two_draws_on():
  # 100 steps x 32 rows = 3,200 draws
  assert disal.unsafe_loss_reason(1600, 100, 32, "train_branch", 2.0) is None  # 2 draws
  reason = disal.unsafe_loss_reason(1601, 100, 32, "train_branch", 2.0)
  assert "1601 pool samples 2.00 times" in reason  # 1.9988 rounds up: the bound is exact
  assert "guard_min_pool_draws=2" in reason and "train.min_steps" in reason
  assert disal.unsafe_loss_reason(100_000, 100, 32, "train_branch", 0.0) is None  # off
  # The eval pass refreshes every target each epoch: no repeated draws needed.
  assert disal.unsafe_loss_reason(100_000, 100, 32, "eval_pass", 2.0) is None


def _shape(pool, steps_per_epoch=10, epochs=4):
  return CycleShape(
    labeled_size=100, pool_size=pool, num_classes=10, steps_per_epoch=steps_per_epoch, epochs=epochs
  )


def _hook(**overrides):
  config = tiny_config(
    **{
      "disal.target_source": "train_branch",
      "disal.dynamic_weight": 10.0,
      "disal.dynamic_batch_size": 32,
      "disal.guard_min_pool_draws": 2.0,
      "train.epochs": 4,
      **overrides,
    }
  )
  return disal.make_hook(config)


def test_adapt_trains_an_unsafe_cycle_at_lambda_zero_and_logs_why(caplog):
  hook = _hook(**{"disal.loss_guard": "adapt"})
  assert hook.for_cycle(_shape(pool=640)) is hook  # 4 x 10 steps x 32 / 640 = 2 draws
  with caplog.at_level(logging.WARNING):
    adapted = hook.for_cycle(_shape(pool=641))
  assert adapted == dataclasses.replace(hook, weight=0.0)  # nothing else changes
  assert "641 pool samples" in caplog.text and "loss_guard='off'" in caplog.text


def test_the_branch_start_shortens_the_cycle_the_draws_are_counted_over():
  # From half of 4 epochs the branch draws 2 x 10 x 32 = 640 rows: 2 draws of 320, 1 of 640.
  hook = _hook(**{"disal.loss_guard": "adapt", "disal.branch_start_fraction": 0.5})
  assert hook.for_cycle(_shape(pool=320)) is hook
  assert hook.for_cycle(_shape(pool=640)).weight == 0.0


def test_off_and_lambda_zero_train_as_configured_and_refuse_raises():
  unsafe = _shape(pool=10_000)
  off = _hook(**{"disal.loss_guard": "off"})
  assert off.for_cycle(unsafe) is off
  plain = _hook(**{"disal.loss_guard": "adapt", "disal.dynamic_weight": 0.0})
  assert plain.for_cycle(unsafe) is plain
  with pytest.raises(ConfigError, match="guard_min_pool_draws"):
    _hook(**{"disal.loss_guard": "refuse"}).for_cycle(unsafe)


def _guard_config(**overrides):
  return tiny_config(
    **{
      "al.initial_count": 50,
      "al.step_count": 100,
      "al.final_count": 250,
      "train.epochs": 2,
      "train.min_steps": 100,
      "train.batch_size": 32,
      "disal.dynamic_batch_size": 32,
      "disal.branch_start_fraction": 0.0,
      "disal.target_source": "train_branch",
      "disal.guard_min_pool_draws": 2.0,
      **overrides,
    }
  )


def test_each_cycles_decision_is_known_before_training():
  config = _guard_config()
  reasons = dict(disal.cycle_guard_reasons(config, num_train=1850))
  assert list(reasons) == [50, 150, 250]
  # 2 epochs x max(ceil(labeled / 32), 100 / 2) = 100 steps x 32 = 3,200 draws per cycle:
  assert "1800 pool samples 1.78 times" in reasons[50]  # 3200 / 1800
  assert "1700 pool samples 1.88 times" in reasons[150]
  assert reasons[250] is None  # 3200 / 1600 = 2
  with_overrides(config, **{"al.subset_size": 1000})  # the pool is the scored subset
  assert all(reason is None for _, reason in disal.cycle_guard_reasons(config, 1850))


def _dataset(num_train, num_classes=10, segmentation=False):
  return types.SimpleNamespace(
    num_train=num_train, num_classes=num_classes, is_segmentation=segmentation
  )


def test_refuse_stops_before_training_naming_the_first_unsafe_cycle():
  config = _guard_config(**{"disal.loss_guard": "refuse"})
  with pytest.raises(ConfigError, match="at 50 labels.*1700 pool samples"):
    disal.check_for_dataset(config, _dataset(1750))  # 50 labels: 1700 rows, 1.88 draws
  disal.check_for_dataset(config, _dataset(1650))  # every cycle at 2 draws or more
  with_overrides(config, **{"disal.loss_guard": "adapt"})
  disal.check_for_dataset(config, _dataset(1850))  # adapts per cycle instead


def test_the_shipped_configs_cycles_are_all_inside_the_guard():
  """The offline default (digits, loaded), CIFAR-10 on CPU (its pool is max_train rows) and
  CIFAR10-IR100 on CPU: the guard changes no cycle (their published tables hold)."""
  default = load_config("default")
  digits = data_registry.load_dataset(default.data)
  cifar = load_config("cifar10_cpu")
  # CIFAR10-IR100 on CPU: 4,800 -> 48 rows per class after the validation split (11,909)
  ir100 = load_config("cifar10_ir100_cpu")
  ir100_rows = int(long_tail.long_tail_counts(4800, 10, ir100.data.imbalance_ratio).sum())
  for config, num_train in (
    (default, digits.num_train),
    (cifar, cifar.data.max_train),
    (ir100, ir100_rows),
  ):
    reasons = disal.cycle_guard_reasons(config, num_train)
    assert len(reasons) == 7 and all(reason is None for _, reason in reasons), reasons


def _context(labeled, num_classes=10, pool=50, bound=10.0, segmentation=False):
  config = tiny_config(**{"disal.cold_start_labels_per_class": bound})
  dataset = types.SimpleNamespace(num_classes=num_classes, is_segmentation=segmentation)
  candidates = np.arange(1000, 1000 + 3 * pool, 3)  # not 0..P-1: rows, not positions
  return types.SimpleNamespace(
    config=config,
    data=types.SimpleNamespace(dataset=dataset),
    labeled=np.arange(labeled),
    candidates=candidates,
    rng=jax.random.key(7),
    cycle=1,
    result=None,
  )


def test_a_cold_start_is_fewer_labels_per_class_than_the_bound():
  assert disal.cold_start(_context(labeled=99))  # 9.9 per class
  assert not disal.cold_start(_context(labeled=100))
  assert not disal.cold_start(_context(labeled=99, bound=0.0))  # off: the paper's DISAL
  assert not disal.cold_start(_context(labeled=5, segmentation=True))  # no class per image
  assert disal.cold_start(_context(labeled=199, num_classes=20))


def test_a_cold_start_picks_randoms_rows_from_the_same_key(caplog):
  ctx = _context(labeled=40)
  with caplog.at_level(logging.INFO):
    scores = disal.disal_scores(ctx)  # returns before touching the (absent) trained model
  assert "cold start" in caplog.text and "cold_start_labels_per_class=10" in caplog.text
  np.testing.assert_array_equal(scores, random_strategy.random_scores(ctx))
  picks = disal.select(scores, ctx, 7)
  np.testing.assert_array_equal(picks, select_top_k(random_strategy.random_scores(ctx), ctx, 7))
  # Even with the class-balanced selection (no model pass in a cold start).
  with_overrides(ctx.config, **{"disal.selection": "class_balanced"})
  np.testing.assert_array_equal(disal.select(scores, ctx, 7), picks)

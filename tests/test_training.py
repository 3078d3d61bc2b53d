import dataclasses
import json
import logging
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.strategies import disal
from disal_jax.training import sharding
from disal_jax.training.state import make_optimizer
from disal_jax.training.trainer import (
  Recording,
  Trainer,
  epoch_batches,
  pad_to_multiple,
  steps_per_epoch,
)
from tests.helpers import REPO, subprocess_env, tiny_config, with_overrides, xla_flags


def test_epoch_batches_cover_every_labeled_sample_in_fixed_shapes():
  labeled = np.arange(10, 47)
  batches, fresh = epoch_batches(np.random.default_rng(0), labeled, 8)
  assert batches.shape == (5, 8) and batches.dtype == np.int32
  assert set(batches.ravel()) == set(labeled)  # every sample at least once, nothing else
  assert np.isin(batches, labeled).all()
  assert fresh.sum() == len(labeled)  # the fill is not fresh
  assert sorted(batches[fresh].tolist()) == labeled.tolist()


def test_min_steps_stretches_an_epoch_into_whole_passes():
  labeled = np.arange(10, 47)  # 37 samples, batch 8: one pass is 5 steps
  assert steps_per_epoch(37, 8, epochs=4, min_steps=0) == 5
  assert steps_per_epoch(37, 8, epochs=4, min_steps=60) == 15
  assert steps_per_epoch(37, 8, epochs=4, min_steps=8) == 5  # never fewer than one pass
  batches, fresh = epoch_batches(np.random.default_rng(0), labeled, 8, num_steps=15)
  assert batches.shape == (15, 8)
  counts = np.bincount(batches[fresh], minlength=47)[10:]
  assert (counts == 3).all()  # 120 slots: three whole passes (111), then 9 drawn at random
  assert (~fresh).sum() == 120 - 3 * 37


def test_pad_to_multiple_masks_the_padding():
  padded, mask = pad_to_multiple(np.array([5, 6, 7]), 4)
  assert padded.tolist() == [5, 6, 7, 0] and mask.tolist() == [True, True, True, False]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_the_optimiser_is_pytorchs_with_weight_decay_in_the_gradient(optimizer):
  """Three steps of the configured optimiser against PyTorch's update written in numpy, the
  lr decaying after two (three epochs of one step): d = g + wd * p, then SGD (buf =
  momentum * buf + d; p -= lr * buf) or Adam (its L2 form, not AdamW: bias-corrected
  moments of d)."""
  cfg = tiny_config(
    **{
      "train.optimizer": optimizer,
      "train.momentum": 0.8,
      "train.weight_decay": 0.05,
      "train.learning_rate": 0.3,
      "train.epochs": 3,
      "train.lr_decay_at": 0.67,
      "train.lr_decay_factor": 0.1,
    }
  ).train
  tx = make_optimizer(cfg)
  rng = np.random.default_rng(0)
  params = {"w": rng.normal(size=(3, 2)).astype(np.float32)}
  grads = [rng.normal(size=(3, 2)).astype(np.float32) for _ in range(3)]
  lrs = [0.3, 0.3, 0.03]
  p, buf, m, v = params["w"].astype(np.float64), np.zeros((3, 2)), 0.0, 0.0
  opt_state, got = tx.init(params), params  # one step per epoch: the initial cycle length
  for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
    d = g + 0.05 * p
    if optimizer == "sgd":
      buf = 0.8 * buf + d
      p = p - lr * buf
    else:
      m, v = 0.9 * m + 0.1 * d, 0.999 * v + 0.001 * d**2
      p = p - lr * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    updates, opt_state = tx.update({"w": jnp.asarray(g)}, opt_state, got)
    got = optax.apply_updates(got, updates)
  # atol: Adam's 1 - 0.999^t in float32 (0.999 rounds up by 1.3e-8) is 1.3e-5 off
  np.testing.assert_allclose(got["w"], p, rtol=1e-5, atol=2e-5)


def _train(config, hook=None, epochs_seed=(0, 0)):
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh(), hook=hook
  )
  labeled = np.arange(0, dataset.num_train, 4)
  pool = np.setdiff1d(np.arange(dataset.num_train), labeled)
  level = disal.record_level(config) if hook is not None else "none"
  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    labeled,
    pool,
    epochs_seed,
    cycle=0,
    recording=Recording(level),
  )
  return result


@pytest.mark.slow
@pytest.mark.parametrize("source", ["eval_pass", "train_branch"])
def test_lambda_zero_trains_exactly_like_plain_training(source):
  config = tiny_config(
    **{
      "disal.dynamic_weight": 0.0,
      "disal.dynamic_warmup_epochs": 1,
      "disal.target_source": source,
      "disal.branch_start_fraction": 0.0,
      "train.min_steps": 36,
    }
  )  # 1,152 pool draws: the pool is 1,078
  plain = _train(config)
  if source == "eval_pass":
    assert disal.make_hook(config) is None  # the loop trains with the plain step
    hook = dataclasses.replace(
      disal.make_hook(
        with_overrides(config.copy_and_resolve_references(), **{"disal.dynamic_weight": 1.0})
      ),
      weight=0.0,
    )
  else:
    hook = disal.make_hook(config)  # the branch stays: it records p_bar
  with_branch = _train(config, hook=hook)
  # the dynamic branch ran (its loss was computed) but contributed nothing
  assert with_branch.epochs[-1]["dynamic_loss"] > 0
  for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(with_branch.state.params)):
    if source == "train_branch":  # a record-only branch has no gradient path: bit for bit
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    else:
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
  assert plain.test == pytest.approx(with_branch.test, rel=1e-6)
  if source == "train_branch":  # every pool row was drawn, so each has a target
    weight = np.asarray(with_branch.state.extras[disal.TARGET_WEIGHT])
    pool = np.setdiff1d(np.arange(len(weight)), np.arange(0, len(weight), 4))
    assert (weight[pool] > 0).all() and (weight[::4] == 0).all()


@pytest.mark.slow
def test_a_cycle_under_the_pool_draws_guard_trains_exactly_like_plain_training(caplog):
  """disal.loss_guard='adapt' on a cycle drawing each pool row under twice: the trainer takes
  the hook for_cycle returns (lambda 0), so the parameters are plain training's, bit for bit;
  with the guard off the same cycle trains differently."""
  config = tiny_config(
    **{
      "disal.dynamic_weight": 1.0,
      "disal.target_source": "train_branch",
      "disal.branch_start_fraction": 0.0,
      "disal.loss_guard": "adapt",
      "disal.guard_min_pool_draws": 2.0,
      "disal.dynamic_warmup_epochs": 0,
      "disal.weight_schedule": "constant",
      "train.min_steps": 36,
    }
  )  # 1,152 pool draws: the pool is 1,078
  plain = _train(config)
  with caplog.at_level(logging.WARNING):
    guarded = _train(config, hook=disal.make_hook(config))
  assert "trains without the dynamic loss" in caplog.text
  for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(guarded.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  unguarded = _train(
    config,
    hook=disal.make_hook(
      with_overrides(config.copy_and_resolve_references(), **{"disal.loss_guard": "off"})
    ),
  )
  assert any(
    not np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(unguarded.state.params))
  )


def test_min_steps_trains_more_steps_with_the_same_epochs():
  config = tiny_config(**{"train.min_steps": 40})
  labeled = len(np.arange(0, load_dataset(config.data).num_train, 4))
  one_pass = -(-labeled // config.train.batch_size)
  assert config.train.epochs * one_pass < 40  # so min_steps is what decides
  result = _train(config)
  assert len(result.epochs) == config.train.epochs
  assert int(result.state.step) == 40


@pytest.mark.slow
@pytest.mark.parametrize("source", ["eval_pass", "train_branch"])
def test_dynamic_loss_changes_training_when_lambda_is_positive(source):
  # 80 steps draw every pool sample more than twice: the train branch has targets to pull to
  config = tiny_config(
    **{
      "disal.dynamic_weight": 1.0,
      "disal.target_source": source,
      "train.min_steps": 80,
      "disal.branch_start_fraction": 0.0,
    }
  )
  plain = _train(config)
  dynamic = _train(config, hook=disal.make_hook(config))
  diffs = [
    np.abs(np.asarray(a) - np.asarray(b)).max()
    for a, b in zip(jax.tree.leaves(plain.state.params), jax.tree.leaves(dynamic.state.params))
  ]
  assert max(diffs) > 1e-4


@pytest.mark.slow
def test_training_learns_digits_well_above_chance():
  config = tiny_config(**{"model.width": 8, "train.epochs": 8})
  result = _train(config)
  assert result.test["accuracy"] > 0.5  # chance is 0.1
  assert result.epochs[-1]["loss"] < result.epochs[0]["loss"]


def _losses_on(devices: int) -> dict:
  out = subprocess.run(
    [sys.executable, "-m", "tests.multidevice_run"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env=subprocess_env(XLA_FLAGS=xla_flags(f"--xla_force_host_platform_device_count={devices}")),
  )
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_one_device_and_eight_devices_give_the_same_training():
  one, eight = _losses_on(1), _losses_on(8)
  assert one["devices"] == 1 and eight["devices"] == 8
  np.testing.assert_allclose(one["losses"], eight["losses"], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(one["record_mean"], eight["record_mean"], rtol=1e-4, atol=1e-5)
  assert one["test_accuracy"] == pytest.approx(eight["test_accuracy"], abs=1e-6)
  np.testing.assert_array_equal(one["augmented"], eight["augmented"])


@pytest.mark.parametrize(
  "weighting, start_epoch, decay", [("mean", 0, 0.6), ("lr", 0, 0.6), ("ema", 2, 0.3)]
)
def test_the_record_is_the_mean_of_every_epochs_eval_mode_softmax(weighting, start_epoch, decay):
  """record.mean[i] = the (lr-weighted, or bias-corrected EMA) mean over the epochs from
  record.start_epoch on of softmax(f_theta_e(x_i)), eval mode, with theta_e each epoch's end
  state, computed here by an independent forward pass."""
  config = tiny_config(
    **{
      "data.max_train": 120,
      "record.weighting": weighting,
      "record.start_epoch": start_epoch,
      "record.ema_decay": decay,
      "train.epochs": 4,
    }
  )
  dataset = load_dataset(config.data)
  model = build_model(config.model, dataset.num_classes)
  trainer = Trainer(config, model, dataset, sharding.make_mesh())
  labeled, pool = np.arange(0, 120, 3), np.setdiff1d(np.arange(120), np.arange(0, 120, 3))
  seen = []

  def on_epoch_end(state, epoch, lr):
    images = trainer.preprocess.normalise(jax.numpy.asarray(dataset.train_images[pool]))
    logits = model.apply(jax.device_get(state.variables()), images, train=False)["logits"]
    seen.append((np.asarray(jax.nn.softmax(logits), np.float64), lr))

  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    labeled,
    pool,
    (0, 0),
    cycle=0,
    recording=Recording("mean"),
    on_epoch_end=on_epoch_end,
  )
  lrs = np.array([lr for _, lr in seen])
  assert len(set(lrs)) == 2  # the lr decays within the cycle: 'lr' is not 'mean'
  probs = np.stack([p for p, _ in seen])[start_epoch:]
  if weighting == "ema":  # Laine & Aila: Z <- a Z + (1 - a) z from Z = 0, then Z / (1 - a^n)
    expected = np.zeros_like(probs[0])
    for p in probs:
      expected = decay * expected + (1 - decay) * p
    expected /= 1 - decay ** len(probs)
  else:
    weights = np.ones(len(probs)) if weighting == "mean" else lrs[start_epoch:]
    expected = np.tensordot(weights / weights.sum(), probs, axes=1)
  got = np.asarray(result.record.mean)[: len(pool)]
  np.testing.assert_allclose(got, expected, rtol=2e-4, atol=1e-6)
  assert int(result.record.count) == len(probs)
  assert np.abs(probs[0] - probs[-1]).max() > 1e-3  # the epochs really differ


@pytest.mark.slow
def test_epochs_before_the_branch_starts_are_plain_steps():
  """With the branch from half the epochs, the first half trains exactly as Random (the
  plain step: the same parameters bit for bit after that epoch) and the rest adds the loss."""
  config = tiny_config(
    **{
      "train.epochs": 2,
      "disal.branch_start_fraction": 0.5,
      "disal.dynamic_weight": 1.0,
      "train.min_steps": 40,
    }
  )
  hook = disal.make_hook(config)
  assert not hook.active(0) and hook.active(1)
  seen = {}
  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh(), hook=hook
  )
  labeled = np.arange(0, dataset.num_train, 4)
  pool = np.setdiff1d(np.arange(dataset.num_train), labeled)
  plain_trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh()
  )
  for name, t in (("plain", plain_trainer), ("disal", trainer)):
    seen[name] = []
    t.train_cycle(
      t.init_state(jax.random.key(0)),
      labeled,
      pool,
      (0, 0),
      cycle=0,
      on_epoch_end=lambda state, epoch, lr, n=name: seen[n].append(jax.device_get(state.params)),
    )
  for a, b in zip(jax.tree.leaves(seen["plain"][0]), jax.tree.leaves(seen["disal"][0])):
    np.testing.assert_array_equal(a, b)  # epoch 0: the plain step
  assert (
    max(
      np.abs(a - b).max()
      for a, b in zip(jax.tree.leaves(seen["plain"][1]), jax.tree.leaves(seen["disal"][1]))
    )
    > 1e-5
  )


class _Terminal:
  """A text stream that says it is a terminal and keeps what was written."""

  def __init__(self):
    self.text = ""

  def write(self, s):
    self.text += s

  def flush(self):
    pass

  def isatty(self):
    return True


@pytest.mark.slow
def test_a_terminal_gets_one_bar_per_cycle_and_no_epoch_lines(monkeypatch, caplog):
  from disal_jax.training import progress_bar

  terminal = _Terminal()
  monkeypatch.setattr(sys, "stderr", terminal)
  assert progress_bar.on_terminal()
  caplog.set_level("INFO", logger="disal_jax.training.trainer")
  config = tiny_config(**{"data.max_train": 200, "train.epochs": 3, "train.log_every_epochs": 1})
  _train(config)
  bar = terminal.text.replace("\r", "\n").splitlines()
  last = [line for line in bar if line.strip()][-1]
  assert "cycle 0" in last and "3/3" in last and "loss=" in last and "img/s=" in last
  assert not [r for r in caplog.records if "epoch" in r.getMessage()]
  # not a terminal: the per-epoch lines, no bar
  monkeypatch.setattr(sys, "stderr", __import__("io").StringIO())
  assert not progress_bar.on_terminal()
  _train(config)
  assert len([r for r in caplog.records if " epoch " in r.getMessage()]) == 3


def _crops(image: np.ndarray, padding: int, flip: bool) -> list[np.ndarray]:
  """Every output augment may give for `image` (H, W, C) in [0, 1]: each window of the
  zero-padded image, mirrored left-right too when flipping."""
  height, width = image.shape[:2]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  windows = [
    padded[dy : dy + height, dx : dx + width]
    for dy in range(2 * padding + 1)
    for dx in range(2 * padding + 1)
  ]
  return windows + ([w[:, ::-1] for w in windows] if flip else [])


@pytest.mark.parametrize("padding, flip", [(0, False), (0, True), (2, False), (2, True)])
def test_augment_crops_within_the_padding_and_flips_left_right_only_when_asked(padding, flip):
  from disal_jax.training.augment import Preprocess

  images = np.random.default_rng(0).integers(0, 256, (16, 6, 5, 2), dtype=np.uint8)
  out = np.asarray(
    Preprocess((0.0, 0.0), (1.0, 1.0), padding, flip).augment(
      jnp.asarray(images), jax.random.key(3)
    )
  )
  shifts, flips = set(), set()
  for image, got in zip(images.astype(np.float32) / 255, out):
    matches = [
      i for i, c in enumerate(_crops(image, padding, flip)) if np.allclose(got, c, atol=1e-6)
    ]
    assert matches, "not a crop of the padded image (or its mirror)"
    window = matches[0] % (2 * padding + 1) ** 2
    shifts.add(window)
    flips.add(matches[0] >= (2 * padding + 1) ** 2)
  # with 16 images every option shows up: some shifted and some not, some flipped and some not
  assert len(shifts) > 1 if padding else shifts == {0}
  assert flips == ({False, True} if flip else {False})


def test_the_trainer_augments_as_the_augment_section_says():
  images = load_dataset(tiny_config().data).train_images[:16]
  for padding, flip in ((0, False), (3, True)):
    config = tiny_config(**{"augment.crop_padding": padding, "augment.flip": flip})
    preprocess = Trainer(
      config, build_model(config.model, 10), load_dataset(config.data), sharding.make_mesh()
    ).preprocess
    augmented = preprocess.augment(jnp.asarray(images), jax.random.key(0))
    same = np.allclose(augmented, preprocess.normalise(jnp.asarray(images)))
    assert same == (padding == 0 and not flip)

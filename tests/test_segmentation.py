"""Segmentation: the synthetic shapes set, mIoU against numpy, pixel losses, crops, DISAL's
pixel scores against a per-sample loop, and short runs through the loop."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from disal_jax import config as config_lib
from disal_jax import loop
from disal_jax.data import shapes
from disal_jax.data.dataset import IGNORE_LABEL
from disal_jax.data.registry import load_dataset
from disal_jax.models import drn
from disal_jax.strategies import disal, gradnorm, mc_dropout, per_sample
from disal_jax.strategies import registry as strategy_registry
from disal_jax.training import pixels, segmentation_metrics
from disal_jax.training.augment import Preprocess
from disal_jax.training.state import create_state
from disal_jax.training.steps import DeviceData
from tests.helpers import TOY_VAAL, load_config, with_overrides


def _seg_config(**overrides):
  """The quick segmentation demo (200 shapes, width-4 DRN, 3 epochs), toy VAAL."""
  return with_overrides(
    load_config("segmentation_demo", "quick"), **{"full_training": False, **TOY_VAAL, **overrides}
  )


# -- data -------------------------------------------------------------------------------------
def test_shapes_are_reproducible_labelled_maps_with_an_ignore_band():
  a = shapes.load_shapes(12, 4, 32, 3, seed=5)
  b = shapes.load_shapes(12, 4, 32, 3, seed=5)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  np.testing.assert_array_equal(a.test_labels, b.test_labels)
  assert a.is_segmentation and a.train_labels.shape == (12, 32, 32)
  assert a.train_images.shape == (12, 32, 32, 3) and a.train_images.dtype == np.uint8
  values = set(np.unique(a.train_labels).tolist())
  assert values <= {0, 1, 2, 3, IGNORE_LABEL} and {0, IGNORE_LABEL} <= values
  assert len(values - {0, IGNORE_LABEL}) >= 2  # several object classes
  # the ignore band separates classes: no two labelled 4-neighbours differ
  lab = a.train_labels
  for x, y in ((lab[:, 1:], lab[:, :-1]), (lab[:, :, 1:], lab[:, :, :-1])):
    both = (x != IGNORE_LABEL) & (y != IGNORE_LABEL)
    assert np.all(x[both] == y[both])
  assert not np.array_equal(shapes.load_shapes(12, 4, 32, 3, seed=6).train_labels, lab)


# -- metrics and losses against numpy -----------------------------------------------------------
def _reference_miou(labels, predictions, num_classes):
  ious = []
  for c in range(num_classes):
    valid = labels != IGNORE_LABEL
    inter = np.sum((labels == c) & (predictions == c) & valid)
    union = np.sum(((labels == c) | (predictions == c)) & valid)
    if union:
      ious.append(inter / union)
  correct = np.sum((labels == predictions) & (labels != IGNORE_LABEL))
  return float(np.mean(ious)), correct / np.sum(labels != IGNORE_LABEL)


@pytest.mark.parametrize("num_classes", [3, 6])
def test_miou_and_pixel_accuracy_equal_a_numpy_reference(num_classes):
  rng = np.random.default_rng(num_classes)
  labels = rng.integers(0, num_classes, (6, 9, 11)).astype(np.int32)
  labels[rng.random(labels.shape) < 0.2] = IGNORE_LABEL
  if num_classes == 6:
    labels[labels == 5] = 0  # a class absent from the labels ...
  logits = rng.normal(size=(6, 9, 11, num_classes)).astype(np.float32)
  if num_classes == 6:
    logits[..., 5] = -10.0  # ... and from the predictions: left out of the mean
  predictions = logits.argmax(-1)
  mask = np.array([True] * 5 + [False])  # the last image is padding
  # accumulated over two batches, as the evaluation does
  first = segmentation_metrics.ConfusionMatrix.from_model_output(
    jnp.asarray(logits[:3]), jnp.asarray(labels[:3]), jnp.asarray(mask[:3])
  )
  second = segmentation_metrics.ConfusionMatrix.from_model_output(
    jnp.asarray(logits[3:]), jnp.asarray(labels[3:]), jnp.asarray(mask[3:])
  )
  matrix = np.asarray(first.merge(second).compute())
  miou, accuracy = _reference_miou(labels[:5], predictions[:5], num_classes)
  assert matrix.sum() == np.sum(labels[:5] != IGNORE_LABEL)
  assert segmentation_metrics.mean_iou(matrix) == pytest.approx(miou, rel=1e-12)
  assert segmentation_metrics.pixel_accuracy(matrix) == pytest.approx(accuracy, rel=1e-12)
  assert np.isnan(segmentation_metrics.iou_per_class(matrix)).sum() == (num_classes == 6)


def test_pixel_cross_entropy_skips_the_ignore_label():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 5, 6)).astype(np.float32)
  labels = rng.integers(0, 6, (3, 4, 5)).astype(np.int32)
  labels[0, 0, :] = IGNORE_LABEL
  labels[2] = IGNORE_LABEL  # an image with no labelled pixel
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  per_pixel = {
    (b, i, j): -log_p[b, i, j, labels[b, i, j]]
    for b in range(3)
    for i in range(4)
    for j in range(5)
    if labels[b, i, j] != IGNORE_LABEL
  }
  mean = pixels.mean_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  assert float(mean) == pytest.approx(np.mean(list(per_pixel.values())), rel=1e-5)
  per_image = pixels.per_sample_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
  for b, expected in enumerate(
    [np.mean([v for k, v in per_pixel.items() if k[0] == b]) for b in range(2)] + [0.0]
  ):
    assert float(per_image[b]) == pytest.approx(expected, rel=1e-5, abs=1e-7)
  # classification labels are never ignored, even class 255 of a 300-class problem
  many = jnp.zeros((2, 300)).at[:, 255].set(2.0)
  assert float(pixels.mean_cross_entropy(many, jnp.array([255, 255]))) == pytest.approx(
    np.log1p(299 * np.exp(-2.0)), rel=1e-5
  )


def test_record_resolution_is_the_block_mean():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 9, 12, 3)).astype(np.float32)  # 9 rows: one dropped at 4
  pooled = np.asarray(pixels.to_record_resolution(jnp.asarray(logits), 4))
  assert pooled.shape == (2, 2, 3, 3)
  for i in range(2):
    for j in range(3):
      np.testing.assert_allclose(
        pooled[:, i, j], logits[:, 4 * i : 4 * i + 4, 4 * j : 4 * j + 4].mean((1, 2)), rtol=1e-6
      )
  flat = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
  assert pixels.to_record_resolution(flat, 4) is flat


def test_crop_and_flip_move_image_and_label_map_together():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 200, (8, 10, 14)).astype(np.int32)
  images = np.repeat(labels[..., None], 3, axis=-1).astype(np.uint8)
  pre = Preprocess((0.0,) * 3, (1.0,) * 3, flip=True, crop_size=(6, 9))
  out_images, out_labels = pre.augment_pair(
    jnp.asarray(images), jnp.asarray(labels), jax.random.key(3)
  )
  assert out_images.shape == (8, 6, 9, 3) and out_labels.shape == (8, 6, 9)
  np.testing.assert_allclose(
    np.asarray(out_images[..., 0]) * 255.0, np.asarray(out_labels), atol=1e-3
  )
  # every crop is a window of its own label map (flipped or not)
  flips = 0
  for b in range(8):
    found = [
      (t, left, f)
      for f in (False, True)
      for t in range(5)
      for left in range(6)
      if np.array_equal(
        (labels[b, :, ::-1] if f else labels[b])[t : t + 6, left : left + 9],
        np.asarray(out_labels[b]),
      )
    ]
    assert found, b
    flips += found[0][2]
  assert 0 < flips < 8


# -- per-image scores from pixels, against per-sample loops ---------------------------------------
def _tiny_segmenter(dropout_rate=0.0):
  """A width-2 DRN-D-22 segmenter on four random 16x16 images (record stride 4)."""
  rng = np.random.default_rng(4)
  model = drn.DRNSeg(num_classes=3, width=2, dropout_rate=dropout_rate)
  images = rng.integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
  state = create_state(model, optax.sgd(0.1), jax.random.key(0), (16, 16, 3))
  data = DeviceData(jnp.asarray(images), jnp.zeros((4, 16, 16), jnp.int32))
  return model, state, images, data, Preprocess((0.5,) * 3, (0.25,) * 3)


def _pooled_logits(model, variables, pre, image):
  """(1, 4, 4, 3) block means of one image's logits, computed without the helper under test."""
  logits = model.apply(variables, pre.normalise(image[None]), train=False)["logits"]
  return logits.reshape(1, 4, 4, 4, 4, 3).mean((2, 4))


@pytest.mark.slow
def test_disal_pixel_projection_equals_a_per_sample_gradient_loop():
  rng = np.random.default_rng(5)
  model, state, images, data, pre = _tiny_segmenter()
  variables = state.variables()
  direction = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), state.params)
  target = rng.dirichlet(np.ones(3), size=(4, 4, 4)).astype(np.float32)  # stride 4
  batch = {"index": jnp.arange(4), "target": jnp.asarray(target)}
  scores = disal.projection_scores(
    {"state": state, "direction": direction}, data, batch, preprocess=pre, kind="ce", pixel_stride=4
  )

  @jax.jit
  @jax.grad
  def one_grad(params, image, soft_target):
    blocks = _pooled_logits(model, {**variables, "params": params}, pre, image)
    log_p = jax.nn.log_softmax(blocks, -1)
    return -jnp.mean(jnp.sum(soft_target[None] * log_p, -1))

  for i in range(4):
    grad = one_grad(state.params, jnp.asarray(images[i]), jnp.asarray(target[i]))
    expected = sum(
      float(jnp.vdot(g, d)) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(direction))
    )
    assert float(scores[i]) == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["one_pass", "vmap"])
def test_pixel_entropy_gradnorm_equals_a_per_sample_gradient_loop(engine):
  model, state, images, data, pre = _tiny_segmenter()
  variables = state.variables()
  scores = gradnorm.entropy_gradnorm_scores(
    state,
    data,
    {"index": jnp.arange(4)},
    preprocess=pre,
    engine=per_sample.Engine(engine, 4, 2, 4),
    pixel_stride=4,
    norm="global",
  )

  @jax.jit
  @jax.grad
  def one_grad(params, image):
    log_p = jax.nn.log_softmax(
      _pooled_logits(model, {**variables, "params": params}, pre, image), -1
    )
    return -jnp.mean(jnp.sum(jnp.exp(log_p) * log_p, -1))

  for i in range(4):
    grad = one_grad(state.params, jnp.asarray(images[i]))
    expected = np.sqrt(sum(float(jnp.vdot(g, g)) for g in jax.tree.leaves(grad)))
    assert float(scores[i]) == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_pixel_mc_dropout_without_dropout_is_the_mean_pixel_entropy():
  # With rate 0 every pass agrees: BALD is 0 and max-entropy is the plain mean over pixels.
  model, state, images, data, pre = _tiny_segmenter()
  scoring = {"state": state, "key": jax.random.key(1)}
  kwargs = dict(preprocess=pre, passes=3, pixel_stride=4)
  batch = {"index": jnp.arange(4)}
  np.testing.assert_allclose(
    mc_dropout.mc_dropout_scores(scoring, data, batch, kind="bald", **kwargs), 0.0, atol=1e-6
  )
  max_entropy = mc_dropout.mc_dropout_scores(scoring, data, batch, kind="entropy", **kwargs)
  for i in range(4):
    p = np.asarray(
      jax.nn.softmax(_pooled_logits(model, state.variables(), pre, jnp.asarray(images[i])), -1)
    )
    assert float(max_entropy[i]) == pytest.approx(-np.mean(np.sum(p * np.log(p), -1)), rel=1e-5)
  # with dropout on the feature map the passes differ, and so do the images' scores
  model, state, images, data, pre = _tiny_segmenter(dropout_rate=0.5)
  bald = mc_dropout.mc_dropout_scores(
    {"state": state, "key": jax.random.key(1)}, data, batch, kind="bald", **kwargs
  )
  assert np.all(np.asarray(bald) > 0) and len(np.unique(np.asarray(bald))) == 4


# -- through the loop ---------------------------------------------------------------------------
SEGMENTATION_STRATEGIES = strategy_registry.names(segmentation=True)


def test_the_segmentation_strategies_of_the_issue_are_registered():
  # At least these: a strategy added later declares segmentation=True by itself, and the
  # whole-loop test below then runs it on segmentation pools.
  assert {
    "disal",
    "random",
    "mc_dropout",
    "coreset",
    "vaal",
    "learning_loss",
    "gradnorm_entropy",
    "entropy",
    "margin",
    "least_confidence",
    "random_dynamic",
  } <= set(SEGMENTATION_STRATEGIES)
  for name in ("badge", "batchbald", "coregcn", "tod", "tracincp_full", "typiclust"):
    assert name not in SEGMENTATION_STRATEGIES  # classification only, as their references


@pytest.mark.slow
def test_every_segmentation_strategy_selects_whole_unlabeled_images_and_reports_miou(tmp_path):
  config = _seg_config(
    **{
      "strategies": ",".join(SEGMENTATION_STRATEGIES),
      "al.final_fraction": 0.15,
      "gradnorm.chunk_size": 4,
      "data.shapes.size": 32,
      "augment.crop_size": (24, 24),
      "record.pixel_stride": 4,
      "train.epochs": 2,
    }
  )
  results = loop.run_experiment(config, str(tmp_path))
  picks = {}
  for name in SEGMENTATION_STRATEGIES:
    rows = results[name]
    assert [r.labeled for r in rows] == [20, 30]
    assert all(0.0 <= r.test_miou <= 1.0 for r in rows)
    selected = np.load(tmp_path / name / "seed_0" / "selected_cycle0.npy")
    labeled_round = np.load(tmp_path / name / "seed_0" / "labeled_round.npy")
    assert selected.shape == (10,) and len(set(selected.tolist())) == 10
    assert np.all(labeled_round[selected] == 1)  # labeled in round 1, not before
    payload = json.loads((tmp_path / name / "seed_0" / "results.json").read_text())
    assert payload["cycles"][0]["test_miou"] == rows[0].test_miou
    picks[name] = frozenset(selected.tolist())
  assert picks["random_dynamic"] == picks["random"]  # the control: Random's rows
  del picks["random_dynamic"]
  assert len(set(picks.values())) == len(picks)
  assert "test mIoU" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_training_on_shapes_raises_miou_well_above_chance(tmp_path):
  config = _seg_config(
    **{
      "strategies": "random",
      "al.initial_fraction": 0.5,
      "al.final_fraction": 0.5,
      "train.epochs": 20,
      "data.shapes.num_train": 120,
    }
  )
  rows = loop.run_experiment(config, str(tmp_path))["random"]
  # Chance: background everywhere scores IoU_bg / 4 (the object classes' IoU is 0).
  test_labels = load_dataset(config.data).test_labels
  background = np.mean(test_labels[test_labels != IGNORE_LABEL] == 0)
  assert background / 4 < 0.2
  assert rows[0].test_miou > 0.3, rows[0]  # measured 0.38-0.44 over seeds 0-2


@pytest.mark.parametrize(
  "overrides,key",
  [
    ({"model.name": "resnet18"}, "model.name"),
    ({"strategies": "gradnorm_expected"}, "strategies"),
    ({"augment.crop_size": (80, 80)}, "augment.crop_size"),
    ({"strategies": "tidal"}, "strategies"),
  ],
)
def test_segmentation_config_errors_name_the_key(tmp_path, overrides, key):
  with pytest.raises(config_lib.ConfigError, match=f"config.{key}="):
    loop.run_experiment(_seg_config(**overrides), str(tmp_path))
  assert not (tmp_path / "random").exists()


@pytest.mark.parametrize("name", ["disal", "random_dynamic"])
def test_the_train_branch_target_is_refused_for_segmentation_by_every_run_of_disals_hook(name):
  """random_dynamic trains with DISAL's hook, so DISAL's checks of the dataset hold for it."""
  from disal_jax.errors import ConfigError
  from disal_jax.experiment import validate_for_dataset

  config = _seg_config(**{"strategies": name, "disal.target_source": "train_branch"})
  dataset = types.SimpleNamespace(is_segmentation=True, image_shape=(32, 32, 3), name="shapes")
  with pytest.raises(ConfigError, match="disal.target_source='train_branch' is invalid"):
    validate_for_dataset(config, dataset)

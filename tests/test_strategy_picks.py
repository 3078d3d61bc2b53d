"""Each strategy's picks on a tiny hand-made context, against an independent computation.

The registered strategy runs as the loop runs it (`base.score_and_select` on a real
ScoringContext, `strategies.testing.tiny_context`); its scores and picks are compared with
numpy written out from the reference's formula, or brute force (jax.grad one sample at a time),
on a fresh width-2 ResNet-18 over 8x8 noise images with hand-set parameters where the score
reads more than the model. The candidates are rows in no particular order (not 0..P-1), so a
position taken for a row, or a row for a position, fails.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.models import stage_head
from disal_jax.strategies import disal, registry, testing
from disal_jax.strategies.base import TIE_BREAK_STREAM, score_and_select
from disal_jax.training.state import apply_fn_of
from tests.helpers import tiny_config

CANDIDATES = np.array([7, 3, 11, 0, 9, 14, 5])  # training rows, in record order
LABELED = np.array([1, 2, 4])
CAPACITY = 9  # the run's largest pool: the pool index pads to 12 (3 eval batches of 4)
K = 3
NUM_CLASSES = 3
EPOCHS = 4
HIDDEN = 2  # Learning Loss's and TiDAL's per-stage module width


def _config(**overrides):
  """The tiny config; per-sample gradients by the vmap engine, whose programs compile in half
  the one-pass engine's time (tests/test_one_pass.py checks that the two agree)."""
  return tiny_config(
    **{
      "model.width": 2,
      "per_sample.engine": "vmap",
      "train.eval_batch_size": 4,
      "train.epochs": EPOCHS,
      "learning_loss.hidden": HIDDEN,
      "tidal.hidden": HIDDEN,
      "mc_dropout.passes": 6,
      "coregcn.subset_size": 5,
      "coregcn.steps": 4,
      "coregcn.hidden": 4,
      # DISAL's own ranking: a handful of labeled rows is a cold start,
      # which picks Random's rows (tests/test_disal_guard.py)
      "disal.cold_start_labels_per_class": 0.0,
      **overrides,
    }
  )


@functools.cache
def _dataset():
  return testing.tiny_dataset(num_train=16, num_classes=NUM_CLASSES)


@functools.cache
def _plain_state():
  """A fresh width-2 ResNet-18 (every strategy here but TiDAL's and Learning Loss's module
  shares its parameters; dropout has none), its head scaled up so predictions differ."""
  trainer = testing.tiny_trainer(_config(), registry.get_strategy("random"), _dataset())
  state = trainer.init_state(jax.random.key(0))
  head = jax.tree.map(lambda x: 4.0 * x, state.params["head"])
  return state.replace(params={**state.params, "head": head})


def _model_of(name):
  """The model of `name`'s runs (its model overrides: MC-Dropout's dropout rate)."""
  return testing.tiny_trainer(_config(), registry.get_strategy(name), _dataset()).model


def _context(name, config=None, **kwargs):
  config = config or _config()
  kwargs.setdefault("state", _plain_state())
  return testing.tiny_context(
    config,
    registry.get_strategy(name),
    _dataset(),
    CANDIDATES,
    LABELED,
    pool_capacity=CAPACITY,
    **kwargs,
  )


def _pick(name, ctx, k=K):
  scores, picks = score_and_select(registry.get_strategy(name), ctx, k)
  return scores, np.asarray(picks)


# -- the independent side ------------------------------------------------------------------


def _normalised(rows):
  """(R, 8, 8, 3) float32 images of training rows, normalised with the training split's
  channel statistics, written out in numpy."""
  images = _dataset().train_images
  pixels = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
  mean, std = pixels.mean(axis=0), np.maximum(pixels.std(axis=0), 1e-3)
  return ((images[rows] / 255.0 - mean) / std).astype(np.float32)


@jax.jit
def _outputs(state, images):
  return state.apply_fn(state.variables(), images, train=False)


def _logits(state, rows):
  return np.asarray(_outputs(state, _normalised(rows))["logits"], np.float64)


def _softmax(logits):
  z = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def _entropy(probs):
  return -np.sum(np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1.0)), 0.0), axis=-1)


def _top_k_rows(scores, k=K, separation=1e-4):
  """CANDIDATES' rows of the k highest `scores` (P,), checking first that the top k + 1 are
  apart by more than float32 rounding (else the picks would not be well defined)."""
  order = np.argsort(-np.asarray(scores), kind="stable")
  top = np.asarray(scores)[order[: k + 1]]
  assert np.all(-np.diff(top) > separation * max(1.0, np.abs(top).max())), top
  return CANDIDATES[order[:k]]


def _top_k_rows_with_ties(scores, ctx, k=K):
  """The documented order among equal scores: ascending uniform numbers of the cycle's key
  folded with TIE_BREAK_STREAM (its first P of a draw over the padded pool)."""
  ties = np.asarray(
    jax.random.uniform(jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), (len(ctx.candidates),))
  )
  return CANDIDATES[np.lexsort((ties, -np.asarray(scores)))[:k]]


def _leaf_norms(tree):
  return np.array([np.linalg.norm(np.asarray(x, np.float64)) for x in jax.tree.leaves(tree)])


def _flat(tree):
  return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


@functools.partial(jax.jit, static_argnames=("loss_of_logits",))
def _sample_grad(state, params, image, aux, *, loss_of_logits):
  """The gradient in `params` of loss_of_logits(logits (C,), aux) of one sample (H, W, C),
  eval mode, with the batch statistics of `state`."""

  def loss(p):
    logits = state.apply_fn(
      {"params": p, "batch_stats": state.batch_stats}, image[None], train=False
    )["logits"][0]
    return loss_of_logits(logits, aux)

  return jax.grad(loss)(params)


def _ce(logits, label):
  return -jax.nn.log_softmax(logits)[label]


# -- single-pass uncertainty -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["entropy", "margin", "least_confidence"])
def test_uncertainty_picks_match_numpy(name):
  ctx = _context(name)
  scores, picks = _pick(name, ctx)
  probs = _softmax(_logits(ctx.result.state, CANDIDATES))
  top2 = np.sort(probs, axis=-1)[:, ::-1][:, :2]
  expected = {
    "entropy": _entropy(probs),
    "margin": top2[:, 1] - top2[:, 0],
    "least_confidence": 1.0 - probs.max(axis=-1),
  }[name]
  np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


# -- MC-Dropout ------------------------------------------------------------------------------


@functools.cache
def _dropout_probs(rng_seed, passes):
  """(P, T, C) softmax outputs of each candidate's T dropout passes, one sample and one pass
  at a time: pass t of row r uses split(fold_in(key, r), T)[t] (the module's documented
  per-row keys, so a score does not depend on its batch)."""
  state = _plain_state()
  model = _model_of("mc_dropout")
  forward = jax.jit(
    lambda image, key: model.apply(
      state.variables(), image[None], train=False, dropout=True, rngs={"dropout": key}
    )["logits"][0]
  )
  key = jax.random.key(rng_seed)
  images = _normalised(CANDIDATES)
  return np.array(
    [
      [
        _softmax(np.asarray(forward(image, pass_key), np.float64))
        for pass_key in jax.random.split(jax.random.fold_in(key, int(row)), passes)
      ]
      for image, row in zip(images, CANDIDATES)
    ]
  )


@pytest.mark.parametrize("kind", ["bald", "entropy", "variation_ratio"])
def test_mc_dropout_picks_match_per_pass_numpy(kind):
  config = _config(**{"mc_dropout.score": kind})
  # the trained state of a run holds its model: the plain parameters, MC-Dropout's model
  state = _plain_state().replace(apply_fn=apply_fn_of(_model_of("mc_dropout")))
  ctx = _context("mc_dropout", config, state=state, rng=jax.random.key(5))
  scores, picks = _pick("mc_dropout", ctx)
  probs = _dropout_probs(5, config.mc_dropout.passes)  # (P, T, C)
  mean = probs.mean(axis=1)
  votes = np.stack([np.bincount(p.argmax(axis=-1), minlength=NUM_CLASSES) for p in probs])
  expected = {
    "bald": np.maximum(_entropy(mean) - _entropy(probs).mean(axis=1), 0.0),
    "entropy": _entropy(mean),
    "variation_ratio": 1.0 - votes.max(axis=-1) / probs.shape[1],
  }[kind]
  assert np.ptp(probs, axis=1).max() > 1e-3  # the passes do differ
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
  if kind == "variation_ratio":  # multiples of 1/T: ties, in the cycle key's order
    np.testing.assert_array_equal(picks, _top_k_rows_with_ties(expected, ctx))
  else:
    np.testing.assert_array_equal(picks, _top_k_rows(expected))


# -- gradient norms (Boosting) ------------------------------------------------------------


def _entropy_of_logits(logits, _):
  return -jnp.sum(jax.nn.softmax(logits) * jax.nn.log_softmax(logits))


def _reduce_norm(tree, norm):
  """'tensor_sum': sum over parameter tensors of their norms; 'global': one L2 norm."""
  norms = _leaf_norms(tree)
  return norms.sum() if norm == "tensor_sum" else np.sqrt(np.sum(norms**2))


@pytest.mark.parametrize("norm,engine", [("tensor_sum", "one_pass"), ("global", "vmap")])
def test_gradnorm_entropy_picks_match_per_sample_grad(norm, engine):
  ctx = _context(
    "gradnorm_entropy", _config(**{"gradnorm.norm": norm, "per_sample.engine": engine})
  )
  scores, picks = _pick("gradnorm_entropy", ctx)
  state = ctx.result.state
  expected = np.array(
    [
      _reduce_norm(
        _sample_grad(state, state.params, image, 0, loss_of_logits=_entropy_of_logits), norm
      )
      for image in _normalised(CANDIDATES)
    ]
  )
  np.testing.assert_allclose(scores, expected, rtol=1e-4)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


def test_gradnorm_expected_picks_match_per_class_grads():
  norm = "tensor_sum"  # the default, the reference's
  ctx = _context("gradnorm_expected")
  scores, picks = _pick("gradnorm_expected", ctx)
  state = ctx.result.state
  probs = _softmax(_logits(state, CANDIDATES))
  expected = np.array(
    [
      sum(
        p[c] * _reduce_norm(_sample_grad(state, state.params, image, c, loss_of_logits=_ce), norm)
        for c in range(NUM_CLASSES)
      )
      for image, p in zip(_normalised(CANDIDATES), probs)
    ]
  )
  np.testing.assert_allclose(scores, expected, rtol=1e-4)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


# -- Learning Loss and TiDAL: a module on the stage maps ------------------------------------


def _with_module(outputs, seed):
  """The plain state with a hand-set stage module (per stage Dense(HIDDEN), then Dense to
  `outputs`) under stage_head.PARAMS_KEY, and the module's parameters as numpy."""
  state = _plain_state()
  stages = _outputs(state, _normalised(CANDIDATES[:1]))["stages"]
  rng = np.random.default_rng(seed)
  module = {
    f"stage{i + 1}": {
      "kernel": rng.normal(size=(s.shape[-1], HIDDEN)),
      "bias": rng.normal(size=HIDDEN),
    }
    for i, s in enumerate(stages)
  }
  module["out"] = {
    "kernel": rng.normal(size=(4 * HIDDEN, outputs)),
    "bias": rng.normal(size=outputs),
  }
  params = {
    **state.params,
    stage_head.PARAMS_KEY: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), module),
  }
  return state.replace(params=params), module


def _module_outputs(state, module):
  """(P, outputs) the module on the candidates' eval-mode stage maps, in numpy: per stage
  ReLU(Dense(global average pool)), concatenated, then Dense."""
  stages = _outputs(state, _normalised(CANDIDATES))["stages"]
  pooled = [
    np.maximum(
      np.asarray(s, np.float64).mean(axis=(1, 2)) @ module[f"stage{i + 1}"]["kernel"]
      + module[f"stage{i + 1}"]["bias"],
      0.0,
    )
    for i, s in enumerate(stages)
  ]
  return np.concatenate(pooled, axis=-1) @ module["out"]["kernel"] + module["out"]["bias"]


def test_learning_loss_picks_the_highest_predicted_loss():
  state, module = _with_module(1, seed=1)
  ctx = _context("learning_loss", state=state)
  scores, picks = _pick("learning_loss", ctx)
  expected = _module_outputs(state, module)[:, 0]
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


@pytest.mark.parametrize("kind", ["entropy", "margin"])
def test_tidal_picks_the_most_uncertain_module_prediction(kind):
  state, module = _with_module(NUM_CLASSES, seed=2)
  ctx = _context("tidal", _config(**{"tidal.score": kind}), state=state)
  scores, picks = _pick("tidal", ctx)
  probs = _softmax(_module_outputs(state, module))
  top2 = np.sort(probs, axis=-1)[:, ::-1][:, :2]
  expected = _entropy(probs) if kind == "entropy" else top2[:, 1] - top2[:, 0]
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


# -- TracInCP -----------------------------------------------------------------------------


LEARNING_RATES = (0.4, 0.3, 0.2, 0.1)  # epoch e's


def _checkpoints():
  """EPOCHS hand-made checkpoints: the plain state's parameters plus noise."""
  state = _plain_state()
  return [
    state.replace(params=testing.perturbed(state.params, jax.random.key(10 + e), 0.05))
    for e in range(EPOCHS)
  ]


@pytest.mark.parametrize(
  "name,scope",
  [("tracincp_full", "all"), ("tracincp_last", "all"), ("tracincp_full", "last_layer")],
)
def test_tracin_picks_match_brute_force_self_influence(name, scope, tmp_path):
  config = _config(**{"tracin.params": scope, "tracin.store": "host"})
  store = registry.get_strategy(name).make_epoch_callback(config, tmp_path)
  checkpoints = _checkpoints()
  for epoch, (checkpoint, lr) in enumerate(zip(checkpoints, LEARNING_RATES)):
    store(checkpoint, epoch, lr)  # as the trainer calls it after every epoch
  ctx = _context(name, config, epoch_callback=store)
  scores, picks = _pick(name, ctx)
  # s(u) = sum_t eta_t E_{y ~ p_t(u)} ||grad CE(u, y; theta_t)||^2, over every epoch
  # (tracincp_full) or epochs >= EPOCHS // 2 (tracincp_last); the head alone for last_layer.
  first = EPOCHS // 2 if name == "tracincp_last" else 0
  expected = np.zeros(len(CANDIDATES))
  for epoch in range(first, EPOCHS):
    state = checkpoints[epoch]
    probs = _softmax(_logits(state, CANDIDATES))
    for i, image in enumerate(_normalised(CANDIDATES)):
      for c in range(NUM_CLASSES):
        g = _sample_grad(state, state.params, image, c, loss_of_logits=_ce)
        g = g["head"] if scope == "last_layer" else g
        expected[i] += LEARNING_RATES[epoch] * probs[i, c] * np.sum(_flat(g) ** 2)
  np.testing.assert_allclose(scores, expected, rtol=1e-4)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


# -- UncertainGCN --------------------------------------------------------------------------


def test_uncertaingcn_picks_the_subset_rows_closest_to_the_margin():
  ctx = _context("uncertaingcn")
  evidence, picks = _pick("uncertaingcn", ctx)
  subset = np.asarray(evidence["subset"])  # positions into ctx.candidates
  assert len(subset) == ctx.config.coregcn.subset_size < len(CANDIDATES)
  assert len(np.unique(subset)) == len(subset) and subset.max() < len(CANDIDATES)
  nodes = np.asarray(evidence["scores"], np.float64)  # the subset's nodes, then the labeled
  assert nodes.shape == (len(subset) + len(LABELED),)
  closeness = -np.abs(nodes[: len(subset)] - ctx.config.coregcn.margin)
  order = np.argsort(-closeness, kind="stable")
  assert np.all(-np.diff(closeness[order[: K + 1]]) > 1e-6)
  np.testing.assert_array_equal(picks, CANDIDATES[subset[order[:K]]])


def test_uncertaingcn_select_maps_hand_made_scores_to_candidate_rows():
  ctx = _context("uncertaingcn")
  subset = np.array([1, 3, 4, 6])  # positions: rows 3, 0, 9, 5
  scores = np.array([0.9, 0.12, 0.05, 0.4, 0.5, 0.5, 0.5])  # 4 subset nodes, 3 labeled
  evidence = {
    "subset": subset,
    "scores": jnp.asarray(scores, jnp.float32),
    "features": jnp.zeros((7, 2), jnp.float32),
  }
  picks = registry.get_strategy("uncertaingcn").select(evidence, ctx, 2)
  # margin 0.1: |0.12 - 0.1| = 0.02 (row 0), |0.05 - 0.1| = 0.05 (row 9)
  np.testing.assert_array_equal(picks, [0, 9])


# -- DISAL ---------------------------------------------------------------------------------


def _disal_setup(target_source, seed=3):
  """(state, start parameters, per-row targets (16, C)): theta_start = theta_end + noise, and
  targets that are probability vectors, one of the candidates' rows all zero (none recorded
  yet: its score is 0)."""
  state = _plain_state()
  start = testing.perturbed(state.params, jax.random.key(seed), 0.1)
  rng = np.random.default_rng(seed)
  targets = rng.dirichlet(np.ones(NUM_CLASSES), size=16).astype(np.float32)
  targets[CANDIDATES[2]] = 0.0
  if target_source == "train_branch":
    state = state.replace(
      extras={
        disal.TARGET_MEAN: jnp.asarray(targets),
        disal.TARGET_WEIGHT: jnp.ones(16, jnp.float32),
      }
    )
  return state, start, targets


@functools.cache
def _dynamic_loss(kind):
  def loss(logits, target):
    if kind == "mse":
      value = jnp.mean(jnp.square(jax.nn.softmax(logits) - target))
    else:
      value = -jnp.sum(target * jax.nn.log_softmax(logits))
    return jnp.where(jnp.sum(target) > 0, value, 0.0)

  return loss


@pytest.mark.parametrize(
  "target_source,kind,score",
  [
    ("train_branch", "mse", "projection"),
    ("eval_pass", "ce", "projection"),
    ("train_branch", "mse", "norm"),
  ],
)
def test_disal_picks_match_per_sample_grad(target_source, kind, score):
  config = _config(
    **{"disal.target_source": target_source, "disal.dynamic_loss": kind, "disal.score": score}
  )
  state, start, targets = _disal_setup(target_source)
  record = None
  if target_source == "eval_pass":  # the record's mean is aligned with the pool's positions
    pool_targets = np.zeros((12, NUM_CLASSES), np.float32)
    pool_targets[: len(CANDIDATES)] = targets[CANDIDATES]
    record = testing.mean_record(pool_targets)
  ctx = _context("disal", config, state=state, start_params=start, record=record)
  scores, picks = _pick("disal", ctx)
  direction = _flat(start) - _flat(state.params)  # theta_start - theta_end
  grads = [
    _flat(
      _sample_grad(state, state.params, image, targets[row], loss_of_logits=_dynamic_loss(kind))
    )
    for image, row in zip(_normalised(CANDIDATES), CANDIDATES)
  ]
  expected = np.array(
    [g @ direction if score == "projection" else np.linalg.norm(g) for g in grads]
  )
  assert expected[2] == 0.0 and np.abs(expected).max() > 1e-4
  np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-7)
  np.testing.assert_array_equal(picks, _top_k_rows(expected))


def test_disal_class_balanced_picks_round_robin_over_predicted_classes():
  config = _config(**{"disal.selection": "class_balanced"})
  state, start, _ = _disal_setup("train_branch")
  ctx = _context("disal", config, state=state, start_params=start)
  scores, picks = _pick("disal", ctx, k=4)
  predicted = _logits(state, CANDIDATES).argmax(axis=-1)
  assert len(np.unique(predicted)) > 1
  # round r takes each class's r-th highest score, the higher scores of the round first
  by_class = {
    c: sorted(np.flatnonzero(predicted == c), key=lambda i: -scores[i])
    for c in np.unique(predicted)
  }
  rounds = max(map(len, by_class.values()))
  order = [
    i
    for r in range(rounds)
    for i in sorted(
      (members[r] for members in by_class.values() if r < len(members)), key=lambda i: -scores[i]
    )
  ]
  np.testing.assert_array_equal(picks, CANDIDATES[order[:4]])


# -- Random --------------------------------------------------------------------------------


def test_random_picks_the_top_k_of_the_cycle_keys_uniform_draw():
  picks_by_key = []
  for seed in (0, 1):
    ctx = _context("random", rng=jax.random.key(seed))
    scores, picks = _pick("random", ctx)
    draw = np.asarray(jax.random.uniform(jax.random.key(seed), (len(CANDIDATES),)))
    np.testing.assert_array_equal(scores, draw)
    np.testing.assert_array_equal(picks, _top_k_rows(draw, separation=0.0))
    picks_by_key.append(set(picks.tolist()))
  assert picks_by_key[0] != picks_by_key[1]  # another key, another subset


def test_tiny_context_pads_the_pool_index_as_the_trainer_does():
  ctx = _context("random")
  index = np.asarray(ctx.result.pool_index)
  assert index.shape == (12,)  # max(P, capacity) = 9, rounded up to eval batches of 4
  np.testing.assert_array_equal(index[: len(CANDIDATES)], CANDIDATES)
  with pytest.raises(ValueError, match="labeled"):
    testing.tiny_context(_config(), registry.get_strategy("random"), _dataset(), [3, 1], LABELED)

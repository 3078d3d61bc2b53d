"""model.dtype='bfloat16': the convolutions compute in bfloat16, and what selection reads stays
float32 (the logits, pooled features, the pool's probabilities and every scorer family's
scores), close to what the same parameters give in float32 and not rounded to bfloat16's 8-bit
mantissa, which would tie margins among thousands of pool rows and round distances.
"""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from disal_jax.models import registry as model_registry
from disal_jax.strategies import disal, registry, testing
from disal_jax.training import sharding
from tests.helpers import tiny_config

NUM_CLASSES = 4
NUM_TRAIN = 64
CANDIDATES = np.arange(8, NUM_TRAIN)  # 56 pool rows
LABELED = np.arange(8)
K = 4
# The scorer families: forward (margin, entropy), embeddings (CoreSet), BADGE's gradient
# embedding, MC passes, one-pass per-sample gradient norms, DISAL's jvp.
STRATEGIES = ("margin", "entropy", "coreset", "badge", "mc_dropout", "gradnorm_entropy", "disal")
PARAMS_NOISE = 0.03  # spreads a fresh model's logits, so that its scores differ row to row
DIRECTION_NOISE = 0.05  # theta_start - theta_end, DISAL's direction


def bf16_rounded_fraction(values: np.ndarray) -> float:
  """The fraction of `values` (float32) that bfloat16 represents exactly: about 1 for values
  computed in bfloat16, about 2^-16 for float32 computations."""
  values = np.asarray(values, np.float32)
  return float(np.mean(values == values.astype(jnp.bfloat16).astype(np.float32)))


def _config(dtype: str, **overrides) -> ml_collections.ConfigDict:
  return tiny_config(
    **{
      "model.dtype": dtype,
      "model.width": 4,
      "train.eval_batch_size": 8,
      "train.epochs": 2,
      "mc_dropout.passes": 4,
      "disal.cold_start_labels_per_class": 0.0,  # DISAL's own ranking, not Random's
      **overrides,
    }
  )


@pytest.fixture(autouse=True)
def standard_promotion():
  """flax's BatchNorm mixes its float32 statistics with bfloat16 inputs: standard promotion,
  as outside the tests (the suite runs strict)."""
  with jax.numpy_dtype_promotion("standard"):
    yield


@functools.cache
def _dataset():
  return testing.tiny_dataset(num_train=NUM_TRAIN, num_classes=NUM_CLASSES, size=16)


def _context(strategy: str, dtype: str):
  """The tiny context of `strategy` with a model computing in `dtype`, its parameters the same
  perturbed fresh ones for both dtypes (parameters are float32 in both)."""
  config = _config(dtype)
  trainer = testing.tiny_trainer(config, registry.get_strategy(strategy), _dataset())
  state = trainer.init_state(jax.random.key(0))
  state = state.replace(params=testing.perturbed(state.params, jax.random.key(1), PARAMS_NOISE))
  if strategy == "disal":  # the train branch's recorded targets: probability rows
    targets = np.random.default_rng(0).dirichlet(np.ones(NUM_CLASSES), size=NUM_TRAIN)
    state = state.replace(
      extras={
        disal.TARGET_MEAN: jnp.asarray(targets, jnp.float32),
        disal.TARGET_WEIGHT: jnp.ones(NUM_TRAIN, jnp.float32),
      }
    )
  return testing.tiny_context(
    config,
    strategy,
    _dataset(),
    CANDIDATES,
    LABELED,
    state=state,
    start_params=testing.perturbed(state.params, jax.random.key(2), DIRECTION_NOISE),
    trainer=trainer,
  )


@pytest.mark.parametrize("model_name", ["resnet18", "drn_d_22"])
def test_logits_and_features_are_float32_and_not_rounded_to_bfloat16(model_name):
  """The head and the pooling run in float32: the outputs are float32, agree with the float32
  model's to bfloat16's precision, and are not bfloat16 values (a bfloat16 head returns
  logits every one of which bfloat16 represents)."""
  x = jax.random.normal(jax.random.key(3), (16, 32, 32, 3))  # pooled over 4x4 and more
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(**{"model.name": model_name, "model.dtype": dtype, "model.width": 4})
    model = model_registry.build_model(config.model, NUM_CLASSES)
    variables = jax.jit(lambda v, m=model: m.init(jax.random.key(0), v))(x)
    outputs[dtype] = jax.jit(lambda v, i, m=model: m.apply(v, i, train=False))(variables, x)
  for name in ("logits", "features"):
    low, full = (np.asarray(outputs[d][name]) for d in ("bfloat16", "float32"))
    assert low.dtype == np.float32, name
    assert bf16_rounded_fraction(low[low != 0]) < 0.5, name  # ReLU's zeros are exact
    scale = np.abs(full).max()
    assert np.abs(low - full).max() < 0.05 * scale, name


def test_the_pool_probabilities_the_record_folds_are_float32():
  """Trainer.pool_probs (what the record folds, every epoch): float32 softmax rows, within
  bfloat16's precision of the float32 model's, not bfloat16 values."""
  probs = {}
  for dtype in ("float32", "bfloat16"):
    ctx = _context("disal", dtype)
    trainer = testing.tiny_trainer(ctx.config, registry.get_strategy("disal"), _dataset())
    out = trainer.pool_probs(ctx.result.state, CANDIDATES, len(CANDIDATES))
    probs[dtype] = np.asarray(sharding.fetch(out))[: len(CANDIDATES)]
  assert probs["bfloat16"].dtype == np.float32
  np.testing.assert_allclose(probs["bfloat16"].sum(axis=-1), 1.0, rtol=1e-6)
  assert np.abs(probs["bfloat16"] - probs["float32"]).max() < 0.02
  assert bf16_rounded_fraction(probs["bfloat16"]) < 0.5


@pytest.mark.slow  # 14 scoring programs compiled
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_scores_stay_float32_and_follow_the_float32_model(strategy):
  """Each scorer family under a bfloat16 model, the same parameters as a float32 model: every
  floating leaf of its evidence (scores, embeddings) is float32 and within bfloat16's
  precision of the float32 model's; a score per row is not a bfloat16 value, has no ties the
  float32 model's lacks, and ranks the pool as the float32 model's does (Spearman > 0.9)."""
  evidence = {}
  for dtype in ("float32", "bfloat16"):
    ctx = _context(strategy, dtype)
    found, picks = testing.pick(strategy, ctx, K)
    assert len(np.unique(picks)) == K and np.isin(picks, CANDIDATES).all()
    leaves = [np.asarray(sharding.fetch(leaf)) for leaf in jax.tree.leaves(found)]
    evidence[dtype] = [leaf for leaf in leaves if np.issubdtype(leaf.dtype, np.floating)]
  assert evidence["bfloat16"], "no floating evidence"
  for low, full in zip(evidence["bfloat16"], evidence["float32"], strict=True):
    assert low.dtype == np.float32
    assert np.isfinite(low).all()
    assert np.abs(full).max() > 0, "a degenerate case: the float32 evidence is all zero"
    assert np.abs(low - full).max() < 0.1 * np.abs(full).max()
    if low.ndim == 1:  # a score per row: rounding, ties and ranking
      low, full = low[: len(CANDIDATES)], full[: len(CANDIDATES)]
      assert bf16_rounded_fraction(low) < 0.5
      assert len(np.unique(low)) >= len(np.unique(full)) - 1
      rank = lambda v: np.argsort(np.argsort(v))
      assert np.corrcoef(rank(low), rank(full))[0, 1] > 0.9

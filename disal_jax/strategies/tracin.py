"""TracInCP (Pruthi et al.), DISAL's ablation: self-influence replayed over checkpoints.

During training a copy of the model is kept after every epoch (`SnapshotStore`, where
`tracin.store` says). An unlabeled sample's score is

  s(u) = sum_t eta_t * E_{y ~ p_t(u)} ||grad_theta CE(u, y; theta_t)||^2,

its expected self-influence at checkpoint t weighted by that epoch's learning rate.
- tracincp_full sums over every epoch's checkpoint, tracincp_last over the second half of
  training (epochs >= epochs // 2).
- `tracin.params='all'`: gradients over all parameters. With G = J J^T the per-sample Gram
  matrix of the logit Jacobian (per_sample.Engine.logit_gram) and grad CE(u, c) = J^T (p - e_c),
  E_y ||.||^2 = sum_c p_c G_cc - p^T G p.
- `tracin.params='last_layer'`: the head's weights and bias only, closed form
  ||grad||^2 = ||p - e_y||^2 (||a||^2 + 1), whose expectation over y ~ p is
  (1 - ||p||^2)(||a||^2 + 1), a = the penultimate feature.
The checkpoints' memory and the time spent keeping them go into the cycle's results
(`snapshot_bytes`, `snapshot_seconds`); the replay's time is the cycle's scoring time.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies import per_sample
from disal_jax.strategies.base import (
  ConfigSection,
  ScoringContext,
  Strategy,
  batch_logits,
  per_sample_batch_size,
  pool_outputs,
)
from disal_jax.training import sharding
from disal_jax.training.augment import Preprocess
from disal_jax.training.snapshots import SnapshotStore


def expected_self_influence(gram: jax.Array, probs: jax.Array) -> jax.Array:
  """(B,) E_{y~p} ||J^T (p - e_y)||^2 = sum_c p_c G_cc - p^T G p, from G (B, C, C), p (B, C)."""
  diag = jnp.diagonal(gram, axis1=1, axis2=2)
  return jnp.maximum(
    jnp.sum(probs * diag, axis=-1) - jnp.einsum("bi,bij,bj->b", probs, gram, probs), 0.0
  )


def expected_self_influence_last_layer(probs: jax.Array, features: jax.Array) -> jax.Array:
  """(B,) (1 - ||p||^2)(||a||^2 + 1) from p (B, C) and penultimate features a (B, D)."""
  return (1.0 - jnp.sum(probs * probs, axis=-1)) * (jnp.sum(features * features, axis=-1) + 1.0)


@functools.partial(jax.jit, static_argnames=("preprocess", "scope", "engine"))
def checkpoint_scores(
  scoring, data, batch, *, preprocess: Preprocess, scope: str, engine: per_sample.Engine
) -> jax.Array:
  """(B,) expected self-influence of rows `batch['index']` at one checkpoint.

  Args:
    scoring: {'state': a TrainState (its apply_fn), 'variables': the checkpoint's
      {'params', 'batch_stats'}}.
    scope: 'all' (cost: a width-C backward pass per sample, by `engine`) or 'last_layer'
      (one forward).
  """
  state, variables = scoring["state"], scoring["variables"]
  images = data.images_at(batch["index"])
  if scope == "last_layer":
    out = state.apply_fn(variables, preprocess.normalise(images), train=False)
    return expected_self_influence_last_layer(jax.nn.softmax(out["logits"]), out["features"])
  gram, logits = engine.logit_gram(batch_logits(state, preprocess), variables, images)
  return expected_self_influence(gram, jax.nn.softmax(logits))


def score(ctx: ScoringContext) -> np.ndarray:
  """(P,) float32 TracIn self-influence over the epochs' snapshots."""
  store: SnapshotStore = ctx.epoch_callback
  if store is None or not len(store):
    raise RuntimeError("TracInCP has no checkpoints: the trainer did not call its store")
  tr = ctx.config.tracin
  engine = per_sample.engine_from_config(ctx.config, tr.chunk_size)
  fn = functools.partial(
    checkpoint_scores, preprocess=ctx.data.preprocess, scope=tr.params, engine=engine
  )
  batch_size = None
  total = None
  for i, lr in enumerate(store.learning_rates):
    scoring = {"state": ctx.result.state, "variables": store.variables(i, ctx.data.mesh)}
    if tr.params == "all" and batch_size is None:  # every checkpoint has the same shapes
      batch_size = per_sample_batch_size(
        ctx, fn, scoring, engine.samples_per_call(ctx.data.dataset.num_classes)
      )
    part = lr * pool_outputs(ctx, fn, scoring, batch_size=batch_size)
    total = part if total is None else total + part
  return sharding.fetch(total)[: len(ctx.candidates)]


def _store_factory(second_half_only: bool):
  def make(config: ml_collections.ConfigDict, run_dir: pathlib.Path) -> SnapshotStore:
    first = config.train.epochs // 2 if second_half_only else 0
    # one folder per process: each host of a multi-host run keeps its own copy
    folder = "snapshots" if jax.process_count() == 1 else f"snapshots_{jax.process_index()}"
    return SnapshotStore(config.tracin.store, run_dir / folder, first_epoch=first)

  return make


PARAMS = ("all", "last_layer")
STORES = ("device", "host", "disk")


def defaults() -> ml_collections.ConfigDict:
  """The tracin config section's defaults."""
  s = ml_collections.ConfigDict()
  s.params = "all"  # gradients over 'all' parameters, or the 'last_layer' closed form
  # Where the per-epoch checkpoints live: 'device' memory, 'host' memory, or 'disk' (under
  # the run's folder, deleted after scoring).
  s.store = "host"
  s.chunk_size = 16  # like gradnorm.chunk_size (vmap engine), for params='all'
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the tracin section's values are invalid."""
  del num_devices
  tr = config.tracin
  check_value(tr.params in PARAMS, "tracin.params", tr.params, f"one of {PARAMS}")
  check_value(tr.store in STORES, "tracin.store", tr.store, f"one of {STORES}")
  check_value(tr.chunk_size >= 1, "tracin.chunk_size", tr.chunk_size, ">= 1")


SECTION = ConfigSection("tracin", defaults, check)  # both TracInCP variants'

FULL = Strategy(
  name="tracincp_full",
  record="none",
  score=score,
  make_epoch_callback=_store_factory(second_half_only=False),
  description="TracInCP: expected self-influence over every epoch's checkpoint",
  config_section=SECTION,
)
LAST = Strategy(
  name="tracincp_last",
  record="none",
  score=score,
  make_epoch_callback=_store_factory(second_half_only=True),
  description="TracInCP: expected self-influence over the second half's checkpoints",
  config_section=SECTION,
)
STRATEGIES = (FULL, LAST)

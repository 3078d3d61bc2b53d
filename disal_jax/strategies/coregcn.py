"""CoreGCN and UncertainGCN (Caramalau et al., sequential GCN for active learning).

After the cycle's training, a small GCN learns to tell labeled from unlabeled nodes on a graph
of backbone features (docs/strategies.md):
- nodes: the L2-normalised penultimate features of a scoring subset of the pool (at most
  `coregcn.subset_size`, drawn at random with the cycle's key) and of every labeled sample;
- edges: A = F F^T - I, column-normalised, + I (`models.gcn.normalised_adjacency`);
- training: `coregcn.steps` full-batch Adam steps (lr, L2 weight decay as the reference) on
  -mean_labeled log s - unlabeled_weight * mean_unlabeled log(1 - s), s = sigmoid(GCN),
  dropout on the hidden layer; all steps run in one jitted lax.scan.
Selection, GCN in eval mode: CoreGCN = greedy k-center (labeled nodes as the initial
centres) on the GCN's hidden features concatenated with its output logit, as the reference
(`coregcn.kcenter_features='hidden_and_output'`; 'hidden' leaves the logit out; equal
distances broken at random with the cycle's key);
UncertainGCN = the unlabeled nodes with the smallest |s - margin| (ties at random).
Memory: the adjacency is dense, (subset + labeled)^2 float32: 10,000 + 20,000 nodes take
3.6 GB. That is why the graph covers a subset of the pool and not all of it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from disal_jax.errors import check_value
from disal_jax.models import gcn as gcn_lib
from disal_jax.strategies import selectors
from disal_jax.strategies.base import (
  TIE_BREAK_STREAM,
  ConfigSection,
  ReferenceProtocol,
  ScoringContext,
  Strategy,
  map_rows,
  pool_capacity,
)
from disal_jax.strategies.coreset import features as backbone_features
from disal_jax.training import sharding


def bce_adjusted_loss(
  logits: jax.Array, is_labeled: jax.Array, unlabeled_weight: float
) -> jax.Array:
  """-mean_L log s - w * mean_U log(1 - s), s = sigmoid(logits); logits (N,), is_labeled (N,)."""
  log_s = jax.nn.log_sigmoid(logits)
  log_not_s = jax.nn.log_sigmoid(-logits)
  labeled = is_labeled.astype(jnp.float32)
  mean_l = jnp.sum(labeled * log_s) / jnp.maximum(jnp.sum(labeled), 1.0)
  mean_u = jnp.sum((1.0 - labeled) * log_not_s) / jnp.maximum(jnp.sum(1.0 - labeled), 1.0)
  return -mean_l - unlabeled_weight * mean_u


@functools.partial(
  jax.jit, static_argnames=("model", "steps", "learning_rate", "weight_decay", "unlabeled_weight")
)
def train_gcn(
  features: jax.Array,
  is_labeled: jax.Array,
  rng: jax.Array,
  *,
  model: gcn_lib.GCN,
  steps: int,
  learning_rate: float,
  weight_decay: float,
  unlabeled_weight: float,
):
  """Fits the GCN on the graph of `features` (N, D) and evaluates it on the same graph.

  is_labeled: (N,) bool. One jitted call: the steps are a lax.scan, and the dense (N, N)
  adjacency is built once for training and evaluation.
  Returns: sigmoid scores (N,), the k-center features (N, H + 1): the hidden features and
  the output logit in eval mode, and the per-step losses (steps,).
  """
  x = features / jnp.maximum(jnp.linalg.norm(features, axis=1, keepdims=True), 1e-12)
  adjacency = gcn_lib.normalised_adjacency(x)
  init_rng, dropout_rng = jax.random.split(rng)
  params = model.init(init_rng, x, adjacency)["params"]
  tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))

  def step(carry, step_rng):
    params, opt_state = carry

    def loss_fn(p):
      logits, _ = model.apply({"params": p}, x, adjacency, train=True, rngs={"dropout": step_rng})
      return bce_adjusted_loss(logits, is_labeled, unlabeled_weight)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss

  # optax's Adam mixes Python scalars with int32 step counts, which the strict dtype-promotion
  # mode (our tests run in it) refuses; standard promotion is what it is written for.
  with jax.numpy_dtype_promotion("standard"):
    (params, _), losses = jax.lax.scan(
      step, (params, tx.init(params)), jax.random.split(dropout_rng, steps)
    )
  logits, hidden = model.apply({"params": params}, x, adjacency)
  return jax.nn.sigmoid(logits), jnp.concatenate([hidden, logits[:, None]], axis=1), losses


def _model(ctx: ScoringContext) -> gcn_lib.GCN:
  g = ctx.config.coregcn
  return gcn_lib.GCN(hidden=int(g.hidden), dropout_rate=float(g.dropout_rate))


def score(ctx: ScoringContext) -> dict:
  """The selector's evidence: the trained GCN's outputs on its nodes, the subset's first and
  the labeled after: {'subset': (S,) positions into ctx.candidates, 'scores': (N,) sigmoid
  outputs, 'features': (N, F) k-center features}. Kept whole (N = S + L is the same every
  cycle when the subset is the whole pool): the selectors cut what they need."""
  g = ctx.config.coregcn
  subset_rng, train_rng = jax.random.split(ctx.rng)
  num = len(ctx.candidates)
  subset = np.arange(num)
  if g.subset_size and num > g.subset_size:
    subset = np.sort(
      np.asarray(jax.random.choice(subset_rng, num, (g.subset_size,), replace=False))
    )
  fn = functools.partial(backbone_features, preprocess=ctx.data.preprocess)
  state = ctx.result.state
  nodes = map_rows(ctx, fn, state, np.concatenate([ctx.candidates[subset], ctx.labeled]))
  is_labeled = jnp.arange(nodes.shape[0]) >= len(subset)
  model = _model(ctx)
  scores, features, losses = train_gcn(
    nodes,
    is_labeled,
    train_rng,
    model=model,
    steps=int(g.steps),
    learning_rate=float(g.learning_rate),
    weight_decay=float(g.weight_decay),
    unlabeled_weight=float(g.unlabeled_weight),
  )
  if not bool(jnp.all(jnp.isfinite(losses))):
    raise FloatingPointError(
      "CoreGCN: the GCN's loss became non-finite while training on "
      f"{nodes.shape[0]} nodes; lower coregcn.learning_rate"
    )
  if g.kcenter_features == "hidden":
    features = features[:, :-1]
  return {"subset": subset, "scores": scores, "features": features}


def _check_subset(evidence: dict, ctx: ScoringContext, k: int) -> None:
  if k > len(evidence["subset"]):
    raise ValueError(
      f"coregcn.subset_size={ctx.config.coregcn.subset_size} gives a graph of "
      f"{len(evidence['subset'])} pool samples, but this cycle selects {k}; "
      "raise coregcn.subset_size (or set it to 0: the whole pool)"
    )


def select_core(evidence: dict, ctx: ScoringContext, k: int) -> np.ndarray:
  """CoreGCN's k picks: k-center greedy over the GCN's features of the subset; (k,) pool
  indices."""
  _check_subset(evidence, ctx, k)
  size = len(evidence["subset"])
  features = evidence["features"]
  picks = selectors.k_center_greedy(
    features,
    _labeled_first(features, size),
    k,
    block_size=int(ctx.config.coreset.block_size),
    key=jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM),
    num_points=size,
    num_centres=features.shape[0] - size,
  )
  return ctx.candidates[evidence["subset"][picks]]


@jax.jit
def _labeled_first(features: jax.Array, subset_size: int) -> jax.Array:
  """The node rows rotated so that the labeled ones (after the subset) come first."""
  return jnp.roll(features, -subset_size, axis=0)


def select_uncertain(evidence: dict, ctx: ScoringContext, k: int) -> np.ndarray:
  """UncertainGCN's k picks: the subset's nodes whose score is nearest the margin; (k,)
  pool indices."""
  _check_subset(evidence, ctx, k)
  scores = sharding.fetch(evidence["scores"])[: len(evidence["subset"])]
  closeness = -np.abs(scores - float(ctx.config.coregcn.margin))
  ties = selectors.tie_break(
    jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), len(closeness), pool_capacity(ctx)
  )
  return ctx.candidates[evidence["subset"][selectors.top_k(closeness, k, ties)]]


def defaults() -> ml_collections.ConfigDict:
  """The coregcn config section's defaults."""
  s = ml_collections.ConfigDict()
  s.subset_size = 10_000  # pool nodes (0 = all); the adjacency is dense: (subset + L)^2
  s.hidden = 128  # GCN hidden width
  s.dropout_rate = 0.3  # on the hidden layer, training only
  s.steps = 200  # full-batch Adam steps
  s.learning_rate = 1e-3  # Adam
  s.weight_decay = 5e-4  # L2, as the reference
  s.unlabeled_weight = 1.2  # lambda on the unlabeled term of the loss
  s.margin = 0.1  # UncertainGCN picks the scores closest to it
  # CoreGCN's k-center space: 'hidden_and_output' (the GCN's hidden features and its output
  # logit, the reference's) or 'hidden'.
  s.kcenter_features = "hidden_and_output"
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the coregcn section's values are invalid."""
  del num_devices
  gc = config.coregcn
  check_value(gc.subset_size >= 0, "coregcn.subset_size", gc.subset_size, ">= 0 (0 = whole pool)")
  check_value(gc.hidden >= 1, "coregcn.hidden", gc.hidden, ">= 1")
  check_value(0 <= gc.dropout_rate < 1, "coregcn.dropout_rate", gc.dropout_rate, "in [0, 1)")
  check_value(gc.steps >= 1, "coregcn.steps", gc.steps, ">= 1")
  check_value(gc.learning_rate > 0, "coregcn.learning_rate", gc.learning_rate, "> 0")
  check_value(0 < gc.margin < 1, "coregcn.margin", gc.margin, "in (0, 1)")
  check_value(
    gc.kcenter_features in ("hidden_and_output", "hidden"),
    "coregcn.kcenter_features",
    gc.kcenter_features,
    "'hidden_and_output' or 'hidden'",
  )


SECTION = ConfigSection("coregcn", defaults, check)  # CoreGCN's and UncertainGCN's

# al.protocol='reference': how the published code runs a cycle.
REFERENCE = ReferenceProtocol(
  subset_size=10_000,
  warm_start=False,
  source=(
    "razvancaramalau/Sequential-GCN-for-Active-Learning config.py:8 (SUBSET = 10000), "
    "main.py:93-96, main.py:98-104 (a new model every cycle)"
  ),
)

CORE = Strategy(
  name="coregcn",
  record="none",
  score=score,
  select=select_core,
  description="CoreGCN: k-center on the hidden features of a labeled-vs-unlabeled GCN",
  config_section=SECTION,
  reads_sections=("coreset",),
  reference=REFERENCE,
)
UNCERTAIN = Strategy(
  name="uncertaingcn",
  record="none",
  score=score,
  select=select_uncertain,
  description="UncertainGCN: GCN scores closest to the margin",
  config_section=SECTION,
  reads_sections=("coreset",),
  reference=REFERENCE,
)
STRATEGIES = (CORE, UNCERTAIN)

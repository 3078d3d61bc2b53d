"""BatchBALD (Kirsch et al. 2019): greedy maximisation of the batch's joint mutual information.

Each candidate gets K = `batchbald.passes` MC-Dropout predictions p_i(y | w_k) from the same K
dropout masks for every candidate (a mask is one draw of the weights w_k, so joint
predictions over several candidates are products under one w_k). The batch A grows greedily
by the candidate i that maximises
  a(A + i) = H(y_A, y_i) - sum_{j in A + i} E_k H(p_j(. | w_k)),
the joint entropy from p(y_A, y_i) = mean_k p_A(y_A | w_k) p_i(y_i | w_k). p_A lives in an
(M, K) table, M = `batchbald.configurations`: exact (every one of the C^|A| label
configurations, padded with zero rows) while C^|A| <= M; past that, M configurations drawn
afresh at each step, K x (M / K) of them from each p(. | w_k), and the entropy estimated by
importance weights 1 / (M q(y_A)), as the reference (BlackHC/batchbald_redux) does.

On device: the (M, K) table, and per block of `batchbald.block_size` candidates a
(block, M, C) joint: memory M (K + block C) floats; each pick costs O(P M K C).
With batch size 1 the score is BALD. Equal scores go to a random candidate (the cycle's key;
the reference's `max` takes the first), so copies stored in a row are not picked by position.

The model is MC-Dropout's (dropout of `mc_dropout.dropout_rate` on the pooled feature),
trained with that dropout on (`batchbald.train_dropout=True`, the reference's: its Bayesian
CNN trains with its MC-dropout layers), or with dropout at query time only (False).
"""

from __future__ import annotations

import functools
from typing import Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies import selectors
from disal_jax.strategies.base import (
  TIE_BREAK_STREAM,
  ConfigSection,
  ScoringContext,
  Strategy,
  entropy,
  pool_capacity,
  pool_outputs,
)
from disal_jax.training import sharding
from disal_jax.training.augment import Preprocess

# Folded into the cycle's key: the dropout masks, and the sampled configurations.
MASK_STREAM, SAMPLE_STREAM = 0xBB1, 0xBB2


@functools.partial(jax.jit, static_argnames=("preprocess", "passes"))
def mc_probs(scoring, data, batch, *, preprocess: Preprocess, passes: int) -> jax.Array:
  """(B, K, C) softmax of rows batch['index'] under K dropout masks shared by every row."""
  state, key = scoring["state"], scoring["key"]
  pass_keys = jax.random.split(key, passes)

  def one(image):
    x = preprocess.normalise(image[None])

    def one_pass(pass_key):  # a (1, D) mask drawn from the pass key alone: the same w_k
      out = state.apply_fn(
        state.variables(), x, train=False, dropout=True, rngs={"dropout": pass_key}
      )
      return jax.nn.softmax(out["logits"][0].astype(jnp.float32))

    return jax.vmap(one_pass)(pass_keys)

  return jax.vmap(one)(data.images_at(batch["index"]))


def exact_slots(classes: int, configurations: int) -> int:
  """The largest n with classes^n <= configurations: how far the table stays exact."""
  n = 0
  while classes ** (n + 1) <= configurations:
    n += 1
  return n


@functools.partial(jax.jit, static_argnames=("configurations",))
def exact_table(chosen: jax.Array, count: jax.Array, configurations: int) -> jax.Array:
  """(M, K) p_A(y_A | w_k) of every configuration y_A: row m < count = C^|A| holds the
  base-C digits of m over A's slots; the other rows are 0. chosen: (n, K, C) probabilities
  of A's members, n = exact_slots(C, M), free slots one-hot on class 0."""
  num_slots, _, classes = chosen.shape
  powers = np.array([classes**b for b in range(num_slots)], np.int64).astype(np.int32)
  digits = (jnp.arange(configurations)[:, None] // powers[None]) % classes  # (M, n)
  by_class = jnp.transpose(chosen, (0, 2, 1))  # (n, C, K)
  factors = by_class[jnp.arange(num_slots)[None, :], digits]  # (M, n, K)
  return jnp.where((jnp.arange(configurations) < count)[:, None], jnp.prod(factors, axis=1), 0.0)


@functools.partial(jax.jit, static_argnames=("configurations",))
def sampled_table(chosen: jax.Array, configurations: int, key: jax.Array) -> jax.Array:
  """(M, K) p_A(y^(m) | w_k) of configurations drawn M // K from each p_A(. | w_k'), rows
  ordered (k', draw); rows past K (M // K) are 0. chosen: (B, K, C), free slots one-hot."""
  num_slots, passes, classes = chosen.shape
  per_pass = configurations // passes
  log_probs = jnp.log(jnp.maximum(chosen, 1e-30))  # (B, K, C)
  labels = jax.random.categorical(key, log_probs, shape=(per_pass, num_slots, passes))
  by_class = jnp.transpose(log_probs, (0, 2, 1))  # (B, C, K)
  # log p_b(y_b^(s, k') | w_k) for every draw (s, k'), slot b and k: (S, B, K', K)
  logs = by_class[jnp.arange(num_slots)[None, :, None], labels]
  table = jnp.exp(jnp.sum(logs, axis=1))  # (S, K', K)
  table = jnp.transpose(table, (1, 0, 2)).reshape(passes * per_pass, passes)
  return jnp.pad(table, [(0, configurations - passes * per_pass), (0, 0)])


@jax.jit
def joint_entropies(table: jax.Array, weights: jax.Array, probs: jax.Array) -> jax.Array:
  """(B,) -sum_{m, c} weights_m J_mc log J_mc, J = table @ p_i / K, for probs (B, K, C)."""
  joint = jnp.einsum("mk,bkc->bmc", table, probs) / probs.shape[1]
  return -jnp.sum(weights[None, :, None] * jax.scipy.special.xlogy(joint, joint), axis=(1, 2))


@jax.jit
def _conditional_entropies(probs: jax.Array) -> jax.Array:
  """(P,) E_k H(p_i(. | w_k)) of probs (P, K, C)."""
  return entropy(probs).mean(axis=1)


def greedy(
  probs: jax.Array,
  k: int,
  configurations: int,
  block: int,
  key: jax.Array,
  num_points: Optional[int] = None,
  *,
  ties: np.ndarray,
) -> np.ndarray:
  """(k,) int64 positions into probs (P, K, C) float32 chosen greedily by BatchBALD; only the
  first `num_points` rows (default P) are candidates, the rest padding: probabilities padded
  to a run's pool capacity compile once for all its cycles. `key` draws the sampled
  configurations; equal scores go to the lowest of `ties` (>= num_points,) float
  (selectors.tie_break)."""
  total, passes, classes = probs.shape
  num = total if num_points is None else num_points
  if configurations < passes:
    raise ValueError(f"batchbald.configurations={configurations} is below passes={passes}")
  conditional = np.asarray(_conditional_entropies(probs))[:num]  # host
  exact = exact_slots(classes, configurations)
  chosen = jnp.broadcast_to(jax.nn.one_hot(0, classes), (k, passes, classes))
  padded = jnp.pad(probs, [(0, -total % block), (0, 0), (0, 0)])
  taken = np.zeros(num, bool)
  picks: list[int] = []
  for step in range(k):
    if step <= exact:  # C^step <= M: every configuration of A
      table = exact_table(chosen[:exact], jnp.int32(classes**step), configurations)
      weights = jnp.ones(configurations, jnp.float32)
    else:
      table = sampled_table(chosen, configurations, jax.random.fold_in(key, step))
      drawn = passes * (configurations // passes)
      q = table.mean(axis=1)
      weights = jnp.where(
        jnp.arange(configurations) < drawn, 1.0 / (jnp.maximum(q, 1e-30) * drawn), 0.0
      )
    scores = np.concatenate(
      [
        np.asarray(joint_entropies(table, weights, padded[s : s + block]))
        for s in range(0, num, block)
      ]
    )[:num]
    scores = scores - conditional - float(conditional[taken].sum())
    scores[taken] = -np.inf
    best = selectors.argmax_random_ties(scores, ties[:num])
    picks.append(best)
    taken[best] = True
    chosen = chosen.at[step].set(probs[best])
  return np.asarray(picks, np.int64)


def score(ctx: ScoringContext) -> jax.Array:
  """The selector's evidence: (P_pad, K, C) MC-Dropout probabilities of the candidates,
  padded to the run's pool capacity (the first P rows count)."""
  fn = functools.partial(
    mc_probs, preprocess=ctx.data.preprocess, passes=int(ctx.config.batchbald.passes)
  )
  key = jax.random.fold_in(ctx.rng, MASK_STREAM)
  return pool_outputs(ctx, fn, {"state": ctx.result.state, "key": key})


def select(probs: jax.Array, ctx: ScoringContext, k: int) -> np.ndarray:
  """BatchBALD's greedy batch of k from the MC-Dropout probabilities; (k,) pool indices."""
  c = ctx.config.batchbald
  probs = jnp.asarray(sharding.fetch(probs))
  ties = selectors.tie_break(
    jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), len(ctx.candidates), pool_capacity(ctx)
  )
  picks = greedy(
    probs,
    k,
    int(c.configurations),
    int(c.block_size),
    jax.random.fold_in(ctx.rng, SAMPLE_STREAM),
    len(ctx.candidates),
    ties=ties,
  )
  return ctx.candidates[picks]


def model_overrides(config: ml_collections.ConfigDict) -> dict[str, float | bool]:
  """MC-Dropout's model (mc_dropout.dropout_rate on the pooled feature), with dropout in
  training as batchbald.train_dropout says."""
  return {
    "dropout_rate": float(config.mc_dropout.dropout_rate),
    "train_dropout": bool(config.batchbald.train_dropout),
  }


def defaults() -> ml_collections.ConfigDict:
  """The batchbald config section's defaults."""
  s = ml_collections.ConfigDict()
  s.passes = 10  # K MC-Dropout passes (masks shared by every candidate); mc_dropout's model
  # Rows of the joint table: exact while C^|batch| fits, then this many sampled configurations
  # (a multiple of passes). Memory M x (K + block_size x C) floats.
  s.configurations = 1000
  s.block_size = 256  # candidates per joint-entropy block
  # Dropout in training too (True: the reference's Bayesian CNN, trained with its MC-dropout
  # layers on) or only in the query passes (False, as mc_dropout's default).
  s.train_dropout = True
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the batchbald section's values are invalid."""
  del num_devices
  s = config.batchbald
  check_value(s.passes >= 2, "batchbald.passes", s.passes, ">= 2")
  check_value(
    s.configurations >= s.passes,
    "batchbald.configurations",
    s.configurations,
    f"at least batchbald.passes ({s.passes})",
  )
  check_value(s.block_size >= 1, "batchbald.block_size", s.block_size, ">= 1")


STRATEGY = Strategy(
  name="batchbald",
  record="none",
  score=score,
  select=select,
  model_overrides=model_overrides,
  description="BatchBALD: greedy joint mutual information over MC-Dropout passes",
  config_section=ConfigSection("batchbald", defaults, check),
  reads_sections=("mc_dropout",),
)

"""Selectors: turn scores or features into the positions of the chosen candidates.

Pure functions on arrays; they know nothing of datasets or models.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from disal_jax.training import sharding


def top_k(scores: np.ndarray, k: int, tie_break: np.ndarray | None = None) -> np.ndarray:
  """Positions of the k highest scores (P,) -> (k,) int64.

  Equal scores are ordered by `tie_break` (P,) (lower first: random numbers make the order
  among ties random), else by position. Ordering ties by position would favour low rows,
  and image folders store their rows class by class.
  """
  scores = -np.asarray(scores, np.float64)
  if tie_break is None:
    return np.argsort(scores, kind="stable")[:k]
  return np.lexsort((np.asarray(tie_break), scores))[:k]


def balanced_top_k(
  scores: np.ndarray, groups: np.ndarray, k: int, tie_break: np.ndarray | None = None
) -> np.ndarray:
  """Positions of k high scores (P,) spread evenly over `groups` (P,) int -> (k,) int64.

  Round robin: every group's best, then every group's second best, and so on; within a
  round, higher scores first. A group that runs out leaves its turns to the others. Ties as
  in top_k.
  """
  order = top_k(scores, len(scores), tie_break)  # every position, best first
  groups = np.asarray(groups)[order]
  rank_in_group = np.zeros(len(order), np.int64)
  for g in np.unique(groups):
    members = groups == g
    rank_in_group[members] = np.arange(members.sum())
  return order[np.argsort(rank_in_group, kind="stable")[:k]]


def uniform(key: jax.Array, size: int, capacity: int = 0) -> np.ndarray:
  """(size,) uniform numbers from `key`: the first `size` of a draw of max(size, capacity).

  With JAX's partitionable threefry (jax_threefry_partitionable, on by default) each value
  depends on the key and its position only, so a prefix of a longer draw equals the shorter
  draw: the numbers do not depend on `capacity`, and one compiled program serves every pool
  size of a run (the pool shrinks every cycle; its capacity does not).
  """
  draw = jax.random.uniform(key, (max(size, capacity),))
  return np.asarray(draw)[:size]


def tie_break(key: jax.Array, size: int, capacity: int = 0) -> np.ndarray:
  """(size,) uniform numbers from `key`: a random order among equal scores (top_k, the
  greedy selectors: the lowest number wins a tie)."""
  return uniform(key, size, capacity)


def argmax_random_ties(values: np.ndarray, ties: np.ndarray) -> int:
  """The position of the largest of `values` (N,); among equal ones, the lowest `ties` (N,)
  (`tie_break`), so a tie does not go to the lowest position (image folders store their
  rows class by class)."""
  values = np.asarray(values)
  return int(np.argmin(np.where(values == values.max(), np.asarray(ties, np.float64), np.inf)))


def _sq_distances(x: jax.Array, centres: jax.Array) -> jax.Array:
  """(N, M) squared Euclidean distances from the expansion |x|^2 + |c|^2 - 2 x.c (matmul)."""
  d = (
    jnp.sum(x * x, axis=1)[:, None]
    + jnp.sum(centres * centres, axis=1)[None, :]
    - 2.0 * x @ centres.T
  )
  return jnp.maximum(d, 0.0)


@functools.partial(jax.jit, static_argnames=("block_size",))
def min_sq_distances(
  points: jax.Array, centres: jax.Array, block_size: int, num_centres: jax.Array | int | None = None
) -> jax.Array:
  """(N,) squared distance from each point (N, D) to its nearest centre (M, D).

  The centres are taken `block_size` at a time, so memory is N x block_size, never N x M.
  Only the first `num_centres` (traced; default M) count: the rest is padding, and blocks
  holding none are skipped, so centres padded to a fixed length compile once for every
  count. No centre gives +inf everywhere.
  """
  if num_centres is None:
    num_centres = centres.shape[0]
  if centres.shape[0] == 0:
    return jnp.full(points.shape[:1], jnp.inf, jnp.float32)
  num_blocks = -(-centres.shape[0] // block_size)
  padded = jnp.pad(centres, ((0, num_blocks * block_size - centres.shape[0]), (0, 0)))
  valid = jnp.arange(num_blocks * block_size) < num_centres
  blocks = (padded.reshape(num_blocks, block_size, -1), valid.reshape(num_blocks, block_size))

  def body(running, block):
    block_centres, block_valid = block

    def nearest(running):
      d = jnp.where(block_valid[None, :], _sq_distances(points, block_centres), jnp.inf)
      return jnp.minimum(running, d.min(axis=1))

    return jax.lax.cond(block_valid[0], nearest, lambda running: running, running), None

  init = jnp.full(points.shape[:1], jnp.inf, jnp.float32)
  return jax.lax.scan(body, init, blocks)[0]


@functools.partial(jax.jit, static_argnames=("k",))
def _greedy(
  points: jax.Array, min_d: jax.Array, num_points: jax.Array, k: int, key: jax.Array
) -> jax.Array:
  # Padding rows (from num_points on) start at -inf: never picked.
  min_d = jnp.where(jnp.arange(points.shape[0]) < num_points, min_d, -jnp.inf)
  # tie_break(key, N): the row's number depends on the key and the position only (`uniform`)
  ties = jax.random.uniform(key, points.shape[:1])

  def body(i, carry):
    min_d, picks = carry
    j = jnp.argmin(jnp.where(min_d == jnp.max(min_d), ties, jnp.inf))  # ties: at random
    d_new = jnp.sum(jnp.square(points - points[j]), axis=1)
    min_d = jnp.minimum(min_d, d_new).at[j].set(-jnp.inf)  # never picked twice
    return min_d, picks.at[i].set(j)

  picks = jnp.zeros((k,), jnp.int32)
  return jax.lax.fori_loop(0, k, body, (min_d, picks))[1]


def k_center_greedy(
  points: jax.Array,
  centres: jax.Array,
  k: int,
  block_size: int,
  key: jax.Array,
  num_points: int | None = None,
  num_centres: int | None = None,
) -> np.ndarray:
  """Greedy k-center (Sener & Savarese): k positions into `points`, in the order chosen.

  Args:
    points: (N, D) float32 candidate features; the first `num_points` (default N) count.
    centres: (M, D) float32 features of the points already covered (the labeled set); the
      first `num_centres` (default M) count.
    k: how many to pick, k <= num_points.
    block_size: centres per block in the initial distance pass (memory N x block_size).
    key: a jax key; equal distances go to the point of lowest `tie_break(key, N)` number.

  Each pick is argmax_u min_c ||f_u - f_c|| over the current centres, which it then joins.
  Memory: a running (N,) min-distance vector, no N x N or N x M matrix. Cost: O(N M D) for
  the initial pass (matmuls) plus O(k N D) for the picks. Ties are broken at random (with no
  centre every point ties: the first pick is a random point), the same for the same key.
  Padding (rows past the counts) is never picked and covers nothing: arrays padded to a
  run's capacity compile once for all its cycles.
  """
  num_points = points.shape[0] if num_points is None else num_points
  num_centres = centres.shape[0] if num_centres is None else num_centres
  if k > num_points:
    raise ValueError(f"cannot pick {k} of {num_points} points")
  min_d = min_sq_distances(points, centres, block_size, np.int32(num_centres))
  return sharding.fetch(_greedy(points, min_d, np.int32(num_points), k, key)).astype(np.int64)

"""ProbCover (Yehuda et al. 2022): greedy maximum coverage of the delta-ball graph.

Every labeled and candidate row is a node (embeddings of disal_jax/strategies/embedding.py);
i covers j when ||x_i - x_j|| < probcover.delta. The labeled rows' balls count as covered.
Each pick is the candidate whose ball holds the most uncovered rows, whose ball then counts
as covered, as in the reference code (avihu111/TypiClust, prob_cover.py). Where we differ:
- equal gains are broken at random with the cycle's key (the reference's argmax takes the
  first of them in [labeled; pool] order: on a class-sorted folder, a class bias);
- once every row is covered (every gain 0), the rest are drawn uniformly from the
  candidates not yet picked (`FILL_STREAM` of the cycle's key); the reference keeps taking
  the argmax of its all-zero degrees, row 0 of [labeled; pool] (a labeled row once there is
  one), at every remaining step, so its batch repeats that row and labels fewer new rows
  than the budget;
- the reference's graph leaves out the last len % 500 rows' balls (its blocks stop at
  len // 500); ours has every row's.
delta is the reference's knob: the largest ball that keeps ~95% of the balls class-pure
under k-means pseudo-labels; it depends on the embedding (see docs/strategies.md).

The graph is built on device in blocks of `probcover.block_size` rows (memory N x block
distances at a time, N = L + P) and kept on the host as an edge list, as the reference does
(memory: the edges, about N x mean ball size); the greedy picks update the out-degrees by
removing the newly covered rows' incoming edges.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies import embedding, selectors
from disal_jax.strategies.base import TIE_BREAK_STREAM, ConfigSection, ScoringContext, Strategy
from disal_jax.training import sharding

# Folded into the cycle's key for the random picks once all is covered.
FILL_STREAM = 0x9C0


@functools.partial(jax.jit, static_argnames=("block",))
def _ball_block(x: jax.Array, start: jax.Array, delta: float, block: int) -> jax.Array:
  """(block, N) bool: rows start .. start + block of x within delta of each row of x."""
  rows = jax.lax.dynamic_slice_in_dim(x, start, block)
  d2 = jnp.sum(rows * rows, axis=1)[:, None] + jnp.sum(x * x, axis=1)[None] - 2.0 * rows @ x.T
  return d2 < delta * delta


def edges(x: jax.Array, delta: float, block: int) -> tuple[np.ndarray, np.ndarray]:
  """(sources, targets) int64 of the delta-ball graph of x (N, D), self-loops included."""
  n = x.shape[0]
  block = min(block, n)
  padded = jnp.pad(x, [(0, -n % block), (0, 0)])
  sources, targets = [], []
  for start in range(0, n, block):
    within = sharding.fetch(_ball_block(padded, np.int32(start), delta, block))[:, :n]
    i, j = np.nonzero(within[: min(block, n - start)])
    sources.append(i + start)
    targets.append(j)
  return np.concatenate(sources).astype(np.int64), np.concatenate(targets).astype(np.int64)


def pick(
  sources: np.ndarray,
  targets: np.ndarray,
  n: int,
  labeled: np.ndarray,
  k: int,
  rng: np.random.Generator,
  ties: np.ndarray,
) -> np.ndarray:
  """(k,) int64 positions by greedy max coverage of the graph (sources -> targets, (E,) int64)
  over n nodes; `labeled` (n,) bool rows are covered from the start and never picked. Equal
  gains go to the lowest `ties` (n,) float (selectors.tie_break); once all is covered, the
  rest are drawn uniformly from the free rows with `rng`."""
  covered = np.zeros(n, bool)
  covered[targets[labeled[sources]]] = True
  keep = ~covered[targets]
  sources, targets = sources[keep], targets[keep]
  free = ~labeled
  picks = []
  for _ in range(k):
    degrees = np.bincount(sources, minlength=n)
    degrees[~free] = -1
    if degrees.max() <= 0:  # every row is covered (the reference repeats row 0 from here)
      rest = rng.choice(np.flatnonzero(free), k - len(picks), replace=False)
      picks.extend(int(r) for r in rest)
      break
    chosen = selectors.argmax_random_ties(degrees, ties)
    newly = targets[sources == chosen]
    covered[newly] = True
    keep = ~np.isin(targets, newly)
    sources, targets = sources[keep], targets[keep]
    picks.append(chosen)
    free[chosen] = False
  return np.asarray(picks, np.int64)


def score(ctx: ScoringContext) -> dict[str, object]:
  """The selector's evidence: embeddings of [labeled; candidates] on device."""
  return embedding.labeled_and_candidates(
    ctx, ctx.config.embedding.source, ctx.config.embedding.file
  )


def select(evidence: dict[str, object], ctx: ScoringContext, k: int) -> np.ndarray:
  """ProbCover's k picks: greedy max coverage of the delta-ball graph; (k,) pool indices."""
  c = ctx.config.probcover
  x, labeled = evidence["x"], evidence["labeled"]
  num_labeled = int(labeled.sum())
  sources, targets = edges(x, float(c.delta), int(c.block_size))
  key = np.asarray(jax.random.key_data(jax.random.fold_in(ctx.rng, FILL_STREAM)))
  # drawn at the training set's size: the same program whatever L + P is this cycle
  ties = selectors.tie_break(
    jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), x.shape[0], len(ctx.data.dataset.train_labels)
  )
  positions = pick(sources, targets, x.shape[0], labeled, k, np.random.default_rng(key), ties)
  return ctx.candidates[positions - num_labeled]


def defaults() -> ml_collections.ConfigDict:
  """The probcover config section's defaults."""
  s = ml_collections.ConfigDict()
  # Ball radius on L2-normalised embeddings; the reference's CIFAR-10 value for SimCLR
  # features. Choose it for your embedding (ball purity ~0.95 under k-means labels).
  s.delta = 0.75
  s.block_size = 1024  # rows per block when building the graph (memory N x block)
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the probcover section's values are invalid."""
  del num_devices
  s = config.probcover
  check_value(s.delta > 0, "probcover.delta", s.delta, "> 0")
  check_value(s.block_size >= 1, "probcover.block_size", s.block_size, ">= 1")


STRATEGY = Strategy(
  name="probcover",
  record="none",
  score=score,
  select=select,
  description="ProbCover: greedy max coverage of delta-balls in an embedding",
  config_section=ConfigSection("probcover", defaults, check, moved_keys=embedding.MOVED_KEYS),
  reads_sections=("embedding",),
)

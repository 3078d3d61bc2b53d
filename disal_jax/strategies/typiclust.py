"""TypiClust (Hacohen et al. 2022): the most typical sample of the largest uncovered clusters.

The labeled and candidate rows are embedded (disal_jax/strategies/embedding.py) and
clustered by k-means into min(L + K, typiclust.max_clusters) clusters. Clusters of at most
`typiclust.min_cluster_size` rows are dropped; the others are visited in the order (fewest
labeled rows, then largest), cyclically, and each visit picks the unlabeled, unpicked member
of highest typicality 1 / (mean squared Euclidean distance to its knn nearest fellow members
+ 1e-5), knn = min(typiclust.knn, members // 2), as the reference code does (faiss'
IndexFlatL2 returns squared distances; it recomputes typicality over the cluster's remaining
members at each pick). `typiclust.distance=euclidean` uses plain distances instead, as the
paper's equation writes it.

Memory: k-means holds an (N, max_clusters) distance matrix on device (N = L + P; the
clusters past min(L + K, max_clusters) are inactive, so every cycle runs one compiled
program); each pick a (min(block_size, members), members) float64 block of distances on the
host. Time: k-means is O(iterations N max_clusters D); the picks O(K members^2 D).
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np

from disal_jax.errors import check_value
from disal_jax.strategies import embedding
from disal_jax.strategies.base import ConfigSection, ScoringContext, Strategy
from disal_jax.training import sharding

# Folded into the cycle's key for k-means' seeding.
KMEANS_STREAM = 0x7C1

# Added to the mean neighbour distance before inverting it, as the reference does.
TYPICALITY_EPS = 1e-5
DISTANCES = ("squared", "euclidean")


def typicality(x: np.ndarray, knn: int, block_size: int, distance: str = "squared") -> np.ndarray:
  """Each row's typicality.

  Args:
    x: (n, D) float64 rows, n >= 2.
    knn: neighbours averaged, 1 <= knn < n.
    block_size: rows whose distances are held at once.
    distance: 'squared' (the reference code's) or 'euclidean' (the paper's equation).

  Returns:
    (n,) float64: 1 / (mean distance to the knn nearest other rows + TYPICALITY_EPS).
  """
  n = x.shape[0]
  norms = np.einsum("ij,ij->i", x, x)
  mean = np.empty(n)
  for start in range(0, n, block_size):
    stop = min(start + block_size, n)
    d = x[start:stop] @ x.T  # (block, n); then ||a||^2 + ||b||^2 - 2ab in place
    d *= -2.0
    d += norms[start:stop, None]
    d += norms[None, :]
    np.maximum(d, 0.0, out=d)  # rounding can leave a tiny negative
    d[np.arange(stop - start), np.arange(start, stop)] = np.inf  # a row is not its neighbour
    d.partition(knn - 1, axis=1)
    nearest = d[:, :knn]
    if distance == "euclidean":
      nearest = np.sqrt(nearest)
    mean[start:stop] = nearest.mean(axis=1)
  return 1.0 / (mean + TYPICALITY_EPS)


def pick(
  x: np.ndarray,
  clusters: np.ndarray,
  labeled: np.ndarray,
  k: int,
  knn: int,
  min_cluster_size: int,
  block_size: int,
  distance: str = "squared",
) -> np.ndarray:
  """(k,) int64 positions into x (N, D) float64 by TypiClust's rule, given each row's (N,)
  int cluster and a (N,) bool of the labeled rows (never picked); block_size and distance as
  in `typicality`."""
  ids, sizes = np.unique(clusters, return_counts=True)
  existing = np.bincount(clusters[labeled], minlength=ids.max() + 1)[ids]
  keep = sizes > min_cluster_size
  if not keep.any():
    raise ValueError(
      f"TypiClust: every cluster holds at most {min_cluster_size} rows; lower "
      "typiclust.min_cluster_size or typiclust.max_clusters"
    )
  ids, sizes, existing = ids[keep], sizes[keep], existing[keep]
  order = ids[np.lexsort((-sizes, existing))]  # fewest labeled, then largest
  free = ~labeled
  picks = []
  for i in range(k):
    members = np.flatnonzero(free & (clusters == order[i % len(order)]))
    if len(members) == 0:  # this cluster is used up: the next that is not
      rest = [c for c in order if np.any(free & (clusters == c))]
      if not rest:
        raise ValueError(f"TypiClust: only {len(picks)} of {k} picks left in kept clusters")
      members = np.flatnonzero(free & (clusters == rest[0]))
    if len(members) == 1:
      chosen = members[0]
    else:
      near = max(1, min(knn, len(members) // 2))
      chosen = members[np.argmax(typicality(x[members], near, block_size, distance))]
    picks.append(int(chosen))
    free[chosen] = False
  return np.asarray(picks, np.int64)


def score(ctx: ScoringContext) -> dict[str, object]:
  """The selector's evidence: embeddings of [labeled; candidates] on device."""
  return embedding.labeled_and_candidates(
    ctx, ctx.config.embedding.source, ctx.config.embedding.file
  )


def select(evidence: dict[str, object], ctx: ScoringContext, k: int) -> np.ndarray:
  """TypiClust's k picks: the most typical row of each large uncovered cluster; (k,) pool
  indices."""
  c = ctx.config.typiclust
  x, labeled = evidence["x"], evidence["labeled"]
  most = min(int(c.max_clusters), x.shape[0])  # held every cycle: one compiled k-means
  num_clusters = min(int(labeled.sum()) + k, most)
  clusters = sharding.fetch(
    embedding.kmeans(
      x,
      jax.random.fold_in(ctx.rng, KMEANS_STREAM),
      num_clusters,
      int(c.kmeans_iterations),
      max_clusters=most,
    )
  )
  positions = pick(
    np.asarray(sharding.fetch(x), np.float64),
    clusters,
    labeled,
    k,
    int(c.knn),
    int(c.min_cluster_size),
    int(c.block_size),
    str(c.distance),
  )
  return ctx.candidates[positions - int(labeled.sum())]


def defaults() -> ml_collections.ConfigDict:
  """The typiclust config section's defaults."""
  s = ml_collections.ConfigDict()
  s.max_clusters = 500  # k-means clusters: min(labeled + budget, this), as the reference
  s.min_cluster_size = 5  # clusters of at most this many rows are never visited
  s.knn = 20  # neighbours in the typicality (at most half the cluster)
  s.distance = "squared"  # typicality's: 'squared' (reference code) or 'euclidean' (paper)
  s.block_size = 1024  # rows per block of typicality's distances (memory block x members)
  s.kmeans_iterations = 50  # Lloyd steps after k-means++ seeding
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the typiclust section's values are invalid."""
  del num_devices
  s = config.typiclust
  check_value(s.distance in DISTANCES, "typiclust.distance", s.distance, f"one of {DISTANCES}")
  for key in ("max_clusters", "knn", "block_size"):
    check_value(s[key] >= 1, f"typiclust.{key}", s[key], ">= 1")
  for key in ("min_cluster_size", "kmeans_iterations"):
    check_value(s[key] >= 0, f"typiclust.{key}", s[key], ">= 0")


STRATEGY = Strategy(
  name="typiclust",
  record="none",
  score=score,
  select=select,
  description="TypiClust: most typical samples of uncovered k-means clusters",
  config_section=ConfigSection("typiclust", defaults, check, moved_keys=embedding.MOVED_KEYS),
  reads_sections=("embedding",),
)

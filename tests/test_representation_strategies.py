"""TypiClust and ProbCover against brute-force references, and the k-means they build on."""

import jax
import jax.numpy as jnp
import numpy as np
from sklearn.cluster import KMeans

from disal_jax.strategies import embedding, probcover, typiclust


def _blobs(rng, centres, per, spread=0.05):
  x = np.concatenate([c + spread * rng.normal(size=(per, len(c))) for c in centres])
  return x.astype(np.float32), np.repeat(np.arange(len(centres)), per)


def _same_partition(a, b):
  pairs = {(int(i), int(j)) for i, j in zip(a, b)}
  return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_finds_the_partition_sklearn_finds_on_separated_blobs():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(6, 5)) * 3
  x, truth = _blobs(rng, centres, 40)
  ours = np.asarray(embedding.kmeans(jnp.asarray(x), jax.random.key(0), 6, 30))
  theirs = KMeans(6, n_init=10, random_state=0).fit_predict(x)
  assert _same_partition(ours, truth) and _same_partition(theirs, truth)


def test_kmeans_held_for_more_clusters_equals_kmeans_and_compiles_once():
  from tests.helpers import CompileCounter

  rng = np.random.default_rng(1)
  x = jnp.asarray(_blobs(rng, rng.normal(size=(8, 4)) * 3, 25)[0], jnp.float32)
  for k in (3, 5, 8):
    np.testing.assert_array_equal(
      embedding.kmeans(x, jax.random.key(2), k, 10, max_clusters=12),
      embedding.kmeans(x, jax.random.key(2), k, 10),
    )
  with CompileCounter() as compiles:
    embedding.kmeans(x, jax.random.key(3), 6, 10, max_clusters=12)
  assert compiles.count == 0


def _reference_typicality(x, knn):
  """The reference's calculate_typicality: faiss' IndexFlatL2 (squared L2) search for knn + 1
  neighbours, the first (the row itself) dropped, 1 / (mean + 1e-5); one row at a time."""
  out = []
  for row in x:
    squared = sorted(float(np.sum((row - other) ** 2)) for other in x)
    out.append(1.0 / (np.mean(squared[1 : knn + 1]) + 1e-5))
  return np.asarray(out)


def _typiclust_reference(x, clusters, labeled, k, knn, min_size):
  """The reference's select_samples loop (clusters by fewest labeled, then largest; each pick
  the most typical of the cluster's remaining unlabeled rows, knn = min(knn, members // 2))."""
  ids = sorted(set(clusters.tolist()))
  table = []
  for c in ids:
    size = int(np.sum(clusters == c))
    if size > min_size:
      table.append((int(np.sum(labeled & (clusters == c))), -size, c))
  order = [c for _, _, c in sorted(table)]
  free = ~labeled.copy()
  picks = []
  for i in range(k):
    members = [j for j in range(len(x)) if free[j] and clusters[j] == order[i % len(order)]]
    typ = _reference_typicality(x[members], min(knn, len(members) // 2))
    best = members[int(np.argmax(typ))]
    picks.append(best)
    free[best] = False
  return picks


def test_typiclust_picks_as_the_reference_loop_does():
  rng = np.random.default_rng(1)
  x, _ = _blobs(rng, rng.normal(size=(5, 4)) * 2, 16, spread=0.3)
  x = np.concatenate([x, rng.normal(size=(3, 4)).astype(np.float32) * 5])  # a tiny cluster
  clusters = np.concatenate([np.repeat(np.arange(5), 16), [5, 5, 5]])
  labeled = np.zeros(len(x), bool)
  labeled[[0, 1, 16]] = True  # clusters 0 (two) and 1 (one) hold labeled rows
  x = x.astype(np.float64)
  want = _typiclust_reference(x, clusters, labeled, 8, 5, 5)
  got = typiclust.pick(x, clusters, labeled, 8, knn=5, min_cluster_size=5, block_size=7)
  assert got.tolist() == want
  # the uncovered clusters (2, 3, 4) come first, cluster 5 (3 rows) never
  assert set(clusters[got[:3]].tolist()) == {2, 3, 4} and 5 not in clusters[got].tolist()
  # plain distances (the paper's equation) rank these clusters differently
  plain = typiclust.pick(
    x, clusters, labeled, 8, knn=5, min_cluster_size=5, block_size=7, distance="euclidean"
  )
  assert plain.tolist() != want


def test_typicality_averages_squared_distances_as_the_reference_does():
  # knn = 2. Row 0's neighbours lie at 1 and 1 (squared mean 1, plain mean 1); row 1's at 0.1
  # and 1.8 (squared mean 1.625, plain mean 0.95): squared distances rank row 0 first.
  x = np.array([[0.0, 0.0], [3.0, 0.0], [3.1, 0.0], [4.8, 0.0], [0.0, 1.0], [0.0, -1.0]])
  x[1:4, 1] = 10.0  # far from rows 0, 4 and 5
  squared = typiclust.typicality(x, 2, block_size=4)
  np.testing.assert_allclose(squared, _reference_typicality(x, 2), rtol=1e-12)
  assert squared[0] > squared[1]
  plain = typiclust.typicality(x, 2, block_size=4, distance="euclidean")
  assert plain[1] > plain[0]


def test_typicality_of_a_large_cluster_holds_blocks_and_equals_brute_force():
  import tracemalloc

  # 3,000 rows of 64: a (rows, rows, D) float64 difference array would take 4.6 GB; a
  # 256-row block of distances takes 6 MB.
  rng = np.random.default_rng(3)
  x = rng.normal(size=(3000, 64))
  tracemalloc.start()
  try:
    got = typiclust.typicality(x, 20, block_size=256)
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 4 * 256 * 3000 * 8  # a few blocks' worth, not rows^2 (72 MB), let alone rows^2 D
  subset = rng.choice(3000, 40, replace=False)
  squared = np.sum((x[subset, None, :] - x[None, :, :]) ** 2, axis=-1)  # (40, 3000)
  want = 1.0 / (np.sort(squared, axis=1)[:, 1:21].mean(axis=1) + 1e-5)
  np.testing.assert_allclose(got[subset], want, rtol=1e-10)


def _probcover_reference(x, delta, labeled, k, ties):
  """Brute-force greedy coverage on the dense ball matrix; equal gains go to the lowest
  `ties` number."""
  n = len(x)
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  ball = d < delta
  covered = ball[labeled].any(axis=0)
  free = ~labeled.copy()
  picks = []
  for _ in range(k):
    gain = np.array([(int(np.sum(ball[i] & ~covered)) if free[i] else -1) for i in range(n)])
    tied = np.flatnonzero(gain == gain.max())
    best = int(tied[np.argmin(ties[tied])])
    assert gain[best] > 0
    covered |= ball[best]
    free[best] = False
    picks.append(best)
  return picks


def test_probcover_greedy_equals_a_brute_force_coverage_loop():
  rng = np.random.default_rng(2)
  x, _ = _blobs(rng, rng.normal(size=(6, 3)) * 2, 12, spread=0.4)
  labeled = np.zeros(len(x), bool)
  labeled[[0, 13]] = True
  sources, targets = probcover.edges(jnp.asarray(x), 0.6, block=16)
  d = np.linalg.norm(x[:, None] - x[None], axis=-1)
  assert len(sources) == int(np.sum(d < 0.6))  # every edge, in blocks that do not divide N
  ties = np.random.default_rng(1).uniform(size=len(x))
  got = probcover.pick(sources, targets, len(x), labeled, 5, np.random.default_rng(0), ties)
  assert got.tolist() == _probcover_reference(x, 0.6, labeled, 5, ties)


def test_probcover_draws_at_random_once_everything_is_covered():
  x = np.zeros((10, 2), np.float32)  # one point ten times: the first ball covers all
  sources, targets = probcover.edges(jnp.asarray(x), 0.1, block=4)
  labeled = np.zeros(10, bool)
  got = probcover.pick(sources, targets, 10, labeled, 4, np.random.default_rng(0), np.zeros(10))
  assert len(set(got.tolist())) == 4


def test_probcover_breaks_equal_gains_at_random_with_the_cycle_key():
  """Three points stored 4 times each in a row (a class-sorted folder), one labeled row far
  off: every ball holds its point's 4 copies, so the first three picks are ties. An argmax
  would take positions 1, 5, 9 (rows 0, 4, 8 of the pool) for every key."""
  import types

  from disal_jax.strategies import selectors
  from disal_jax.strategies.base import TIE_BREAK_STREAM
  from tests.helpers import tiny_config

  x = np.concatenate(
    [
      np.full((1, 3), -5.0),  # the labeled row
      np.repeat(np.eye(3) * 5, 4, axis=0),
    ]
  ).astype(np.float32)
  labeled = np.arange(13) == 0
  config = tiny_config(**{"probcover.delta": 0.5, "probcover.block_size": 8})
  evidence = {"x": jnp.asarray(x), "labeled": labeled}
  firsts, batches = set(), set()
  for seed in range(12):
    ctx = types.SimpleNamespace(
      config=config,
      candidates=np.arange(200, 212),
      rng=jax.random.key(seed),
      data=types.SimpleNamespace(dataset=types.SimpleNamespace(train_labels=np.zeros(20))),
    )
    picks = probcover.select(evidence, ctx, 3)
    assert picks.tolist() == probcover.select(evidence, ctx, 3).tolist()  # same key
    ties = selectors.tie_break(jax.random.fold_in(ctx.rng, TIE_BREAK_STREAM), 13, 20)
    positions = _probcover_reference(x, 0.5, labeled, 3, ties)
    assert (picks - 200).tolist() == [p - 1 for p in positions]
    assert sorted((picks - 200) // 4) == [0, 1, 2]  # one copy of each point
    firsts.add(int(picks[0]))
    batches.add(tuple(picks.tolist()))
  assert len(firsts) >= 4 and (200, 204, 208) not in batches

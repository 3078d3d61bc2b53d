"""Embeddings for the representation-based strategies (TypiClust, ProbCover) and k-means.

`embedding='model'`: the task model's penultimate features (eval mode); `'file'`: a user's
.npy of self-supervised features with one row per training sample (the references use SimCLR
features; a model trained on a few hundred labels embeds poorly). Rows are L2-normalised, as
the references do.
"""

from __future__ import annotations

import functools
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.config import ConfigError, check_value
from disal_jax.strategies.base import ScoringContext, map_rows
from disal_jax.strategies.coreset import features


@functools.lru_cache(maxsize=4)
def _read(path: str, num_train: int) -> np.ndarray:
  file = pathlib.Path(path).expanduser()
  try:
    table = np.load(file, mmap_mode="r")
  except (OSError, ValueError) as e:
    raise ConfigError(f"embedding file {file}: cannot read it as .npy ({e}); give a (N, D) "
                      "float array with one row per training sample") from e
  if table.ndim != 2 or table.shape[0] != num_train:
    raise ConfigError(f"embedding file {file} holds shape {table.shape}; this training set "
                      f"needs ({num_train}, D): one row per training sample, in its order")
  return np.asarray(table, np.float32)


def check_keys(config: ml_collections.ConfigDict, name: str) -> None:
  """Checks the `embedding` and `embedding_file` keys of config.<name>."""
  s = config[name]
  check_value(s.embedding in ("model", "file"), f"{name}.embedding", s.embedding,
              "'model' or 'file'")
  check_value(s.embedding == "model" or bool(s.embedding_file), f"{name}.embedding_file",
              s.embedding_file, "the .npy path for embedding='file'")


def normalised(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rows(ctx: ScoringContext, source: str, path: str, index: np.ndarray) -> jax.Array:
  """(len(index), D) float32 L2-normalised embeddings of training rows `index`, on device."""
  if source == "file":
    if not path:
      raise ConfigError("embedding='file' needs the .npy path (embedding_file)")
    table = _read(path, len(ctx.data.dataset.train_labels))
    return normalised(jnp.asarray(table[np.asarray(index)]))
  fn = functools.partial(features, preprocess=ctx.data.preprocess)
  return normalised(map_rows(ctx, fn, ctx.result.state, np.asarray(index)).astype(jnp.float32))


def labeled_and_candidates(ctx: ScoringContext, section: str) -> dict[str, object]:
  """Evidence of a representation strategy (config section `section` with `embedding` and
  `embedding_file`): {'x': (L + P, D) embeddings of [labeled; candidates] on device,
  'labeled': (L + P,) bool, True on the first L rows}."""
  c = ctx.config[section]
  index = np.concatenate([ctx.labeled, ctx.candidates])
  labeled = np.zeros(len(index), bool)
  labeled[:len(ctx.labeled)] = True
  return {"x": rows(ctx, c.embedding, c.embedding_file, index), "labeled": labeled}


def kmeans_pp_init(x: jax.Array, uniforms: jax.Array, k: jax.Array | int) -> jax.Array:
  """(K, D) k-means++ centres of x (N, D), K = len(uniforms): the first at uniforms[0], then
  D^2 sampling, for the first k (traced) rows; the rest repeat the first centre."""
  n = x.shape[0]
  sq = jnp.sum(x * x, axis=1)
  first = jnp.minimum((uniforms[0] * n).astype(jnp.int32), n - 1)

  def d2_to(j):
    return jnp.maximum(sq + sq[j] - 2.0 * (x @ x[j]), 0.0)

  def step(t, carry):
    picks, min_d2 = carry
    cdf = jnp.cumsum(min_d2)
    pick = jnp.searchsorted(cdf, uniforms[t] * cdf[-1], side="right")
    pick = jnp.minimum(pick, n - 1).astype(jnp.int32)
    return picks.at[t].set(pick), jnp.minimum(min_d2, d2_to(pick))

  picks = jnp.full(uniforms.shape[0], first, jnp.int32)
  picks, _ = jax.lax.fori_loop(1, k, step, (picks, d2_to(first)))
  return x[picks]


def kmeans(x: jax.Array, key: jax.Array, k: int, iterations: int, max_clusters: int = 0
           ) -> jax.Array:
  """(N,) int32 cluster of each row of x (N, D): k-means++ seeding, then `iterations` Lloyd
  steps (an emptied cluster keeps its centre). Memory: the (N, K) distance matrix.

  With `max_clusters` >= k, the centres are held for max_clusters, those from k on inactive,
  so one program serves every k of a run (TypiClust's labeled + budget grows every cycle).
  The clusters equal those of max_clusters = 0: the seeding's uniforms are a prefix of the
  same draw (partitionable threefry).
  """
  if max_clusters and k > max_clusters:
    raise ValueError(f"k-means with {k} clusters held for {max_clusters}")
  return _kmeans(x, key, np.int32(k), iterations=iterations, slots=max_clusters or k)


@functools.partial(jax.jit, static_argnames=("iterations", "slots"))
def _kmeans(x: jax.Array, key: jax.Array, k: jax.Array, *, iterations: int, slots: int
            ) -> jax.Array:
  uniforms = jax.random.uniform(key, (slots,))
  centres = kmeans_pp_init(x, uniforms, k)
  active = jnp.arange(slots) < k
  sq = jnp.sum(x * x, axis=1, keepdims=True)

  def assign(centres):
    d2 = sq + jnp.sum(centres * centres, axis=1)[None] - 2.0 * x @ centres.T
    return jnp.argmin(jnp.where(active[None], d2, jnp.inf), axis=1).astype(jnp.int32)

  def lloyd(_, centres):
    one_hot = jax.nn.one_hot(assign(centres), slots, dtype=x.dtype)  # (N, K)
    counts = one_hot.sum(0)
    sums = one_hot.T @ x
    return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts[:, None], 1.0), centres)

  return assign(jax.lax.fori_loop(0, iterations, lloyd, centres))

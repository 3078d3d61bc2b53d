"""The embedding of the representation strategies (TypiClust, ProbCover, CoreSet), and k-means.

One config section, `embedding`, shared by the strategies that declare it in
`reads_sections` (a change of it blocks resuming their runs only):
- `embedding.source='model'`: the task model's penultimate features (eval mode), the
  features CoreSet was published on;
- `embedding.source='file'`: the rows of `embedding.file`, a .npy of a user's (N, D)
  embeddings from any self-supervised or foundation model, one row per training-set row in
  the order the loaded dataset holds them. TypiClust and ProbCover were published on
  self-supervised (SimCLR) features: on the task model's features (a model trained on a few
  hundred labels embeds poorly) they are not the published methods.
The file is checked once the dataset is loaded (its shape against the training set's rows),
before any training, and read once per process. What a strategy does with the rows is its
own: TypiClust and ProbCover L2-normalise them, as their references do; CoreSet takes them as
they are. BADGE does not read this section: its gradient embedding is made of the task
model's own prediction and features (docs/strategies.md).
"""

from __future__ import annotations

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from disal_jax.errors import ConfigError, check_value
from disal_jax.strategies.base import ConfigSection, ScoringContext, map_rows
from disal_jax.training.augment import Preprocess

SOURCES = ("model", "file")


def defaults() -> ml_collections.ConfigDict:
  """The embedding config section's defaults."""
  s = ml_collections.ConfigDict()
  # 'model': the task model's penultimate features; 'file': the rows of embedding.file (read
  # by typiclust, probcover and coreset; see docs/strategies.md).
  s.source = "model"
  # .npy of (N, D) embeddings, one row per training-set row in the loaded dataset's order
  # (e.g. SimCLR or a foundation model's features); read when source='file'.
  s.file = ""
  return s


def check(config: ml_collections.ConfigDict, num_devices: int) -> None:
  """Raises ConfigError where the embedding section's values are invalid."""
  del num_devices
  s = config.embedding
  check_value(s.source in SOURCES, "embedding.source", s.source, f"one of {SOURCES}")
  check_value(
    s.source != "file" or bool(s.file),
    "embedding.file",
    s.file,
    "the path of a .npy of (N, D) embeddings when embedding.source='file'",
  )


def check_for_dataset(config: ml_collections.ConfigDict, dataset) -> None:
  """With source='file': the file holds one row per training row of `dataset` (ConfigError
  naming the file, the shape found and the shape needed otherwise). Reads the file."""
  if config.embedding.source == "file":
    table(config.embedding.file, dataset.num_train)


SECTION = ConfigSection("embedding", defaults, check, check_for_dataset)

# TypiClust's and ProbCover's keys (section-relative) from before this section held them: their
# sections' moved_keys, so that a run saved then resumes and a project made then opens.
MOVED_KEYS = {"embedding": "embedding.source", "embedding_file": "embedding.file"}


def _invalid(path: str, problem: str, num_train: int) -> ConfigError:
  return ConfigError(
    f"config.embedding.file={path!r} is invalid: {problem}; embedding.source='file' needs "
    f"a .npy of shape ({num_train}, D), one row per training-set row in the order the "
    "loaded dataset holds them (embed the train_images of "
    "disal_jax.data.registry.load_dataset(config.data)), or set embedding.source='model'."
  )


def table(path: str, num_train: int) -> np.ndarray:
  """(num_train, D) float32 rows of the .npy at `path`; ConfigError naming the file, what is
  wrong with it (missing, unreadable, its shape, non-finite values) and the shape needed."""
  file = pathlib.Path(path).expanduser().resolve()
  try:
    stat = os.stat(file)
    header = np.load(file, mmap_mode="r")  # the shape, without reading the rows
  except FileNotFoundError:
    raise _invalid(path, f"there is no file {file}", num_train) from None
  except (OSError, ValueError) as e:
    raise _invalid(path, f"{file} cannot be read as .npy ({e})", num_train) from e
  if not isinstance(header, np.ndarray):  # an .npz archive
    raise _invalid(path, f"{file} holds no single array ({type(header).__name__})", num_train)
  if header.ndim != 2 or header.shape[0] != num_train:
    raise _invalid(path, f"it holds shape {header.shape}", num_train)
  rows, bad = _load(str(file), stat.st_mtime_ns, stat.st_size)
  if bad:
    raise _invalid(path, f"{bad} of its rows hold NaN or infinite values", num_train)
  return rows


@functools.lru_cache(maxsize=2)  # a run's file, read once (two: a sweep that switches files)
def _load(file: str, mtime_ns: int, size: int) -> tuple[np.ndarray, int]:
  """The whole file as float32 and its count of rows with a non-finite value, read once per
  (file, modification time, size)."""
  del mtime_ns, size  # the cache key: a file written again is read again
  rows = np.asarray(np.load(file), np.float32)
  return rows, int(np.sum(~np.all(np.isfinite(rows), axis=1)))


@functools.partial(jax.jit, static_argnames=("preprocess",))
def features(state, data, batch, *, preprocess: Preprocess) -> jax.Array:
  """(B, D) float32 penultimate features of rows `batch['index']`, eval mode."""
  images = preprocess.normalise(data.images_at(batch["index"]))
  return state.apply_fn(state.variables(), images, train=False)["features"]


def normalised(x: jax.Array) -> jax.Array:
  """`x` (..., D) scaled to unit L2 norm along the last axis."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rows(
  ctx: ScoringContext, source: str, path: str, index: np.ndarray, capacity: int = 0
) -> jax.Array:
  """(len(index), D) float32 embeddings of training rows `index` on device, as the source
  gives them (not normalised): the model's features, or the file's rows.

  With `capacity` > 0 the result keeps at least `capacity` rows (those from len(index) on
  are padding), so that a run's cycles share one shape (map_rows' capacity; the model's
  features are also rounded up to whole eval batches).
  """
  index = np.asarray(index)
  if source == "file":
    picked = table(path, len(ctx.data.dataset.train_labels))[index]
    return jnp.asarray(np.pad(picked, [(0, max(capacity - len(index), 0)), (0, 0)]))
  fn = functools.partial(features, preprocess=ctx.data.preprocess)
  return map_rows(ctx, fn, ctx.result.state, index, capacity=capacity).astype(jnp.float32)


def labeled_and_candidates(ctx: ScoringContext, source: str, path: str) -> dict[str, object]:
  """Evidence of TypiClust and ProbCover (their `embedding.source` and `embedding.file`):
  {'x': (L + P, D) float32 L2-normalised embeddings of [labeled; candidates] on device,
  'labeled': (L + P,) bool, True on the first L rows}."""
  index = np.concatenate([ctx.labeled, ctx.candidates])
  labeled = np.zeros(len(index), bool)
  labeled[: len(ctx.labeled)] = True
  return {"x": normalised(rows(ctx, source, path, index)), "labeled": labeled}


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


def kmeans(
  x: jax.Array, key: jax.Array, k: int, iterations: int, max_clusters: int = 0
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
def _kmeans(
  x: jax.Array, key: jax.Array, k: jax.Array, *, iterations: int, slots: int
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

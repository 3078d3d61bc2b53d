"""strategies/base.py: scoring batches are split over the devices (not replicated on each),
and each batch gets its own key, batch['rng'], from the cycle's scoring key."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.strategies import base, testing
from tests.helpers import REPO, subprocess_env, xla_flags

# Runs under 4 forced host devices: every batch a scorer sees must be laid out along the
# data axis when its size divides over the devices, replicated otherwise, and the rows must
# come back in order, whole batches past the pool zeros; a streamed split's window holds
# every row a batch reads.
_SCRIPT = """
import itertools, types
import jax, jax.numpy as jnp, numpy as np
from disal_jax.strategies import base
from disal_jax.training import placement, sharding
assert jax.device_count() == 4
mesh = sharding.make_mesh()
images, labels = np.zeros((1000, 2, 2, 1), np.uint8), np.arange(1000, dtype=np.int32) * 3
resident = placement.place_split(images, labels, mesh, stream=False)
streamed = placement.place_split(images, labels, mesh, stream=True)
index = jax.device_put(np.arange(1000, dtype=np.int32), sharding.along_data(mesh))
extra = {"x": jax.device_put(np.arange(2000, dtype=np.float32).reshape(1000, 2),
                             sharding.along_data(mesh))}
specs = []
def batch_fn(state, data, batch):
  specs.append(batch["index"].sharding.spec)
  held = data.labels_at(batch["index"]) - 3 * batch["index"]  # 0 where the row is held
  return batch["index"] * 10 + batch["x"][:, 1].astype(jnp.int32) + held
for (count, size, spec), data in itertools.product(
    ((1000, None, ("data",)), (300, 36, ("data",)), (50, 30, ())), (resident, streamed)):
  ctx = types.SimpleNamespace(data=types.SimpleNamespace(mesh=mesh, train_data=data),
                              config=types.SimpleNamespace(
                                  train=types.SimpleNamespace(eval_batch_size=64)))
  specs.clear()
  out = np.asarray(base._map_batches(batch_fn, None, ctx, index, count, extra, size))
  size = size or 64
  assert len(out) == -(-1000 // size) * size, (count, size, out.shape)  # the index's length
  rows = np.arange(count)
  assert np.array_equal(out[:count], rows * 10 + 2 * rows + 1), (count, size, out)
  assert not out[-(-count // size) * size:].any(), (count, size)  # batches never computed
  assert specs and all(tuple(s) == spec for s in specs), (count, size, specs)
print("ok")
"""


def test_scoring_batches_are_split_over_the_devices():
  env = subprocess_env(XLA_FLAGS=xla_flags("--xla_force_host_platform_device_count=4"))
  done = subprocess.run(
    [sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300, env=env
  )
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


# -- batch['rng'] ---------------------------------------------------------------------------


@jax.jit
def _draws(state, data, batch):
  """(B,) float32: one uniform draw from the batch's key, the same for each of its rows."""
  del state, data
  return jnp.broadcast_to(jax.random.uniform(batch["rng"]), batch["index"].shape)


def _expected_draws(key, batches, batch_size):
  """The draws written out: batch b's key is fold_in(fold_in(key, BATCH_KEY_STREAM), b)."""
  stream = jax.random.fold_in(key, base.BATCH_KEY_STREAM)
  return np.repeat(
    [float(jax.random.uniform(jax.random.fold_in(stream, b))) for b in range(batches)], batch_size
  )


@pytest.fixture(scope="module")
def ctx():
  return testing.tiny_context(strategy="random", rng=jax.random.key(7))  # 12 rows, batches of 4


def test_each_scoring_batch_draws_from_its_own_key_of_the_cycles_key(ctx):
  scores = base.batched_pool_scores(ctx, _draws, None)
  batch_size = ctx.config.train.eval_batch_size
  batches = len(ctx.candidates) // batch_size
  assert batches == 3
  np.testing.assert_array_equal(scores, _expected_draws(ctx.rng, batches, batch_size))
  assert len(np.unique(scores)) == batches  # every batch its own key
  other = base.batched_pool_scores(dataclasses.replace(ctx, rng=jax.random.key(8)), _draws, None)
  assert not np.intersect1d(other, scores).size  # another cycle, other keys
  given = base.batched_pool_scores(ctx, _draws, None, rng=jax.random.key(8))
  np.testing.assert_array_equal(given, other)  # a key given in place of the cycle's
  np.testing.assert_array_equal(base.batched_pool_scores(ctx, _draws, None), scores)


def test_map_rows_batches_get_their_keys_too(ctx):
  rows = ctx.candidates[:6]
  out = np.asarray(base.map_rows(ctx, _draws, None, rows, batch_size=2))
  np.testing.assert_array_equal(out, _expected_draws(ctx.rng, 3, 2))


def test_a_draw_depends_on_where_the_batches_fall_a_score_that_ignores_it_does_not(ctx):
  """As pool_outputs documents: batch keys follow the batching; a score without draws is the
  same in any batching (a strategy that reads no batch['rng'] is unaffected by it)."""
  by_four = base.batched_pool_scores(ctx, _draws, None)
  by_six = base.batched_pool_scores(ctx, _draws, None, batch_size=6)
  assert not np.array_equal(by_four, by_six)

  @functools.partial(jax.jit, static_argnames=("preprocess",))
  def confidence(state, data, batch, *, preprocess):
    images = preprocess.normalise(data.images_at(batch["index"]))
    return jnp.max(state.apply_fn(state.variables(), images, train=False)["logits"], axis=-1)

  fn = functools.partial(confidence, preprocess=ctx.data.preprocess)
  np.testing.assert_allclose(
    base.batched_pool_scores(ctx, fn, ctx.result.state),
    base.batched_pool_scores(ctx, fn, ctx.result.state, batch_size=6),
    rtol=1e-6,
  )

"""strategies/base.py: scoring batches are split over the devices (not replicated on each)."""

from __future__ import annotations

import subprocess
import sys

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
  done = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=env)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]

"""One 1-D ('data',) mesh over all devices: batches split along it, parameters replicated."""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """The ('data',) mesh over `devices` (default: all). The same devices give the same Mesh
  object, so jitted functions keyed on it are shared within a process."""
  return _mesh(tuple(jax.devices() if devices is None else devices))


@functools.lru_cache(maxsize=None)
def _mesh(devices: tuple) -> Mesh:
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding that puts a whole copy on every device of `mesh`."""
  return NamedSharding(mesh, P())


def along_data(mesh: Mesh) -> NamedSharding:
  """Leading (batch or sample) axis split over the devices."""
  return NamedSharding(mesh, P(DATA_AXIS))


def put_replicated(tree, mesh: Mesh):
  """`tree` placed on every device of `mesh`, replicated."""
  return _put(tree, replicated(mesh))


def _put(tree, target: NamedSharding):
  """device_put onto a sharding of the mesh. With several processes, arrays held on this
  host's devices go through host memory first (device_put accepts only host values, equal on
  every process, for shardings that span other hosts' devices); PRNG keys as their key data."""
  if jax.process_count() == 1:
    return jax.device_put(tree, target)

  def one(x):
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)), impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and x.is_fully_addressable:
      x = np.asarray(x)
    return jax.device_put(x, target)

  return jax.tree.map(one, tree)


def put_host(x: np.ndarray, target: NamedSharding) -> jax.Array:
  """A host array, equal on every process, onto `target` without any collective: each
  process puts only its own devices' shards. device_put of a value to a sharding spanning
  other hosts agrees with them first, which must not run on a thread beside programs whose
  collectives it could interleave with (placement.prefetched)."""
  if jax.process_count() == 1:
    return jax.device_put(x, target)
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, target, lambda index: x[index])


def fetch(tree):
  """The pytree's arrays as host numpy, whole: an array split over other hosts' devices is
  gathered from every process (a collective: every process must call it with the same
  arrays); a local or fully replicated one is read directly."""

  def one(x):
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))

  return jax.tree.map(one, tree)

"""One 1-D ('data',) mesh over all devices: batches split along it, parameters replicated."""

from __future__ import annotations

import functools

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
  """The ('data',) mesh over `devices` (default: all). The same devices give the same Mesh
  object, so jitted functions keyed on it are shared within a process."""
  return _mesh(tuple(jax.devices() if devices is None else devices))


@functools.lru_cache(maxsize=None)
def _mesh(devices: tuple) -> Mesh:
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def along_data(mesh: Mesh) -> NamedSharding:
  """Leading (batch or sample) axis split over the devices."""
  return NamedSharding(mesh, P(DATA_AXIS))


def put_replicated(tree, mesh: Mesh):
  return jax.device_put(tree, replicated(mesh))


def put_along_data(tree, mesh: Mesh):
  return jax.device_put(tree, along_data(mesh))

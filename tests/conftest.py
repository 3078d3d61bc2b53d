"""Fixtures shared by the tests; helpers live in tests/helpers.py."""

from __future__ import annotations

import gc
import os
import pathlib
import shutil
import tempfile

import jax
import pytest

from disal_jax import platform_settings
from tests.helpers import (  # imports jax, starts no backend
  FAST_COMPILE_XLA_FLAG,
  SHARED_DATA,
  write_image_folder,
)

if FAST_COMPILE_XLA_FLAG.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):  # yours stands
  os.environ["XLA_FLAGS"] = " ".join(
    filter(None, [os.environ.get("XLA_FLAGS", ""), FAST_COMPILE_XLA_FLAG])
  )

# The settings every entry point applies before JAX starts (XLA:CPU kernels; opt-in malloc).
platform_settings.apply()

_OWN_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  # One XLA compilation cache for the programs the tests start (the CLI, resume, benchmark
  # and multi-host tests compile the same programs again and again; a cache hit costs ~1/3
  # of a compile on this CPU). jax is already imported here, so this process itself does not
  # use it: within one process jit's own cache already shares the compiled programs, and one
  # full run aborted inside the cache's executable write in this process (jax 0.10.2, CPU).
  _OWN_CACHE = tempfile.mkdtemp(prefix="disal_jax_xla_cache_")
  os.environ.update(
    {
      "JAX_COMPILATION_CACHE_DIR": _OWN_CACHE,
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
  )


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE is not None:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


# Every program XLA:CPU compiles keeps its code mapped while jit's caches hold it; one process
# running the whole suite reached Linux's default vm.max_map_count (65,530 mappings) near the
# end and crashed inside XLA (measured: ~13,000 mappings after test_strategies alone).
_MAPPINGS_BEFORE_RELEASE = 20_000
_MAPS = pathlib.Path("/proc/self/maps")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """After a test module, drops the compiled programs once the process holds many mappings
  (jax.clear_caches: 13,091 -> 1,345 mappings measured); later modules compile again."""
  yield
  if _MAPS.exists() and sum(1 for _ in _MAPS.open()) > _MAPPINGS_BEFORE_RELEASE:
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  """A cache folder for the whole session (extracted archives, decoded arrays)."""
  return str(tmp_path_factory.mktemp("disal_cache"))


@pytest.fixture(scope="session")
def cifar10_archive():
  """The real CIFAR-10 JPEGs where they are (CI has them); a clone alone skips, saying so."""
  if not SHARED_DATA.exists():
    # The archive lives outside the repository (CI and this project's machines have it); a
    # clone alone cannot run the tests of the real images, and says so in the summary.
    pytest.skip(f"the real CIFAR-10 archive {SHARED_DATA} is not beside the repository")
  return str(SHARED_DATA)


CIFAR10_CLASSES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)


@pytest.fixture(scope="session")
def image_folder_root(tmp_path_factory):
  """A small synthetic image folder with CIFAR-10's class names: 12 training and 10 test
  JPEGs per class, 32 x 32."""
  return write_image_folder(tmp_path_factory.mktemp("image_folder"), CIFAR10_CLASSES, 12, 10)

"""disal_jax/host_memory.py: with DISAL_JAX_HOST_MEMORY=keep, a big block freed by a worker thread
is reused without page faults; without it (the default) every allocation faults it in afresh."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from disal_jax import host_memory
from tests.helpers import REPO, subprocess_env

# What XLA:CPU does with a program's temporaries, on one of its worker threads: a big block
# allocated, written and freed, three times; prints, each time, the minor page faults of
# writing it and how much the resident memory fell when it was freed.
_SCRIPT = """
import ctypes, json, resource, threading
from disal_jax import host_memory, platform_settings
platform_settings.apply()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size, faults, freed = 192 * 2**20, [], []

def resident_bytes():
  with open("/proc/self/statm") as statm:
    return int(statm.read().split()[1]) * resource.getpagesize()

def calls():
  for _ in range(3):
    block = libc.malloc(size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(block, 1, size)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    resident = resident_bytes()
    libc.free(block)
    freed.append(resident - resident_bytes())

worker = threading.Thread(target=calls)
worker.start()
worker.join()
print(json.dumps({"kept": host_memory.is_kept(), "faults": faults, "freed": freed}))
"""
_BLOCK = 192 * 2**20


def _run(setting: str) -> dict:
  done = subprocess.run(
    [sys.executable, "-c", _SCRIPT],
    capture_output=True,
    text=True,
    cwd=REPO,
    env=subprocess_env(DISAL_JAX_HOST_MEMORY=setting),
    check=True,
  )
  return json.loads(done.stdout.strip().splitlines()[-1])


def test_keep_reuses_a_worker_threads_freed_big_blocks():
  kept, default = _run("keep"), _run("default")
  assert kept["kept"] and not default["kept"]
  # glibc's default gives a worker thread's big block back to the OS on every free ...
  assert min(default["freed"]) > _BLOCK // 2, default
  # ... kept, it stays, and writing it again costs no page faults
  assert max(kept["freed"]) < _BLOCK // 100, kept
  assert max(kept["faults"][1:]) < _BLOCK // 4096 // 100, kept


def test_the_environment_value_is_checked():
  assert host_memory.requested({}) is False
  assert host_memory.requested({host_memory.ENV: "default"}) is False
  assert host_memory.requested({host_memory.ENV: " Keep "}) is True
  with pytest.raises(ValueError, match="DISAL_JAX_HOST_MEMORY='kept'.*'keep'"):
    host_memory.requested({host_memory.ENV: "kept"})

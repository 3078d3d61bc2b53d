"""Host memory (opt-in): keep what XLA:CPU frees, so the next call does not fault it back in.

XLA:CPU allocates each program's temporaries with malloc on every call and frees them at the
end. With glibc's defaults a block of more than 32 MiB (any block over 64 MiB from a worker
thread's arena) is mapped fresh from the OS and unmapped on free, so every call of the one-pass
engine on 64 CIFAR images (~500 MiB of temporaries) took ~120,000-140,000 page faults, about
10% of the process's CPU time in the kernel zeroing pages (2-core CI-class machine).

`keep_freed_memory()` has glibc serve every block from its one main heap and keep freed
memory for reuse: one arena (M_ARENA_MAX = 1; a worker thread's own arena maps its big blocks
whatever M_MMAP_MAX says), no mapped blocks (M_MMAP_MAX = 0) and no trimming of the heap's top
below TRIM_THRESHOLD_BYTES. The process then holds on to its peak host memory, as accelerator
allocators (JAX's on GPU, PyTorch's caching allocator) do. After a few calls the engine takes
no page faults at all.

It is off by default because it is a trade, not a free win (measured, docs/performance.md): the
one-pass engine and big-batch CPU programs run faster, but XLA compiles slower with every
thread on one arena, and this project's tests and small offline runs are compile-bound. Turn it
on for scoring-heavy CPU jobs and benchmarks with DISAL_JAX_HOST_MEMORY=keep in the environment
(applied by the entry points, disal_jax/platform_settings.py), or call `keep_freed_memory()`
before JAX starts its threads (a thread keeps the arena it first allocated from). Only glibc
has these settings; elsewhere nothing changes. GPU and TPU memory are not host malloc:
unaffected.
"""

from __future__ import annotations

import ctypes
import logging
import os

from disal_jax import xla_cpu

ENV = "DISAL_JAX_HOST_MEMORY"
ENV_VALUES = ("default", "keep")
# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# mallopt takes an int: the largest trim threshold it accepts. Freed memory at the heap's top
# beyond this is returned to the OS; below it, kept for the next call.
TRIM_THRESHOLD_BYTES = 2**31 - 1
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))

_kept = False


def requested(environ=None) -> bool:
  """Whether the environment asks for `keep_freed_memory()` (DISAL_JAX_HOST_MEMORY=keep)."""
  value = (os.environ if environ is None else environ).get(ENV, "default").strip().lower()
  if value not in ENV_VALUES:
    raise ValueError(
      f"{ENV}={value!r}: expected one of {ENV_VALUES} (keep: glibc keeps "
      "freed host memory for reuse; see disal_jax/host_memory.py)"
    )
  return value == "keep"


def keep_freed_memory() -> bool:
  """Applies SETTINGS with glibc's mallopt. Returns whether they are in force (False where
  the C library is not glibc)."""
  global _kept
  if _kept:
    return True
  try:
    mallopt = ctypes.CDLL(None).mallopt
  except (OSError, AttributeError):
    logging.info("disal_jax: %s=keep needs glibc's mallopt; host malloc left as it is", ENV)
    return False
  if xla_cpu.backends_started():
    logging.warning(
      "disal_jax: JAX's backends started before host_memory.keep_freed_memory(); "
      "threads that already allocated keep their own arenas (partly in force)"
    )
  for param, value in SETTINGS:
    if mallopt(ctypes.c_int(param), ctypes.c_int(value)) != 1:
      raise RuntimeError(f"glibc refused mallopt({param}, {value})")
  _kept = True
  return True


def is_kept() -> bool:
  """Whether `apply` has set glibc to keep freed memory in this process."""
  return _kept


def apply() -> None:
  """keep_freed_memory() if the environment asks for it (see the module docstring)."""
  if requested():
    keep_freed_memory()

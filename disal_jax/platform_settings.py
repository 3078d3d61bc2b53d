"""Process-wide settings the command-line entry points apply before JAX starts a backend.

- XLA:CPU's convolution kernels (disal_jax/xla_cpu.py: appended to XLA_FLAGS unless set);
- glibc keeping the host memory XLA:CPU frees, where the environment asks for it
  (DISAL_JAX_HOST_MEMORY=keep; disal_jax/host_memory.py).

`cli.run` (main, sweep, ablation, annotate) and the benchmarks call `apply()`; importing
`disal_jax` changes nothing in the process, so a library user keeps their own XLA_FLAGS and
malloc. Call `apply()` yourself before the first JAX computation to get the same settings.
"""

from __future__ import annotations

from disal_jax import host_memory, xla_cpu


def apply() -> None:
  """Applies the XLA:CPU and host memory settings (call before JAX starts a backend)."""
  xla_cpu.apply()
  host_memory.apply()

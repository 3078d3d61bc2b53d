"""Which XLA:CPU kernels run this project's programs: set in XLA_FLAGS before JAX starts.

XLA:CPU in jax 0.10.2 hands every convolution to YNNPACK (`__ynn_fusion`). On the CPUs this
project runs its tests and CPU benchmarks on (2-core AMD EPYC VMs), YNNPACK's convolutions
ran at half the speed of XLA's own (Eigen) ones in ResNet-18's 64-channel stage (3x3, batch
64: 91 against 177 GFLOP/s) and no faster in the others; a whole train step took 1.2-1.3x as
long with them (`python -m benchmarks.xla_cpu` measures the choices side by side). So a
convolution on its own goes to Eigen; YNNPACK keeps XLA's own choice for the rest (matrix
products, reductions) and also fuses dots and elementwise ops with their neighbours, which
made a train step faster still (see FUSIONS). Note that those fusions take a convolution
together with the elementwise ops that follow it (convolution + BatchNorm + ReLU, most of
ResNet's convolutions) into one YNNPACK fusion: what the setting removes is YNNPACK's
stand-alone convolutions.

`apply()` runs in the entry points (disal_jax/platform_settings.py). It appends the setting to
XLA_FLAGS unless the flag is already there (a user's own choice stands:
`--xla_cpu_experimental_ynn_fusion_type=` with XLA's own list brings YNNPACK's convolutions
back). JAX reads XLA_FLAGS once, when its first backend starts; if that has already happened,
`apply()` changes nothing and says so. The flag is read by the CPU compiler only: GPU and TPU
programs are unaffected.
"""

from __future__ import annotations

import logging
import os

FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# XLA's own list in jax 0.10.2 (programs compiled with it match those compiled with no flag),
# and this project's: no stand-alone convolutions, and YNNPACK's fusions of dots and
# elementwise ops (a convolution followed by elementwise ops is taken into those)
# (train step 0.88-0.90x the time of XLA's own list minus convolutions, one-pass engine
# 1.04-1.08x, in two runs of `benchmarks.xla_cpu`; training dominates a cycle).
XLA_DEFAULT_FUSIONS = (
  "LIBRARY_FUSION_TYPE_REDUCE",
  "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
  "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
)
FUSIONS = (
  "LIBRARY_FUSION_TYPE_DOT",
  "LIBRARY_FUSION_TYPE_ELTWISE",
  "LIBRARY_FUSION_TYPE_REDUCE",
  "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
)
WITHOUT_CONVOLUTIONS = tuple(
  fusion for fusion in XLA_DEFAULT_FUSIONS if fusion != "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"
)


def with_setting(xla_flags: str) -> str:
  """`xla_flags` with this project's YNNPACK setting appended, unless the flag is in it."""
  if any(part.split("=")[0] == FLAG for part in xla_flags.split()):
    return xla_flags
  return " ".join(filter(None, [xla_flags, f"{FLAG}={','.join(FUSIONS)}"]))


def compiler_options(fusions: tuple[str, ...]) -> dict[str, str]:
  """Per-program override of the setting (`jax.jit(..., compiler_options=...)`), for
  measuring one choice against another in the same process."""
  return {FLAG.lstrip("-"): ",".join(fusions)}


def backends_started() -> bool:
  """Whether this process's JAX has started a backend (then XLA_FLAGS no longer apply)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=import-outside-toplevel

    return xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):  # another jax: assume not started (the flag is inert then)
    return False


def apply() -> None:
  """Puts the setting in os.environ['XLA_FLAGS'] (see the module docstring)."""
  current = os.environ.get("XLA_FLAGS", "")
  wanted = with_setting(current)
  if wanted == current:
    return
  if backends_started():
    logging.info(
      "disal_jax: JAX's backends started before the platform settings; XLA:CPU "
      "keeps YNNPACK's convolutions (slower here; see disal_jax/xla_cpu.py)"
    )
    return
  os.environ["XLA_FLAGS"] = wanted

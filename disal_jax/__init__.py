"""disal_jax: accelerator-native active learning (README.md). Importing it sets XLA:CPU's
convolution kernels before JAX starts (disal_jax/xla_cpu.py) and, where the environment asks
for it (DISAL_JAX_HOST_MEMORY=keep), has glibc keep the host memory XLA:CPU frees between calls
(disal_jax/host_memory.py)."""

from disal_jax import host_memory
from disal_jax import xla_cpu

xla_cpu.apply()
host_memory.apply()

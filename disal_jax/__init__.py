"""disal_jax: accelerator-native active learning (README.md). Importing it sets XLA:CPU's
convolution kernels before JAX starts (see disal_jax/xla_cpu.py)."""

from disal_jax import xla_cpu

xla_cpu.apply()

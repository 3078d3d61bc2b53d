"""disal_jax: accelerator-native active learning (README.md).

Importing the package changes nothing in the process; the entry points apply the CPU
settings of disal_jax/platform_settings.py before JAX starts.
"""

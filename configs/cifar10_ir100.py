"""CIFAR10-IR100: 5000 -> 50 images per class (12,406 in all), labeled 1k -> 4k in +0.5k steps.

  python -m disal_jax.main --config=configs/cifar10_ir100.py --workdir=workdirs/cifar10_ir100

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=cifar10
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "cifar10"
  config.data.imbalance_ratio = 100.0
  config.al.initial_count = 1000
  config.al.step_count = 500
  config.al.final_count = 4000
  return config

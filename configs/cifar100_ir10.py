"""CIFAR100-IR10: 500 -> 50 images per class (exponential), labeled 2k -> 8k in +1k steps.

  python -m disal_jax.main --config=configs/cifar100_ir10.py --workdir=workdirs/cifar100_ir10

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=cifar100
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "cifar100"
  config.data.imbalance_ratio = 10.0
  config.al.initial_count = 2000
  config.al.step_count = 1000
  config.al.final_count = 8000
  config.tod.cod_weight = 0.05  # TOD's COD weight for this dataset (docs/strategies.md)
  return config

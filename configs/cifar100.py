"""CIFAR-100, the paper's protocol (docs/method.md): ResNet-18, 200 epochs per cycle, 10% -> 40%.

  python -m disal_jax.main --config=configs/cifar100.py --workdir=workdirs/cifar100

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=cifar100
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "cifar100"
  config.tod.cod_weight = 0.05  # TOD's COD weight for this dataset (docs/strategies.md)
  return config

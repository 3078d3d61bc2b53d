"""CIFAR-10, the paper's protocol (docs/method.md): ResNet-18, 200 epochs per cycle, 10% -> 40%.

  python -m disal_jax.main --config=configs/cifar10.py --workdir=workdirs/cifar10

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=cifar10
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "cifar10"
  return config

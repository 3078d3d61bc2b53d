"""SVHN (cropped digits, 73,257 training images), the paper's protocol (docs/method.md).

  python -m disal_jax.main --config=configs/svhn.py --workdir=workdirs/svhn

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=svhn
Horizontal flips are off: house numbers are not mirror-symmetric.
"""

from disal_jax.config import base_config


def get_config():
  config = base_config()
  config.data.name = "svhn"
  config.augment.flip = False
  config.tod.cod_weight = 0.005  # TOD's COD weight for this dataset (docs/strategies.md)
  return config

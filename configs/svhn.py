"""SVHN (cropped digits, 73,257 training images), the paper's protocol (docs/method.md).

  python -m disal_jax.main --config=configs/svhn.py --workdir=workdirs/svhn

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=svhn
Augmentation as the TOD reference's SVHN: random crop (padding 4) and horizontal flip, though
house numbers are not mirror-symmetric (--config.augment.flip=False turns the flip off).
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "svhn"
  config.tod.cod_weight = 0.005  # TOD's COD weight for this dataset (docs/strategies.md)
  return config

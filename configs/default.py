"""Offline default: DISAL vs Random on scikit-learn's digits (real 8x8 images, no network).

A whole experiment (2 strategies x 7 cycles + Full Training) runs in under 10 minutes on 2 CPU
cores with a width-16 ResNet-18:

  python -m disal_jax.main --config=configs/default.py --workdir=workdirs/default

Variants: --config=configs/default.py:quick shrinks it to seconds (tests, smoke runs).
"""

from disal_jax.experiment import base_config


def get_config(variant: str = ""):
  config = base_config()
  config.data.name = "digits"
  config.model.width = 16
  config.train.epochs = 30
  config.train.batch_size = 32
  config.train.eval_batch_size = 128
  config.train.learning_rate = 0.05
  config.augment.crop_padding = 1
  config.augment.flip = False  # digits are not mirror-symmetric
  config.train.min_steps = 600  # 84% -> 92% at the first budget; 2,000 steps: 92.5%
  config.data.val_fraction = 0.1  # 143 labeled validation images, never in the pool
  config.disal.dynamic_batch_size = 32
  if variant == "quick":
    config.model.width = 8
    config.train.epochs = 3
    config.train.min_steps = 0
    config.data.val_fraction = 0.0
    config.al.final_fraction = 0.20
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/default.py; known: 'quick'")
  return config

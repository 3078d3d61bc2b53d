"""Annotation projects on your own images (python -m disal_jax.annotate, docs/annotate.md
"Annotating your own images"): every image resized to 32 px, a width-32 ResNet-18, 30 epochs
per round.

  python -m disal_jax.annotate init --images=DIR --workdir=W --config=configs/annotate.py

The config is read once, at init, and kept in W/config.json. Variants: `:quick` for tests.
"""

from disal_jax.experiment import base_config


def get_config(variant: str = ""):
  config = base_config()
  config.data.name = "image_folder"  # the project's folder; data_dir is not used
  config.data.image_size = 32
  config.model.width = 32
  config.train.epochs = 30
  config.train.batch_size = 64
  config.train.eval_batch_size = 256
  config.train.learning_rate = 0.05
  config.full_training = False
  config.disal.dynamic_batch_size = 64
  if variant == "quick":
    config.model.width = 8
    config.train.epochs = 2
    config.train.batch_size = 32
    config.train.eval_batch_size = 64
    config.disal.dynamic_batch_size = 32
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/annotate.py; known: 'quick'")
  return config

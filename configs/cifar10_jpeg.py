"""The real CIFAR-10 images of ../shared/data (an image folder archive), no tfds, no network.

  python -m disal_jax.main --config=configs/cifar10_jpeg.py --workdir=workdirs/cifar10_jpeg

The default is the paper's protocol on those images. The 'short' variant is the CPU sanity
run: a random 5,000-image training set, all labeled, a width-32 ResNet-18, 15 epochs:

  python -m disal_jax.main --config=configs/cifar10_jpeg.py:short --workdir=workdirs/c10_short
"""

import pathlib

from disal_jax.experiment import base_config

ARCHIVE = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.gz"


def get_config(variant: str = ""):
  config = base_config()
  config.data.name = "image_folder"
  config.data.data_dir = str(ARCHIVE)
  if variant == "short":
    config.data.max_train = 5000
    config.data.max_test = 2000
    config.model.width = 32
    config.train.epochs = 15
    config.train.eval_batch_size = 500
    config.strategies = "random"
    config.al.initial_fraction = config.al.final_fraction = 1.0  # one plain training run
    config.full_training = False
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/cifar10_jpeg.py; known: 'short'")
  return config

"""The paper's CIFAR-10 protocol on the real CIFAR-10 JPEGs of ../shared/data, scaled to CPU.

  python -m disal_jax.sweep --config=configs/cifar10_cpu.py \
      --strategies=disal,random,gradnorm_entropy,coreset,mc_dropout,learning_loss \
      --seeds=0,1,2 --workdir=workdirs/cifar10_cpu
  python -m disal_jax.report workdirs/cifar10_cpu

The archive is looked for beside the repository (shared/data/cifar10-jpeg.tar.gz); point
--config.data.data_dir at another copy. What is scaled, and why:
- pool: a fixed random 3,000 of the 48,000 training images left after the validation split,
  so the budgets are 300 -> 1,200 labeled in +150 steps (10% -> 40% of the pool, 7 cycles);
- validation: a fixed stratified 2,000 of the 50,000 training images (data.val_fraction),
  never in the pool: every setting is chosen on it;
- test set: a fixed random 2,000 of the 10,000 test images;
- model: ResNet-18 at width 8 (an eighth of the channels): at 300 labels it reaches what
  width 16 does (35.4 against 35.5% validation accuracy, 300 steps, seed 0) in ~0.6x the time;
- training: 15 epochs per cycle of at least 300 SGD steps in all (train.min_steps): at 300
  labels 15 plain epochs are 45 steps (33.2% validation accuracy at width 16) and 900 steps
  give 36.9% (width 16); lr x0.1 after 80% of the epochs, as in the paper;
- everything else (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 128, crop + flip,
  scoring the whole pool) is the paper's.
"""

import pathlib

from disal_jax.experiment import base_config

ARCHIVE = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.gz"


def get_config(variant: str = ""):
  config = base_config()
  config.data.name = "image_folder"
  config.data.data_dir = str(ARCHIVE)
  config.data.val_fraction = 0.04
  config.data.max_train = 3_000
  config.data.max_test = 2_000
  config.model.width = 8
  config.train.epochs = 15
  config.train.min_steps = 300
  config.checkpoint.every_epochs = 5
  if variant == "quick":
    config.train.min_steps = 0
    config.al.final_fraction = 0.15
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/cifar10_cpu.py; known: 'quick'")
  return config

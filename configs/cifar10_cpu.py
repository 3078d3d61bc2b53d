"""The paper's CIFAR-10 protocol on the real CIFAR-10 JPEGs of ../shared/data, scaled to CPU.

  python -m disal_jax.sweep --config=configs/cifar10_cpu.py \
      --strategies=disal,random,gradnorm_entropy,coreset --seeds=0,1,2 \
      --workdir=workdirs/cifar10_cpu
  python -m disal_jax.report workdirs/cifar10_cpu

Sized so that this whole 4-strategy x 3-seed sweep finishes in about 1.5 hours on 2 CPU
cores (measured: plain train step 271 img/s, DISAL's step with its dynamic loss 138 img/s,
the recording pass 910 img/s at width 16). What is scaled, and why:
- pool: a fixed random 3,000 of the 50,000 training images (data.max_train), so the budgets
  are 300 -> 1,200 labeled in +150 steps (10% -> 40% of the pool, 7 cycles);
- test set: a fixed random 2,000 of the 10,000 test images;
- model: ResNet-18 at width 16 (a quarter of the channels);
- training: 15 epochs per cycle instead of 200 (lr x0.1 after 80%, as in the paper);
- DISAL's dynamic loss starts after 5 epochs instead of 1: at 600 labeled an epoch is 5 SGD
  steps (the paper's 10% of CIFAR-10 is 40), and the running mean of so barely trained a
  model's predictions is a target that collapsed training (measured: seed 0, cycle 2, train
  accuracy fell to 8% and test accuracy to 15.6%, from 35.3% the cycle before);
- everything else (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 128, crop + flip,
  scoring the whole pool) is the paper's.
Per strategy and seed: Random ~5 min, CoreSet ~5 min, entropy-gradnorm ~7 min, DISAL ~14 min
(its step trains a pool batch beside each labeled batch, and it records the pool each epoch).
A larger run (the pool at 10,000 and 30 epochs: Random about an hour per seed, DISAL about
three) is `--config.data.max_train=10000 --config.train.epochs=30`.
"""

import pathlib

from disal_jax.config import base_config

ARCHIVE = pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/cifar10-jpeg.tar.gz"


def get_config():
  config = base_config()
  config.data.name = "image_folder"
  config.data.data_dir = str(ARCHIVE)
  config.data.max_train = 3_000
  config.data.max_test = 2_000
  config.model.width = 16
  config.train.epochs = 15
  config.disal.dynamic_warmup_epochs = 5
  config.checkpoint.every_epochs = 5
  return config

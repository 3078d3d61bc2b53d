"""Caltech101 at 224 px: background class dropped, 90/10 split, 50 epochs, batch 64, lr 0.01.

  python -m disal_jax.main --config=configs/caltech101.py --workdir=workdirs/caltech101

Needs the prepared tfds dataset: python -m disal_jax.data.prepare --dataset=caltech101
Without --config.model.init_from it trains from scratch (expect lower accuracies than the
paper's Caltech101 figure).
Images as the reference loads them: the shorter side resized to 256, the central 224 x 224
kept; augmentation: horizontal flips only. The reference starts from ImageNet-pretrained
weights: give a Flax checkpoint of this ResNet-18 with --config.model.init_from=PATH (nothing
is downloaded).
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "caltech101"
  config.data.image_size = 224
  config.data.crop_from = 256  # shorter side -> 256, centre crop 224 (the reference's loader)
  config.data.test_fraction = 0.1
  config.model.stem = "imagenet"
  config.train.epochs = 50
  config.train.batch_size = 64
  config.train.eval_batch_size = 256
  config.train.learning_rate = 0.01
  config.augment.crop_padding = 0  # the reference: resize, centre crop, flip; no random crop
  config.tod.cod_weight = 0.1  # TOD's COD weight for this dataset (docs/strategies.md)
  return config

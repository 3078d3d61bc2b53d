"""Offline segmentation demo: DISAL vs Random on the synthetic shapes set, DRN-D-22.

The Cityscapes protocol (docs/method.md: DRN-D-22, Adam, random crops and flips, mIoU over the
classes, whole images selected) on disal_jax.data.shapes: 400 generated 64x64 images of
disks, squares and triangles on textured backgrounds, 4 classes, an ignore band on every
boundary. Predicting background everywhere scores about 18% mIoU. Runs on 2 CPU cores in
about ten minutes (40 -> 160 labeled, 15 epochs per cycle, DISAL, Random, Full Training):

  python -m disal_jax.main --config=configs/segmentation_demo.py --workdir=workdirs/seg_demo

Variants: --config=configs/segmentation_demo.py:quick shrinks it to seconds (tests).
"""

from disal_jax.experiment import base_config


def get_config(variant: str = ""):
  config = base_config()
  config.data.name = "shapes"
  config.data.shapes.num_train = 400
  config.data.shapes.num_test = 100
  config.model.name = "drn_d_22_seg"
  config.model.width = 8  # the reference DRN-D-22 has 16
  config.train.optimizer = "adam"
  config.train.learning_rate = 2e-3
  config.train.weight_decay = 1e-4
  config.train.epochs = 15
  config.train.batch_size = 4  # the Cityscapes protocol's
  config.train.eval_batch_size = 50
  config.augment.crop_padding = 0
  config.augment.crop_size = (48, 48)
  config.augment.flip = True
  config.record.pixel_stride = 8  # 8 x 8 recorded pixels per image
  config.disal.dynamic_batch_size = 4
  config.disal.target_source = "eval_pass"  # the train branch is classification-only
  if variant == "quick":
    config.data.shapes.num_train = 200
    config.data.shapes.num_test = 40
    config.model.width = 4
    config.train.epochs = 3
    config.train.eval_batch_size = 20
    config.al.final_fraction = 0.20
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/segmentation_demo.py; known: 'quick'")
  return config

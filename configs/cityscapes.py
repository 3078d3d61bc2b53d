"""Cityscapes semantic segmentation: DRN-D-22, 19 classes, mIoU (docs/method.md; the paper's
supplementary Tables 1-2): 10% -> 40% of the 2,975 training images in +5% steps (whole images
selected), 40 epochs per cycle, Adam lr 5e-4, batch 4, random 688 x 688 crops and flips,
evaluation on the 500 full validation images.

  python -m disal_jax.data.prepare --dataset=cityscapes --manual_dir=<folder with the zips>
  python -m disal_jax.main --config=configs/cityscapes.py --workdir=workdirs/cityscapes

The manual folder holds leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip from
https://www.cityscapes-dataset.com/downloads/ (an account is needed). The training split is
held on the accelerator: 25 GB at full resolution (`--config.data.downscale=2`: 6.2 GB, crops
then 344 x 344 to keep their share of the image). The DRN-D-22 reference starts from
ImageNet weights; nothing here downloads weights, so this trains from scratch.
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "cityscapes"
  config.strategies = "disal,random"
  config.model.name = "drn_d_22_seg"
  config.model.width = 16  # the reference DRN-D-22
  config.train.optimizer = "adam"
  config.train.learning_rate = 5e-4
  config.train.weight_decay = 0.0
  config.train.epochs = 40
  config.train.batch_size = 4
  config.train.eval_batch_size = 4
  config.train.lr_decay_at = 1.0  # a constant learning rate (the protocol names no schedule)
  config.augment.crop_padding = 0
  config.augment.crop_size = (688, 688)
  config.augment.flip = True
  # Record (and score) the pool at 1/16: 64 x 128 x 19 floats per image, 1.8 GB per buffer.
  config.record.pixel_stride = 16
  config.disal.dynamic_batch_size = 4
  config.disal.target_source = "eval_pass"  # the train branch is classification-only
  config.checkpoint.every_epochs = 5
  return config

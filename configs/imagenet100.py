"""ImageNet100 (the CMC list of 100 synsets) at 224 px: 500 training images per class
(50,000, as the paper's Table 1), ResNet-18 with the ImageNet stem, 200 epochs per cycle.

  python -m disal_jax.main --config=configs/imagenet100.py --workdir=workdirs/imagenet100

Needs imagenet2012 prepared from the manual download:
  python -m disal_jax.data.prepare --dataset=imagenet100 --manual_dir=<archives>
The test split is ImageNet's validation images of those classes (50 per class).
"""

from disal_jax.experiment import base_config


def get_config():
  config = base_config()
  config.data.name = "imagenet100"
  config.data.image_size = 224
  config.data.max_train_per_class = 500
  config.model.stem = "imagenet"
  config.train.eval_batch_size = 256
  config.augment.crop_padding = 16
  return config

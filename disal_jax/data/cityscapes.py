"""Cityscapes semantic segmentation through tfds ('cityscapes/semantic_segmentation').

The archives need a (free) account, so tfds cannot download them: put
`leftImg8bit_trainvaltest.zip` and `gtFine_trainvaltest.zip` from
https://www.cityscapes-dataset.com/downloads/ in a folder and prepare once with
`python -m disal_jax.data.prepare --dataset=cityscapes --manual_dir=<that folder>`.

The pool is the 2,975 fine-annotated training images and the test split is the 500
validation images (the test split's labels are not public). tfds stores the 34 raw label
ids; they map to the 19 evaluation classes (trainIds of cityscapesScripts' labels.py) and
every other id to IGNORE_LABEL. `downscale` > 1 shrinks images (bilinear) and label maps
(nearest) by that factor at load time; full resolution is 1024 x 2048.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from disal_jax.data import cache, tfds_source
from disal_jax.data.dataset import IGNORE_LABEL, Dataset

# (raw label id, train id, name) of the 19 evaluated classes; every other id is ignored.
CLASSES = (
  (7, 0, "road"),
  (8, 1, "sidewalk"),
  (11, 2, "building"),
  (12, 3, "wall"),
  (13, 4, "fence"),
  (17, 5, "pole"),
  (19, 6, "traffic light"),
  (20, 7, "traffic sign"),
  (21, 8, "vegetation"),
  (22, 9, "terrain"),
  (23, 10, "sky"),
  (24, 11, "person"),
  (25, 12, "rider"),
  (26, 13, "car"),
  (27, 14, "truck"),
  (28, 15, "bus"),
  (31, 16, "train"),
  (32, 17, "motorcycle"),
  (33, 18, "bicycle"),
)
CLASS_NAMES = tuple(name for _, _, name in CLASSES)
_NUM_RAW_IDS = 256  # ids are stored as 8-bit PNG values


def train_id_table() -> np.ndarray:
  """(256,) uint8: raw label id -> train id, IGNORE_LABEL for the ids not evaluated."""
  table = np.full(_NUM_RAW_IDS, IGNORE_LABEL, np.uint8)
  for raw, train, _ in CLASSES:
    table[raw] = train
  return table


def decode_split(source, downscale: int) -> tuple[np.ndarray, np.ndarray]:
  """Reads examples {'image_left': (H, W, 3), 'segmentation_label': (H, W, 1)} into
  (N, H/d, W/d, 3) uint8 images and (N, H/d, W/d) uint8 train-id maps."""
  table = train_id_table()
  images, labels = [], []
  for i in range(len(source)):
    example = source[i]
    image = np.asarray(example["image_left"], np.uint8)
    label = table[np.asarray(example["segmentation_label"], np.uint8)[..., 0]]
    if downscale > 1:
      size = (image.shape[1] // downscale, image.shape[0] // downscale)  # PIL: (W, H)
      image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR), np.uint8)
      label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST), np.uint8)
    images.append(image)
    labels.append(label)
  return np.stack(images), np.stack(labels)


def load_cityscapes(*, data_dir: str, manual_dir: str, cache_dir: str, downscale: int) -> Dataset:
  """The prepared tfds Cityscapes as arrays, decoded once, then read from the cache.

  Memory: the training split is 2975 x 1024 x 2048 x 4 bytes (images and label maps) = 25 GB
  at full resolution, 6.2 GB at downscale 2; the trainer holds it on device.
  """
  builder = tfds_source.prepared_builder("cityscapes", data_dir, manual_dir)
  key = cache.key_of("cityscapes", str(builder.data_dir), str(builder.version), downscale)
  cache_file = cache.cache_root(cache_dir) / "arrays" / f"cityscapes-{key}.npz"
  arrays = cache.load_arrays(cache_file)
  if arrays is None:
    train_x, train_y = decode_split(builder.as_data_source(split="train"), downscale)
    test_x, test_y = decode_split(builder.as_data_source(split="validation"), downscale)
    arrays = {
      "train_images": train_x,
      "train_labels": train_y,
      "test_images": test_x,
      "test_labels": test_y,
    }
    cache.save_arrays(cache_file, arrays)
  return Dataset(
    "cityscapes",
    arrays["train_images"],
    arrays["train_labels"],
    arrays["test_images"],
    arrays["test_labels"],
    CLASS_NAMES,
  )

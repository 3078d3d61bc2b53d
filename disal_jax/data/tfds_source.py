"""tensorflow-datasets builders read into arrays, with no TensorFlow at run time.

Datasets are read through `builder.as_data_source` (array_record files, random access with
numpy decoding), decoded once and cached as .npz. Nothing here downloads: a dataset that is
not prepared fails at once with the command that prepares it (`disal_jax.data.prepare`).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
from typing import Callable

import numpy as np

from disal_jax.data import cache, resize
from disal_jax.data.dataset import Dataset, stratified_split
from disal_jax.errors import DatasetNotPreparedError


@dataclasses.dataclass(frozen=True)
class TfdsSpec:
  """How one registry dataset maps onto a tfds builder.

  Attributes:
    tfds_name: the tfds builder name.
    train_split / test_split: tfds split names; test_split '' means "split train+test of the
      builder ourselves" (stratified, config.data.test_fraction).
    drop_class: a predicate on class names; matching classes are dropped (Caltech101's
      background class).
    keep_classes: a file in disal_jax/data listing the class names to keep (ImageNet100).
    manual: the builder needs files downloaded by hand into manual_dir.
    manual_files: which files, and from where (for the error message).
    segmentation: read by its own loader (disal_jax.data.cityscapes), not `load_tfds`.
  """

  tfds_name: str
  train_split: str = "train"
  test_split: str = "test"
  drop_class: Callable[[str], bool] | None = None
  keep_classes: str = ""
  manual: bool = False
  manual_files: str = ""
  segmentation: bool = False


SPECS = {
  "cifar10": TfdsSpec("cifar10"),
  "cifar100": TfdsSpec("cifar100"),
  "svhn": TfdsSpec("svhn_cropped"),
  # docs/method.md: background class dropped, 90/10 split of all remaining images.
  "caltech101": TfdsSpec(
    "caltech101",
    train_split="train+test",
    test_split="",
    drop_class=lambda name: "background" in name.lower(),
  ),
  "imagenet100": TfdsSpec(
    "imagenet2012",
    test_split="validation",
    keep_classes="imagenet100_classes.txt",
    manual=True,
    manual_files="ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from https://image-net.org",
  ),
  "cityscapes": TfdsSpec(
    "cityscapes/semantic_segmentation",
    test_split="validation",
    manual=True,
    segmentation=True,
    manual_files="leftImg8bit_trainvaltest.zip and "
    "gtFine_trainvaltest.zip from "
    "https://www.cityscapes-dataset.com/downloads/",
  ),
}


def prepare_command(name: str, data_dir: str, manual_dir: str) -> str:
  """The `python -m disal_jax.data.prepare` command line that prepares dataset `name`."""
  cmd = f"python -m disal_jax.data.prepare --dataset={name}"
  if data_dir:
    cmd += f" --data_dir={data_dir}"
  if SPECS[name].manual:
    cmd += f" --manual_dir={manual_dir or '<folder with the downloaded archives>'}"
  return cmd


def builder_for(name: str, data_dir: str):
  """The tfds builder of dataset `name` (SPECS) in `data_dir` (tfds's default if empty)."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  return tfds.builder(SPECS[name].tfds_name, data_dir=data_dir or None)


def class_list(filename: str) -> list[str]:
  """The class names listed in the package data file `filename`, one a line; '#' lines
  are comments."""
  text = importlib.resources.files("disal_jax.data").joinpath(filename).read_text()
  return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def _decode_split(
  source, image_size: int, keep_label: np.ndarray | None, max_per_class: int, crop_from: int = 0
) -> tuple[np.ndarray, np.ndarray]:
  """Reads a data source into (N, H, W, C) uint8 images and (N,) original labels."""
  images, labels = [], []
  taken: dict[int, int] = {}
  for i in range(len(source)):
    example = source[i]
    label = int(example["label"])
    if keep_label is not None and not keep_label[label]:
      continue
    if max_per_class and taken.get(label, 0) >= max_per_class:
      continue
    taken[label] = taken.get(label, 0) + 1
    image = np.asarray(example["image"], dtype=np.uint8)
    if image.ndim == 2:
      image = image[..., None]
    if image_size and (crop_from or image.shape[:2] != (image_size, image_size)):
      image = resize.resize_array(image, image_size, crop_from)
    elif image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    images.append(image)
    labels.append(label)
  if not images:
    return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros((0,), np.int64)
  return np.stack(images), np.asarray(labels, np.int64)


def prepared_builder(name: str, data_dir: str, manual_dir: str):
  """The tfds builder of a registry dataset; DatasetNotPreparedError (naming the command that
  prepares it) when its files are not in data_dir."""
  spec = SPECS[name]
  builder = builder_for(name, data_dir)
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
      f"Dataset {name!r} (tfds {spec.tfds_name!r}) is not prepared in "
      f"{builder.data_dir or data_dir or '~/tensorflow_datasets'}. Prepare it once, on a "
      f"machine with network access"
      f"{f' and the manual downloads ({spec.manual_files})' if spec.manual else ''}:\n"
      f"  {prepare_command(name, data_dir, manual_dir)}\n"
      "then set config.data.data_dir to that folder (docs/data.md: 'Preparing the real "
      "datasets')."
    )
  return builder


def load_tfds(
  name: str,
  *,
  data_dir: str,
  manual_dir: str,
  cache_dir: str,
  image_size: int,
  test_fraction: float,
  split_seed: int,
  max_train_per_class: int = 0,
  crop_from: int = 0,
) -> Dataset:
  """Loads a prepared tfds classification dataset as arrays (decoded once, then cached)."""
  spec = SPECS[name]
  builder = prepared_builder(name, data_dir, manual_dir)
  all_names = list(builder.info.features["label"].names)
  keep = np.array([True] * len(all_names))
  if spec.drop_class is not None:
    keep &= np.array([not spec.drop_class(n) for n in all_names])
  if spec.keep_classes:
    wanted = set(class_list(spec.keep_classes))
    keep &= np.array([n in wanted for n in all_names])
  kept_names = [n for n, k in zip(all_names, keep) if k]
  relabel = np.cumsum(keep) - 1  # original label -> contiguous label

  key = cache.key_of(
    name,
    str(builder.data_dir),
    str(builder.version),
    image_size,
    test_fraction,
    split_seed,
    max_train_per_class,
    *([crop_from] if crop_from else []),
  )  # the former key when not cropping
  cache_file = cache.cache_root(cache_dir) / "arrays" / f"{name}-{key}.npz"
  arrays = cache.load_arrays(cache_file)
  if arrays is None:
    train_x, train_y = _decode_split(
      builder.as_data_source(split=spec.train_split),
      image_size,
      keep,
      max_train_per_class,
      crop_from,
    )
    if spec.test_split:
      test_x, test_y = _decode_split(
        builder.as_data_source(split=spec.test_split), image_size, keep, 0, crop_from
      )
    else:
      train_idx, test_idx = stratified_split(train_y, test_fraction, split_seed)
      train_x, train_y, test_x, test_y = (
        train_x[train_idx],
        train_y[train_idx],
        train_x[test_idx],
        train_y[test_idx],
      )
    arrays = {
      "train_images": train_x,
      "train_labels": relabel[train_y].astype(np.int32),
      "test_images": test_x,
      "test_labels": relabel[test_y].astype(np.int32),
    }
    cache.save_arrays(cache_file, arrays)
  return Dataset(
    name,
    arrays["train_images"],
    arrays["train_labels"],
    arrays["test_images"],
    arrays["test_labels"],
    tuple(kept_names),
  )

"""Dataset registry: name -> loader. `load_dataset(config.data)` is the only entry point."""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Callable

import ml_collections
import numpy as np

from disal_jax.data import (
  cache,
  cityscapes,
  digits,
  image_folder,
  long_tail,
  row_store,
  shapes,
  tfds_source,
)
from disal_jax.data.dataset import Dataset, carve_validation, take

# Seeds the validation split apart from the test split (both derive from data.split_seed).
VAL_SPLIT_STREAM = 0x7A1

Loader = Callable[[ml_collections.ConfigDict], Dataset]


def _tfds_loader(name: str, cfg: ml_collections.ConfigDict) -> Dataset:
  return tfds_source.load_tfds(
    name,
    data_dir=cfg.data_dir,
    manual_dir=cfg.manual_dir,
    cache_dir=cfg.cache_dir,
    image_size=cfg.image_size,
    test_fraction=cfg.test_fraction,
    split_seed=cfg.split_seed,
    max_train_per_class=cfg.max_train_per_class,
    crop_from=cfg.crop_from,
  )


_LOADERS: dict[str, Loader] = {
  "digits": lambda cfg: digits.load_digits(cfg.test_fraction, cfg.split_seed),
  "shapes": lambda cfg: shapes.load_shapes(
    cfg.shapes.num_train,
    cfg.shapes.num_test,
    cfg.shapes.size,
    cfg.shapes.max_shapes,
    cfg.split_seed,
  ),
  "image_folder": lambda cfg: image_folder.load_image_folder(
    cfg.data_dir, cfg.image_size, cfg.cache_dir, cfg.crop_from
  ),
  "cityscapes": lambda cfg: cityscapes.load_cityscapes(
    data_dir=cfg.data_dir,
    manual_dir=cfg.manual_dir,
    cache_dir=cfg.cache_dir,
    downscale=cfg.downscale,
  ),
  **{
    name: functools.partial(_tfds_loader, name)
    for name, spec in tfds_source.SPECS.items()
    if not spec.segmentation
  },
}


def names() -> list[str]:
  """The registered dataset names, sorted."""
  return sorted(_LOADERS)


def get_loader(name: str) -> Loader:
  """The loader of dataset `name`; KeyError naming the known ones otherwise."""
  if name not in _LOADERS:
    raise KeyError(f"Unknown dataset {name!r}; known datasets: {names()}")
  return _LOADERS[name]


# data keys that do not change the dataset's arrays (one row store serves them all)
_PLACEMENT_KEYS = ("placement", "device_budget_mb", "cache_dir")


def store_folder(cfg: ml_collections.ConfigDict) -> pathlib.Path:
  """The row store (disal_jax.data.row_store) of the dataset config.data describes.

  Keyed by the data section (the cache folder and placement aside): a dataset changed on
  disk under the same config is not noticed; delete the store folder (or use another
  data.cache_dir) to rebuild it.
  """
  keyed = {k: v for k, v in cfg.to_dict().items() if k not in _PLACEMENT_KEYS}
  key = cache.key_of(json.dumps(keyed, sort_keys=True))
  return cache.cache_root(cfg.cache_dir) / "rows" / f"{cfg.name}-{key}"


def load_dataset(cfg: ml_collections.ConfigDict) -> Dataset:
  """Loads config.data: the named dataset, then the long-tail profile, then the validation
  split (carved from the whole training split, seeded by split_seed), then truncation.

  Unless data.placement is 'device', a row store of the result is opened when there is one
  (nothing decoded, the images memory-mapped), and one is written when the splits stream
  (row_store.streams), so that host memory never holds them again.
  """
  folder = store_folder(cfg) if cfg.placement != "device" else None
  if folder is not None and row_store.exists(folder):
    return row_store.open_store(folder)
  dataset = _load(cfg)
  if folder is not None and row_store.streams(cfg, row_store.split_bytes(dataset)):
    row_store.write(dataset, folder)
    return row_store.open_store(folder)
  return dataset


def _load(cfg: ml_collections.ConfigDict) -> Dataset:
  dataset = get_loader(cfg.name)(cfg)
  # Validation first: from a balanced training set it stays balanced, like the test split
  # a long-tailed set is evaluated on (carved after the tail, the rarest classes would keep a
  # handful of validation images).
  if cfg.val_fraction:
    dataset = carve_validation(dataset, cfg.val_fraction, [cfg.split_seed, VAL_SPLIT_STREAM])
  if cfg.imbalance_ratio:
    dataset = long_tail.make_long_tailed(dataset, cfg.imbalance_ratio)
  if cfg.max_train or cfg.max_test:
    rng = np.random.default_rng(cfg.split_seed)
    dataset = take(
      dataset,
      _subset(rng, dataset.num_train, cfg.max_train),
      _subset(rng, len(dataset.test_labels), cfg.max_test),
    )
  return dataset


def _subset(rng: np.random.Generator, n: int, keep: int) -> np.ndarray | None:
  """A sorted uniform subset of `keep` of `n` rows (image folders are ordered by class)."""
  if not keep or keep >= n:
    return None
  return np.sort(rng.choice(n, keep, replace=False))

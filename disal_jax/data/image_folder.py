"""Users' own data: `root/<split>/<class>/<image>` (train and test splits), any PIL format.

`root` may also be a .tar or .tar.gz archive of that layout; it is extracted once into the
cache. Decoded arrays are cached too, keyed by the folder's file list.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib

import numpy as np
from PIL import Image

from disal_jax.data import cache, resize
from disal_jax.data.dataset import Dataset
from disal_jax.errors import ImageFolderError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")


def _find_root(root: pathlib.Path) -> pathlib.Path:
  """The folder that holds train/ and test/ (archives often wrap them in one more folder)."""
  if all((root / s).is_dir() for s in SPLITS):
    return root
  children = [p for p in root.iterdir() if p.is_dir()]
  if len(children) == 1 and all((children[0] / s).is_dir() for s in SPLITS):
    return children[0]
  raise ImageFolderError(
    f"{root}: expected sub-folders {SPLITS}, each holding one folder per "
    "class (root/<split>/<class>/<image>)"
  )


def list_split(split_dir: pathlib.Path) -> tuple[list[str], list[tuple[str, int]]]:
  """Class names (sorted folder names) and (path, label) pairs in a stable order."""
  classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
  if not classes:
    raise ImageFolderError(f"{split_dir}: no class folders")
  files = []
  for label, name in enumerate(classes):
    members = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not members:
      raise ImageFolderError(
        f"{split_dir / name}: class folder holds no images (suffixes {IMAGE_SUFFIXES})"
      )
    files.extend((str(p), label) for p in members)
  return classes, files


def read_image(path: str, image_size: int, crop_from: int = 0) -> np.ndarray:
  """(H, W, 3) uint8; resized to image_size x image_size when image_size > 0 (stretched, or
  centre-cropped from a shorter side of crop_from: disal_jax.data.resize)."""
  try:
    with Image.open(path) as img:
      img = img.convert("RGB")
      if image_size:
        img = resize.resize(img, image_size, crop_from)
      return np.asarray(img, dtype=np.uint8)
  except (OSError, ValueError) as e:
    raise ImageFolderError(f"{path}: cannot read image ({e})") from e


def read_all(files: list[tuple[str, int]], image_size: int, crop_from: int = 0) -> np.ndarray:
  """(N, H, W, 3) uint8 of the (path, label) pairs' images, read in threads; all one size."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    images = list(pool.map(lambda f: read_image(f[0], image_size, crop_from), files, chunksize=256))
  for (path, _), image in zip(files, images):
    if image.shape != images[0].shape:
      raise ImageFolderError(
        f"{path}: size {image.shape} differs from {images[0].shape} "
        f"({files[0][0]}); set config.data.image_size to resize all images"
      )
  return np.stack(images)


def load_image_folder(root: str, image_size: int, cache_dir: str, crop_from: int = 0) -> Dataset:
  """The Dataset of the image folder (root/<split>/<class>/<image>, or a .tar.gz of it) at
  `image_size` pixels, decoded once, then read from the cache."""
  if not root:
    raise ImageFolderError(
      "config.data.data_dir is empty: set it to the image folder "
      "(root/<split>/<class>/<image>) or a .tar.gz of it"
    )
  path = pathlib.Path(root).expanduser()
  if not path.exists():
    raise ImageFolderError(f"{path}: no such folder or archive (config.data.data_dir)")
  if path.is_file():
    path = cache.extract_archive(str(path), cache_dir)
  path = _find_root(path)
  listing = {s: list_split(path / s) for s in SPLITS}
  (train_classes, train_files), (test_classes, test_files) = listing["train"], listing["test"]
  if train_classes != test_classes:
    only_train = sorted(set(train_classes) - set(test_classes))
    only_test = sorted(set(test_classes) - set(train_classes))
    raise ImageFolderError(
      f"{path}: train and test class folders differ (only in train: "
      f"{only_train}, only in test: {only_test})"
    )
  key = cache.key_of(
    str(path.resolve()), image_size, train_files, test_files, *([crop_from] if crop_from else [])
  )  # the former key when not cropping
  cache_file = cache.cache_root(cache_dir) / "arrays" / f"image_folder-{key}.npz"
  arrays = cache.load_arrays(cache_file)
  if arrays is None:
    arrays = {
      f"{s}_images": read_all(f, image_size, crop_from)
      for s, f in (("train", train_files), ("test", test_files))
    }
    arrays.update(
      {
        f"{s}_labels": np.array([label for _, label in f], np.int32)
        for s, f in (("train", train_files), ("test", test_files))
      }
    )
    cache.save_arrays(cache_file, arrays)
  return Dataset(
    "image_folder",
    arrays["train_images"],
    arrays["train_labels"],
    arrays["test_images"],
    arrays["test_labels"],
    tuple(train_classes),
  )

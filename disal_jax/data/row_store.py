"""A dataset's splits as row files in the cache: written once, then read row by row.

A store is a folder of uncompressed .npy files (one per split's images and labels) and a
`meta.json` (name, class names, the training images' channel statistics). Opening it reads
the labels, the metadata and the files' headers; images are memory-mapped (shape and dtype
only) and streaming reads them through `FileRows`, which reads rows with `os.pread` instead
of mapping them, so host memory holds the rows being read and never the split.

A store is keyed by the data config (disal_jax.data.registry.store_folder): a run with the same
data section opens it without decoding anything. Writes go to a temporary folder renamed
into place, so a reader never sees half a store.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import threading
import weakref
from typing import Optional

import ml_collections
import numpy as np

from disal_jax.data.dataset import Dataset

META = "meta.json"
SPLITS = ("train", "val", "test")
_MB = 2**20


def split_bytes(dataset: Dataset) -> int:
  """Bytes of every split's images and labels: what placement 'device' puts on each device."""
  arrays = [
    dataset.train_images,
    dataset.train_labels,
    dataset.test_images,
    dataset.test_labels,
    dataset.val_images,
    dataset.val_labels,
  ]
  return sum(int(a.nbytes) for a in arrays if a is not None)


def streams(data_config: ml_collections.ConfigDict, nbytes: int) -> bool:
  """Whether splits of `nbytes` (split_bytes) stream from a row store under `data_config`
  (its placement: 'stream', or 'auto' past device_budget_mb)."""
  if data_config.placement == "auto":
    return nbytes > data_config.device_budget_mb * _MB
  return data_config.placement == "stream"


def array_files(split: str) -> tuple[str, str]:
  """The (images, labels) file names of one split in a store."""
  return f"{split}_images.npy", f"{split}_labels.npy"


def write_meta(
  folder: pathlib.Path, name: str, class_names, splits: list[str], mean: np.ndarray, std: np.ndarray
) -> None:
  """A store's meta.json: what opening it needs besides the array files."""
  (folder / META).write_text(
    json.dumps(
      {
        "name": name,
        "class_names": list(class_names),
        "splits": list(splits),
        "channel_mean": np.asarray(mean).tolist(),
        "channel_std": np.asarray(std).tolist(),
      }
    )
  )


def exists(folder: pathlib.Path) -> bool:
  """Whether `folder` holds a complete row store (its metadata file is written last)."""
  return (folder / META).exists()


def write(dataset: Dataset, folder: pathlib.Path) -> None:
  """Writes `dataset` as a store at `folder` (nothing if one is already there)."""
  if exists(folder):
    return
  folder.parent.mkdir(parents=True, exist_ok=True)
  tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}-{threading.get_ident()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir()
  splits = []
  for split in SPLITS:
    images = getattr(dataset, f"{split}_images")
    if images is None:
      continue
    splits.append(split)
    image_file, label_file = array_files(split)
    np.save(tmp / image_file, np.ascontiguousarray(images))
    np.save(tmp / label_file, np.ascontiguousarray(getattr(dataset, f"{split}_labels")))
  write_meta(tmp, dataset.name, dataset.class_names, splits, *dataset.channel_stats())
  try:
    os.rename(tmp, folder)
  except OSError:  # another process wrote the same store first
    if not exists(folder):
      raise
    shutil.rmtree(tmp, ignore_errors=True)


def open_store(folder: pathlib.Path) -> Dataset:
  """The store at `folder` as a Dataset: labels in memory, images memory-mapped (np.memmap;
  read them with `FileRows`)."""
  meta = json.loads((folder / META).read_text())
  arrays = {}
  for split in meta["splits"]:
    image_file, label_file = array_files(split)
    arrays[f"{split}_images"] = np.load(folder / image_file, mmap_mode="r")
    labels = np.load(folder / label_file, mmap_mode="r")
    # class labels are small: in memory; label maps (segmentation) stay mapped like images
    arrays[f"{split}_labels"] = np.asarray(labels) if labels.ndim == 1 else labels
  stats = (
    np.asarray(meta["channel_mean"], np.float32),
    np.asarray(meta["channel_std"], np.float32),
  )
  return Dataset(
    name=meta["name"], class_names=tuple(meta["class_names"]), channel_mean_std=stats, **arrays
  )


class FileRows:
  """Rows of a .npy file (C order, not pickled), read with os.pread: the process maps none
  of the file, so its resident memory holds what it has read and no more.

  Attributes:
    shape, dtype: the array's.
    rows_read: how many rows this reader has returned (a share test counts them).
  """

  def __init__(self, path: str | os.PathLike):
    self.path = str(path)
    with open(self.path, "rb") as f:
      version = np.lib.format.read_magic(f)
      read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
      )
      shape, fortran, dtype = read_header(f)
      self._offset = f.tell()
    if fortran or dtype.hasobject:
      raise ValueError(f"{self.path}: a row store file must be C-ordered plain data")
    self.shape, self.dtype = tuple(shape), np.dtype(dtype)
    self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
    self._fd: Optional[int] = None
    self.rows_read = 0

  def __len__(self) -> int:
    return self.shape[0]

  def read(self, rows: np.ndarray) -> np.ndarray:
    """(len(rows), *shape[1:]) of the given rows, in that order (repeats allowed)."""
    if self._fd is None:
      self._fd = os.open(self.path, os.O_RDONLY)
      weakref.finalize(self, os.close, self._fd)
    out = np.empty((len(rows),) + self.shape[1:], self.dtype)
    size = self._row_bytes
    flat = out.reshape(len(rows), size // self.dtype.itemsize).view(np.uint8)
    i = 0
    while i < len(rows):  # runs of consecutive rows are one read
      j = i + 1
      while j < len(rows) and rows[j] == rows[j - 1] + 1:
        j += 1
      data = os.pread(self._fd, size * (j - i), self._offset + int(rows[i]) * size)
      flat[i:j] = np.frombuffer(data, np.uint8).reshape(j - i, size)
      i = j
    self.rows_read += len(rows)
    return out

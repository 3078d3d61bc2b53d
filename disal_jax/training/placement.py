"""Where a split's rows live during a run: on every device, or streamed from the host.

'device': the whole split is put on every device once (steps.DeviceData, replicated); a step
  reads its rows by index and nothing crosses from the host during training. The fastest
  placement while the splits fit beside the model.
'stream': the split stays on the host (a row store in the cache, read row by row); before
  each step the host reads the rows the step will touch into a window (steps.DeviceData with
  `rows`) split over the devices, each process reading only its own devices' share
  (jax.make_array_from_callback calls back for addressable shards only). The next window is
  read on a host thread while the device runs the current step.
'auto': 'device' while the splits' bytes fit `data.device_budget_mb`, else 'stream'
  (row_store.streams decides).

Both placements feed a step the same rows under the same indices, so a run makes the same
selections and metrics in either (tested on the offline default).
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Iterable, Iterator, Optional, TypeVar, Union

import jax
import numpy as np
from jax.sharding import Mesh

from disal_jax.data.row_store import FileRows
from disal_jax.training import sharding
from disal_jax.training.steps import DeviceData

T = TypeVar("T")
R = TypeVar("R")


class ArrayRows:
  """Rows of an array already in host memory (a dataset not stored as row files)."""

  def __init__(self, array: np.ndarray):
    self.array = array
    self.shape, self.dtype = array.shape, array.dtype
    self.rows_read = 0

  def __len__(self) -> int:
    return self.shape[0]

  def read(self, rows: np.ndarray) -> np.ndarray:
    """The array's `rows`, (len(rows), ...) as stored."""
    self.rows_read += len(rows)
    return self.array[rows]


def row_reader(array: np.ndarray) -> Union[FileRows, ArrayRows]:
  """A reader of `array`'s rows: from its file when it is a memory-mapped .npy (a row
  store's), else from memory."""
  filename = getattr(array, "filename", None)
  if isinstance(array, np.memmap) and filename:
    return FileRows(filename)
  return ArrayRows(np.asarray(array))


class StreamedSplit:
  """A split read from the host: `window(rows)` puts the rows a step reads on the devices.

  Attributes:
    images, labels: row readers (FileRows or ArrayRows).
    mesh: the devices a window is split over.
  """

  def __init__(self, images, labels, mesh: Mesh):
    self.images, self.labels, self.mesh = images, labels, mesh
    self.rows_windowed = 0  # rows of every window, all processes' shares together

  @property
  def num_rows(self) -> int:
    """The number of rows in the split."""
    return len(self.labels)

  @property
  def rows_read(self) -> int:
    """Image rows this process has read (its own devices' shares only)."""
    return self.images.rows_read

  def window_rows(self, rows: np.ndarray) -> np.ndarray:
    """(W,) int32 sorted: `rows` (any shape), padded by repeating the last to a multiple of
    the devices so that the window splits evenly."""
    rows = np.sort(np.asarray(rows, np.int32).ravel())
    short = -len(rows) % self.mesh.size
    return np.concatenate([rows, np.full(short, rows[-1], np.int32)]) if short else rows

  def window(self, rows) -> DeviceData:
    """DeviceData holding split rows `rows` (any shape; the indices a step will read)."""
    rows = self.window_rows(rows)
    self.rows_windowed += len(rows)
    split = sharding.along_data(self.mesh)

    def put(reader):
      return jax.make_array_from_callback(
        (len(rows),) + tuple(reader.shape[1:]), split, lambda index: reader.read(rows[index[0]])
      )

    return DeviceData(
      put(self.images), put(self.labels), sharding.put_host(rows, sharding.replicated(self.mesh))
    )

  def abstract_window(self, num_rows: int) -> DeviceData:
    """The shapes, dtypes and shardings of a window of `num_rows` rows (to compile ahead)."""
    num_rows += -num_rows % self.mesh.size
    split, replicated = sharding.along_data(self.mesh), sharding.replicated(self.mesh)

    def spec(reader):
      return jax.ShapeDtypeStruct(
        (num_rows,) + tuple(reader.shape[1:]), reader.dtype, sharding=split
      )

    return DeviceData(
      spec(self.images),
      spec(self.labels),
      jax.ShapeDtypeStruct((num_rows,), np.int32, sharding=replicated),
    )


SplitData = Union[DeviceData, StreamedSplit]


def place_split(
  images: Optional[np.ndarray], labels: Optional[np.ndarray], mesh: Mesh, stream: bool
) -> Optional[SplitData]:
  """One split, resident on every device or streamed; None for an absent split."""
  if labels is None:
    return None
  if stream:
    return StreamedSplit(row_reader(images), row_reader(labels), mesh)
  return sharding.put_replicated(DeviceData(np.asarray(images), np.asarray(labels)), mesh)


def abstract_window(data: SplitData, num_rows: int) -> DeviceData:
  """What a compiled function over `num_rows` rows of `data` receives (shapes only when
  streamed; the resident arrays themselves otherwise)."""
  if isinstance(data, StreamedSplit):
    return data.abstract_window(num_rows)
  return data


def prefetched(make: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
  """make(item) for each item, the next one made on a host thread while the caller uses the
  current one (a window is read and put while the device runs the previous step).

  `make` reads and transfers only; it runs no jitted program: programs with collectives in
  flight from two threads at once risk XLA:CPU's collective deadlock (strategies/base.py).
  """
  items = iter(items)
  with concurrent.futures.ThreadPoolExecutor(1) as pool:
    try:
      ahead = pool.submit(make, next(items))
    except StopIteration:
      return
    for item in items:
      current, ahead = ahead.result(), pool.submit(make, item)
      yield current
    yield ahead.result()

"""Streaming placement: row files read like numpy, windows hold the rows a step reads, a row
store opens without the loader, and whole runs select and score the same in both placements
with nothing compiled again after the first cycle and no implicit transfer in the loop."""

import dataclasses

import jax
import numpy as np
import pytest

from disal_jax import faults, loop
from disal_jax.config import ConfigError
from disal_jax.data import registry, row_store
from disal_jax.training import placement, sharding
from disal_jax.training.trainer import Trainer
from tests.helpers import CompileCounter, tiny_config


def _images(n=37, shape=(3, 2, 3)):
  return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def test_file_rows_read_what_numpy_indexing_reads(tmp_path):
  images = _images()
  np.save(tmp_path / "x.npy", images)
  reader = row_store.FileRows(tmp_path / "x.npy")
  assert reader.shape == images.shape and reader.dtype == images.dtype
  for rows in ([0], [36], [5, 6, 7, 20, 20, 3, 4], list(range(37)), []):
    rows = np.asarray(rows, np.int64)
    np.testing.assert_array_equal(reader.read(rows), images[rows])
  assert reader.rows_read == 1 + 1 + 7 + 37


def test_a_window_holds_the_rows_a_step_reads():
  images, labels = _images(), np.arange(37, dtype=np.int32) * 3
  mesh = sharding.make_mesh()
  streamed = placement.StreamedSplit(placement.ArrayRows(images), placement.ArrayRows(labels), mesh)
  index = np.asarray([30, 2, 2, 17, 0, 36], np.int32)
  pool_rows = np.asarray([5, 30, 11], np.int32)
  window = streamed.window(np.concatenate([index, pool_rows]))
  assert window.images.shape[0] == 9  # only the rows read, repeats kept
  gathered = jax.jit(lambda data, i: (data.images_at(i), data.labels_at(i)))
  for rows in (index, pool_rows):
    got_images, got_labels = gathered(window, jax.device_put(rows))
    np.testing.assert_array_equal(np.asarray(got_images), images[rows])
    np.testing.assert_array_equal(np.asarray(got_labels), labels[rows])
  resident = placement.place_split(images, labels, mesh, stream=False)
  assert resident.window(index) is resident and resident.rows is None


def test_a_row_store_opens_without_decoding_again(tmp_path, monkeypatch):
  config = tiny_config(
    **{"data.placement": "stream", "data.cache_dir": str(tmp_path), "data.val_fraction": 0.1}
  )
  loaded = registry.load_dataset(config.data)
  assert isinstance(loaded.train_images, np.memmap)  # streamed: the store, mapped
  folder = registry.store_folder(config.data)
  assert row_store.exists(folder)

  def no_loader(cfg):
    raise AssertionError("the store should have been opened")

  monkeypatch.setitem(registry._LOADERS, "digits", no_loader)
  again = registry.load_dataset(config.data)
  for field in (
    "train_images",
    "train_labels",
    "val_images",
    "val_labels",
    "test_images",
    "test_labels",
  ):
    np.testing.assert_array_equal(getattr(again, field), getattr(loaded, field))
  assert again.class_names == loaded.class_names
  monkeypatch.undo()
  plain = registry.load_dataset(
    tiny_config(**{"data.val_fraction": 0.1, "data.placement": "device"}).data
  )
  for a, b in zip(
    again.channel_stats(), dataclasses.replace(plain, channel_mean_std=None).channel_stats()
  ):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(again.train_images), plain.train_images)


def test_auto_streams_past_the_device_budget():
  config = tiny_config()
  assert not row_store.streams(config.data, 10 * 2**20)
  config.data.device_budget_mb = 1
  assert row_store.streams(config.data, 10 * 2**20)
  config.data.placement = "device"
  assert not row_store.streams(config.data, 10 * 2**20)
  config.data.placement = "disk"
  with pytest.raises(ConfigError, match="data.placement"):
    loop.run_experiment(config, "/nonexistent")


def _run(tmp_path, placement_name, strategies, **overrides):
  config = tiny_config(
    **{
      "strategies": strategies,
      "data.placement": placement_name,
      "data.cache_dir": str(tmp_path / "cache"),
      **overrides,
    }
  )
  return loop.run_experiment(config, str(tmp_path / placement_name))


@pytest.mark.slow
def test_streamed_runs_compile_once_transfer_explicitly_and_match_device(tmp_path, monkeypatch):
  """Three cycles of a strategy of each family, streamed: nothing compiles from a strategy's
  cycle 1 on; a cycle's training (steps, record passes, evaluation) moves data between host
  and device only explicitly (device_put, device_get, a window's callback); and the
  selections and metrics are those of device placement."""
  counter = CompileCounter()
  train_cycle, run_strategy = Trainer.train_cycle, loop.run_strategy

  def guarded(*args, **kwargs):
    with jax.transfer_guard("disallow"):
      return train_cycle(*args, **kwargs)

  monkeypatch.setattr(Trainer, "train_cycle", guarded)
  cycle_one, ended = {}, {}  # compilations so far when a strategy's cycle 1 starts, it ends
  point = faults.point

  def mark(name):
    kind, tag, *place = name.split(":")
    if kind == "train" and place == ["1", "0", "0"]:
      cycle_one[tag.split()[0]] = counter.count
    point(name)

  def run_and_mark(config, dataset, name, *args):
    rows = run_strategy(config, dataset, name, *args)
    ended[name] = counter.count
    return rows

  monkeypatch.setattr(faults, "point", mark)
  monkeypatch.setattr(loop, "run_strategy", run_and_mark)
  strategies = "random,disal,tracincp_last,mc_dropout,badge,typiclust,vaal"
  with counter:
    results = _run(tmp_path, "stream", strategies, **{"al.final_fraction": 0.2})
  for name in strategies.split(","):
    assert len(results[name]) == 3, name
    compiled = ended[name] - cycle_one[name]
    assert compiled == 0, f"{name}: {compiled} compilations in cycles 1-2"
  monkeypatch.undo()
  # a hook reading pool rows (DISAL), networks trained on windows (VAAL), gradient
  # embeddings and k-means++ (BADGE)
  device = _run(tmp_path, "device", "disal,vaal,badge", **{"al.final_fraction": 0.2})
  for name, rows in device.items():
    for a, b in zip(rows, results[name], strict=True):
      assert a.selected == b.selected, name
      np.testing.assert_allclose(b.test_accuracy, a.test_accuracy, atol=1e-6)
      np.testing.assert_allclose(b.test_loss, a.test_loss, rtol=1e-4)

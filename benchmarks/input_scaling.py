"""Streaming placement at two dataset sizes: device bytes, host memory and train throughput.

  python -m benchmarks.input_scaling [--num_train=8192] [--width=16] [--rounds=2] [--out=DIR]

A synthetic image set (uniform random 32x32x3 uint8 images, 10 classes) of N = --num_train
and 4N training images is written once as a row store (disal_jax.data.row_store) in a
temporary cache, in chunks (this process never holds it). Each (placement, size) then runs in
its own child process, so that its peak RSS is its own: it opens the store as a run would
(config.data.placement 'device' or 'stream'), trains a CIFAR ResNet-18 (--width) for
--epochs epochs on --labeled images (batch 128) and reports
- device bytes held after the cycle: the live arrays' bytes on one device (what stays put:
  the model, optimiser, and under 'device' the whole split);
- host peak RSS (ru_maxrss, MiB);
- train images/s (the fastest epoch; the first compiles).
--rounds repeats every child in turn and keeps each one's best throughput and smallest
figures otherwise. Prints a table and, last, one line
`device_bytes_ratio=R host_rss_ratio=H` (streaming, 4N over N); the goals are R <= 1.1,
H <= 1.5 and streaming throughput >= 0.9x device-resident. Writes <out>/input_scaling.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

import numpy as np
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings
from disal_jax.experiment import base_config

_NUM_TRAIN = flags.DEFINE_integer("num_train", 8192, "N: training images of the small set.")
_LABELED = flags.DEFINE_integer("labeled", 1280, "Labeled images trained on each epoch.")
_EPOCHS = flags.DEFINE_integer("epochs", 3, "Epochs per child (the first compiles).")
_WIDTH = flags.DEFINE_integer("width", 16, "ResNet-18 width.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds over the children; each keeps its best.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write input_scaling.json.")
_CHILD = flags.DEFINE_string("child", "", "Internal: 'placement,num_train,cache_dir'.")

IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
NUM_TEST = 512
_CHUNK = 4096  # images written per chunk


def _config(num_train: int, cache_dir: str, placement: str):
  config = base_config()
  config.data.name = "digits"  # the store stands in for it: opened, never decoded
  config.data.max_train = num_train  # keys the store apart per size
  config.data.cache_dir = cache_dir
  config.data.placement = placement
  config.model.width = _WIDTH.value
  config.train.epochs = _EPOCHS.value
  config.train.batch_size = 128
  return config


def write_synthetic_store(num_train: int, cache_dir: str) -> None:
  """The synthetic set as the row store `_config(num_train, ...)` opens, in chunks."""
  from disal_jax.data import registry, row_store

  folder = registry.store_folder(_config(num_train, cache_dir, "stream").data)
  if row_store.exists(folder):
    return
  tmp = folder.with_name(folder.name + ".tmp")
  tmp.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(num_train)
  sums = np.zeros(3)
  squares = np.zeros(3)
  for split, count in (("train", num_train), ("test", NUM_TEST)):
    image_file, label_file = row_store.array_files(split)
    images = np.lib.format.open_memmap(tmp / image_file, "w+", np.uint8, (count,) + IMAGE_SHAPE)
    for start in range(0, count, _CHUNK):
      chunk = rng.integers(0, 256, (min(_CHUNK, count - start),) + IMAGE_SHAPE, np.uint8)
      images[start : start + len(chunk)] = chunk
      if split == "train":
        pixels = chunk.reshape(-1, 3) / 255.0
        sums += pixels.sum(0)
        squares += (pixels**2).sum(0)
    images.flush()
    del images
    np.save(tmp / label_file, rng.integers(0, NUM_CLASSES, count).astype(np.int32))
  n = num_train * IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
  mean = sums / n
  std = np.sqrt(squares / n - mean**2)
  row_store.write_meta(
    tmp, "synthetic", [str(c) for c in range(NUM_CLASSES)], ["train", "test"], mean, std
  )
  tmp.rename(folder)


def _child(placement: str, num_train: int, cache_dir: str) -> dict:
  import jax

  from disal_jax.data import registry, row_store
  from disal_jax.models.registry import build_model
  from disal_jax.training import sharding
  from disal_jax.training.trainer import Trainer

  config = _config(num_train, cache_dir, placement)
  # as load_dataset opens a store; 'device' then reads it into memory, 'stream' row by row
  dataset = row_store.open_store(registry.store_folder(config.data))
  mesh = sharding.make_mesh()
  trainer = Trainer(config, build_model(config.model, dataset.num_classes), dataset, mesh)
  assert trainer.streamed == (placement == "stream")
  labeled = np.arange(_LABELED.value)
  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    labeled,
    np.arange(_LABELED.value, num_train),
    (0, 0),
    cycle=0,
  )
  jax.block_until_ready(result.state)
  device = jax.devices()[0]
  held = sum(
    shard.data.nbytes
    for array in jax.live_arrays()
    for shard in array.addressable_shards
    if shard.device == device
  )
  return {
    "device_bytes": int(held),
    "host_peak_rss_mib": common.peak_rss_mib(),
    "train_images_per_second": max(e["images_per_second"] for e in result.epochs[1:]),
  }


def main(argv):
  del argv
  platform_settings.apply()
  if _CHILD.value:
    placement, num_train, cache_dir = _CHILD.value.split(",")
    print(json.dumps(_child(placement, int(num_train), cache_dir)))
    return
  sizes = [_NUM_TRAIN.value, 4 * _NUM_TRAIN.value]
  runs = [(placement, n) for n in sizes for placement in ("device", "stream")]
  best: dict[tuple[str, int], dict] = {}
  with tempfile.TemporaryDirectory(prefix="disal_jax_input_scaling_") as cache_dir:
    for n in sizes:
      write_synthetic_store(n, cache_dir)
    for _ in range(_ROUNDS.value):
      for placement, n in runs:
        out = subprocess.run(
          [
            sys.executable,
            "-m",
            "benchmarks.input_scaling",
            f"--width={_WIDTH.value}",
            f"--labeled={_LABELED.value}",
            f"--epochs={_EPOCHS.value}",
            f"--child={placement},{n},{cache_dir}",
          ],
          capture_output=True,
          text=True,
          check=False,
        )
        if out.returncode:
          raise RuntimeError(f"child {placement} {n} failed:\n{out.stderr[-3000:]}")
        figures = json.loads(out.stdout.strip().splitlines()[-1])
        if (placement, n) in best:
          old = best[(placement, n)]
          figures = {
            "device_bytes": min(old["device_bytes"], figures["device_bytes"]),
            "host_peak_rss_mib": min(old["host_peak_rss_mib"], figures["host_peak_rss_mib"]),
            "train_images_per_second": max(
              old["train_images_per_second"], figures["train_images_per_second"]
            ),
          }
        best[(placement, n)] = figures
  split_mib = {n: (n * int(np.prod(IMAGE_SHAPE)) + 4 * n) / 2**20 for n in sizes}
  rows = []
  for placement, n in runs:
    f = best[(placement, n)]
    rows.append(
      [
        placement,
        n,
        round(split_mib[n], 1),
        round(f["device_bytes"] / 2**20, 1),
        int(round(f["host_peak_rss_mib"])),
        round(f["train_images_per_second"], 1),
      ]
    )
  print(
    common.table(
      ["placement", "N", "split MiB", "device MiB held", "host peak RSS MiB", "train img/s"], rows
    )
  )
  small, large = best[("stream", sizes[0])], best[("stream", sizes[1])]
  ratio_device = large["device_bytes"] / small["device_bytes"]
  ratio_rss = large["host_peak_rss_mib"] / small["host_peak_rss_mib"]
  throughput = {
    n: best[("stream", n)]["train_images_per_second"]
    / best[("device", n)]["train_images_per_second"]
    for n in sizes
  }
  print(
    "streaming / device-resident train throughput: "
    + ", ".join(f"N={n}: {r:.2f}x" for n, r in throughput.items())
  )
  common.write_json(
    "input_scaling",
    {
      "figures": {f"{p} N={n}": best[(p, n)] for p, n in runs},
      "device_bytes_ratio": ratio_device,
      "host_rss_ratio": ratio_rss,
      "stream_over_device_throughput": {str(n): r for n, r in throughput.items()},
    },
    _OUT.value,
  )
  print(f"device_bytes_ratio={ratio_device:.3f} host_rss_ratio={ratio_rss:.3f}")


if __name__ == "__main__":
  app.run(main)

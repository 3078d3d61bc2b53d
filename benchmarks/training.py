"""Training throughput: the jitted train step with and without the pool record and DISAL's
dynamic loss, against an equivalent PyTorch eager train step.

  python -m benchmarks.training [--labeled=2560] [--pool=5000] [--width=64] [--out=DIR]

Same images (real CIFAR-10 from ../shared/data), same batch (128), same model shape, same
thread count. JAX figures come from the second of two epochs (the first compiles). Prints a
table; writes <out>/training.json.
"""

from __future__ import annotations

import os

from absl import app, flags
import jax
import numpy as np

from benchmarks import common
from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.strategies import disal
from disal_jax.training import sharding
from disal_jax.training.trainer import Trainer

_LABELED = flags.DEFINE_integer("labeled", 2560, "Labeled images per epoch.")
_POOL = flags.DEFINE_integer("pool", 5000, "Pool images recorded each epoch.")
_WIDTH = flags.DEFINE_integer("width", 64, "ResNet-18 width.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Training batch size.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch eager step.")
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write training.json.")


def _epoch_figures(config, dataset, mesh, labeled, pool, level, hook):
  trainer = Trainer(config, build_model(config.model, dataset.num_classes), dataset, mesh,
                    hook=hook)
  result = trainer.train_cycle(trainer.init_state(jax.random.key(0)), labeled, pool, (0, 0),
                               record_level=level, cycle=0)
  last = result.epochs[-1]
  record_per_epoch = result.record_seconds / len(result.epochs)
  train_per_epoch = len(labeled) / last["images_per_second"]
  return {"train_images_per_second": last["images_per_second"],
          "record_seconds_per_epoch": record_per_epoch,
          "epoch_images_per_second": len(labeled) / (train_per_epoch + record_per_epoch)}


def main(argv):
  del argv
  config = common.cifar_config(_LABELED.value + _POOL.value, _WIDTH.value, _CACHE.value)
  config.train.epochs = 2
  config.train.batch_size = _BATCH.value
  config.disal.dynamic_batch_size = _BATCH.value
  config.disal.dynamic_warmup_epochs = 1  # the timed second epoch runs the dynamic loss
  dataset = load_dataset(config.data)
  mesh = sharding.make_mesh()
  labeled = np.arange(_LABELED.value)
  pool = np.arange(_LABELED.value, _LABELED.value + _POOL.value)
  figures = {
      "plain": _epoch_figures(config, dataset, mesh, labeled, pool, "none", None),
      "plain+record": _epoch_figures(config, dataset, mesh, labeled, pool, "mean", None),
      "disal (record + dynamic loss)": _epoch_figures(config, dataset, mesh, labeled, pool,
                                                      "mean", disal.make_hook(config)),
  }
  rows = [[name, f["train_images_per_second"], f["record_seconds_per_epoch"],
           f["epoch_images_per_second"]] for name, f in figures.items()]
  if _TORCH.value:
    import torch  # pylint: disable=import-outside-toplevel
    from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel
    torch.set_num_threads(os.cpu_count() or 1)
    mean, std = dataset.channel_stats()
    x = (dataset.train_images[labeled].astype(np.float32) / 255.0 - mean) / std
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(dataset.train_labels[labeled].astype(np.int64))
    model = torch_reference.ResNet18(dataset.num_classes, _WIDTH.value)
    torch_reference.train_steps(model, images[:2 * _BATCH.value], labels[:2 * _BATCH.value],
                                _BATCH.value)
    seconds = common.timed(lambda: torch_reference.train_steps(model, images, labels,
                                                               _BATCH.value))
    steps = len(labeled) // _BATCH.value
    figures["torch eager"] = {"train_images_per_second": steps * _BATCH.value / seconds}
    rows.append(["torch eager", steps * _BATCH.value / seconds, 0.0, float("nan")])
  plain = figures["plain"]["train_images_per_second"]
  print(f"\nTraining on {_LABELED.value} CIFAR-10 images (batch {_BATCH.value}), recording "
        f"{_POOL.value}, ResNet-18 width {_WIDTH.value}, {jax.device_count()} "
        f"{jax.default_backend()} device(s), {os.cpu_count()} cores\n")
  print(common.table(["train step", "train img/s", "record s/epoch", "epoch img/s (incl. record)"],
                     rows))
  print(f"\nDISAL's train step runs at {figures['disal (record + dynamic loss)']['train_images_per_second'] / plain:.2f}x "
        "the plain step's speed (its dynamic loss adds a forward/backward of a pool batch).")
  path = common.write_json("training", {"labeled": _LABELED.value, "pool": _POOL.value,
                                        "width": _WIDTH.value, "figures": figures}, _OUT.value)
  print(f"wrote {path}")


if __name__ == "__main__":
  app.run(main)

"""Training throughput: the plain train step against DISAL's branch steps, and against an
equivalent PyTorch eager train step.

  python -m benchmarks.training [--labeled=2560] [--pool=5000] [--width=64] [--rounds=2]

Same images (real CIFAR-10 from ../shared/data, or --data_dir), same labeled batch (128),
same model, same thread count. DISAL's rows run its branch in every epoch (the default
config runs it in the second half of a cycle only): its default (a separate pool batch of
disal.dynamic_batch_size = 32 beside the labeled batch, train-branch target), a pool batch
of 16, and the joint branch (one forward over both). Each row trains 3 epochs (the first
compiles) and keeps its fastest epoch; --rounds repeats the rows in turn and keeps each
row's best, so the ratios compare rows measured side by side. Prints a table; writes
<out>/training.json.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings
from disal_jax.data.registry import load_dataset
from disal_jax.strategies import disal
from disal_jax.training import sharding

_LABELED = flags.DEFINE_integer("labeled", 2560, "Labeled images per epoch.")
_POOL = flags.DEFINE_integer("pool", 5000, "Pool images recorded each epoch.")
_WIDTH = flags.DEFINE_integer("width", 64, "ResNet-18 width.")
_BATCH = flags.DEFINE_integer("batch_size", 128, "Training batch size.")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch eager step.")
_ROUNDS = flags.DEFINE_integer("rounds", 2, "Rounds over the rows; each row keeps its best.")
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write training.json.")


def _images_per_second(config, dataset, mesh, labeled, pool, hook) -> float:
  _, result = common.train_cycle(config, dataset, mesh, labeled, pool, hook)
  return common.steady_images_per_second(result)


def main(argv):
  del argv
  config = common.cifar_config(_LABELED.value + _POOL.value, _WIDTH.value, _CACHE.value)
  config.train.epochs = 3
  config.train.batch_size = _BATCH.value
  dataset = load_dataset(config.data)
  mesh = sharding.make_mesh()
  labeled = np.arange(_LABELED.value)
  pool = np.arange(_LABELED.value, _LABELED.value + _POOL.value)
  pool_batch = config.disal.dynamic_batch_size
  variants = {
    "plain": (config, None),
    f"disal branch, pool batch {pool_batch} (default)": common.disal_branch_config(config),
    f"disal branch, pool batch {pool_batch // 2}": common.disal_branch_config(
      config, dynamic_batch_size=pool_batch // 2
    ),
    f"disal joint branch, pool batch {pool_batch}": common.disal_branch_config(
      config, branch="joint"
    ),
  }
  variants = {
    name: v if isinstance(v, tuple) else (v, disal.make_hook(v)) for name, v in variants.items()
  }
  best: dict[str, float] = {}
  for _ in range(_ROUNDS.value):
    for name, (cfg, hook) in variants.items():
      rate = _images_per_second(cfg, dataset, mesh, labeled, pool, hook)
      best[name] = max(best.get(name, 0.0), rate)
  plain = best["plain"]
  figures = {
    name: {"train_images_per_second": rate, "step_time_vs_plain": plain / rate}
    for name, rate in best.items()
  }
  rows = [
    [name, f["train_images_per_second"], f["step_time_vs_plain"]] for name, f in figures.items()
  ]
  if _TORCH.value:
    import torch  # pylint: disable=import-outside-toplevel

    from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(os.cpu_count() or 1)
    mean, std = dataset.channel_stats()
    x = (dataset.train_images[labeled].astype(np.float32) / 255.0 - mean) / std
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(dataset.train_labels[labeled].astype(np.int64))
    model = torch_reference.ResNet18(dataset.num_classes, _WIDTH.value)
    torch_reference.train_steps(
      model, images[: 2 * _BATCH.value], labels[: 2 * _BATCH.value], _BATCH.value
    )
    seconds = common.timed(lambda: torch_reference.train_steps(model, images, labels, _BATCH.value))
    steps = len(labeled) // _BATCH.value
    rate = steps * _BATCH.value / seconds
    figures["torch eager"] = {"train_images_per_second": rate, "step_time_vs_plain": plain / rate}
    rows.append(["torch eager", rate, plain / rate])
  print(
    f"\nTraining on {_LABELED.value} CIFAR-10 images (batch {_BATCH.value}), pool "
    f"{_POOL.value}, ResNet-18 width {_WIDTH.value}, {jax.device_count()} "
    f"{jax.default_backend()} device(s), {os.cpu_count()} cores, best of "
    f"{_ROUNDS.value} round(s)\n"
  )
  print(common.table(["train step", "labeled img/s", "step time x plain"], rows))
  path = common.write_json(
    "training",
    {
      "labeled": _LABELED.value,
      "pool": _POOL.value,
      "width": _WIDTH.value,
      "rounds": _ROUNDS.value,
      "figures": figures,
    },
    _OUT.value,
  )
  print(f"wrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

"""Scoring throughput of every strategy against one forward pass and a PyTorch reference.

  python -m benchmarks.scoring [--pool=10000] [--width=64] [--strategies=...] [--out=DIR]

Same pool for everyone: real CIFAR-10 training images (../shared/data), a CIFAR ResNet-18 at
random weights (throughput does not depend on the values). Each JAX strategy runs its real
scoring path (strategy.score + strategy.select over a ScoringContext), compiled beforehand on
one batch, and timed as the faster of two full runs when one takes under 30 s (the first
full-size call also compiles small eager ops); TracInCP is timed for ONE checkpoint (a run
replays one per epoch). The PyTorch reference runs the per-sample backward loop of the public
gradnorm code and torch.func's vmap(grad), at the same thread count. Prints a table; writes
<out>/scoring.json.
"""

from __future__ import annotations

import os
import tempfile

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings
from disal_jax.data.registry import load_dataset
from disal_jax.strategies import registry
from disal_jax.training import sharding

_POOL = flags.DEFINE_integer("pool", 10_000, "Unlabeled images to score.")
_LABELED = flags.DEFINE_integer("labeled", 1_000, "Labeled images (CoreSet's centres).")
_WIDTH = flags.DEFINE_integer("width", 64, "ResNet-18 width (64 = the standard model).")
_BATCH = flags.DEFINE_integer("eval_batch_size", 250, "Scoring batch size.")
_STRATEGIES = flags.DEFINE_list("strategies", None, "Strategies (default: all registered).")
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch reference.")
_TORCH_POOL = flags.DEFINE_integer(
  "torch_pool", 0, "Images for the PyTorch per-sample loops (0 = --pool); they are slow."
)
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write scoring.json.")


def main(argv):
  del argv
  config = common.cifar_config(_POOL.value + _LABELED.value, _WIDTH.value, _CACHE.value)
  config.train.eval_batch_size = _BATCH.value
  dataset = load_dataset(config.data)
  mesh = sharding.make_mesh()
  labeled = np.arange(_LABELED.value)
  candidates = np.arange(_LABELED.value, _LABELED.value + _POOL.value)
  names = _STRATEGIES.value or registry.names()
  k = max(1, _POOL.value // 20)
  rows, figures = [], {}
  workdir = tempfile.mkdtemp()

  forward = common.forward_seconds(config, dataset, mesh, labeled, candidates, workdir)
  figures["jax_forward"] = {"seconds": forward, "samples_per_second": _POOL.value / forward}
  rows.append(["jax forward (floor)", forward, _POOL.value / forward, 1.0])

  for name in names:
    seconds = common.scorer_seconds(config, dataset, mesh, name, labeled, candidates, k, workdir)
    label = name + (" (1 checkpoint)" if registry.get_strategy(name).make_epoch_callback else "")
    figures[name] = {
      "seconds": seconds,
      "samples_per_second": _POOL.value / seconds,
      "x_forward": seconds / forward,
    }
    rows.append([label, seconds, _POOL.value / seconds, seconds / forward])
    print(f"{label}: {seconds:.2f} s", flush=True)

  if _TORCH.value:
    import torch  # pylint: disable=import-outside-toplevel

    from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(os.cpu_count() or 1)
    mean, std = dataset.channel_stats()
    x = (dataset.train_images[candidates].astype(np.float32) / 255.0 - mean) / std
    images = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    model = torch_reference.ResNet18(dataset.num_classes, _WIDTH.value)
    torch_reference.forward(model, images[: _BATCH.value], _BATCH.value)
    seconds = common.best_time(lambda: torch_reference.forward(model, images, _BATCH.value))
    figures["torch_forward"] = {"seconds": seconds, "samples_per_second": _POOL.value / seconds}
    rows.append(["torch forward", seconds, _POOL.value / seconds, seconds / forward])
    n = _TORCH_POOL.value or _POOL.value
    torch_reference.gradnorm_loop(model, images[:2])
    seconds = common.timed(lambda: torch_reference.gradnorm_loop(model, images[:n]))
    figures["torch_gradnorm_loop"] = {
      "samples": n,
      "seconds": seconds,
      "samples_per_second": n / seconds,
    }
    rows.append(
      [f"torch gradnorm loop ({n})", seconds, n / seconds, seconds / (forward * n / _POOL.value)]
    )
    seconds = common.timed(lambda: torch_reference.gradnorm_vmap(model, images[:n], 32))
    figures["torch_gradnorm_vmap"] = {
      "samples": n,
      "seconds": seconds,
      "samples_per_second": n / seconds,
    }
    rows.append(
      [
        f"torch.func vmap gradnorm ({n})",
        seconds,
        n / seconds,
        seconds / (forward * n / _POOL.value),
      ]
    )
    loop_rate = figures["torch_gradnorm_loop"]["samples_per_second"]
    for name in ("gradnorm_entropy", "gradnorm_expected"):
      if name in figures:
        figures[name]["x_torch_loop_speed"] = figures[name]["samples_per_second"] / loop_rate

  print(
    f"\nScoring {_POOL.value} CIFAR-10 images, ResNet-18 width {_WIDTH.value}, "
    f"{jax.device_count()} {jax.default_backend()} device(s), {os.cpu_count()} cores\n"
  )
  print(common.table(["scorer", "seconds", "samples/s", "x forward time"], rows))
  path = common.write_json(
    "scoring",
    {"pool": _POOL.value, "labeled": _LABELED.value, "width": _WIDTH.value, "figures": figures},
    _OUT.value,
  )
  print(f"\nwrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

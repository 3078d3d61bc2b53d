"""Test helpers: config loading, a tiny config, paths."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import jax
import numpy as np

# Counts XLA compilations while active; the strategy contract's check uses it too.
from disal_jax.strategies.testing import CompileCounter as CompileCounter

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED_DATA = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

# Catch silent float64/int promotion mistakes in our own array code.
jax.config.update("jax_numpy_dtype_promotion", "strict")


def load_config(name: str, variant: str = ""):
  """Loads configs/<name>.py and calls get_config(variant), as config_flags would."""
  path = CONFIGS / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"configs_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(variant) if variant else module.get_config()


def tiny_config(**overrides):
  """Digits, a width-4 ResNet-18, 2 epochs per cycle, 10% -> 15% labeled (2 cycles), toy VAAL;
  `overrides` are dotted keys."""
  config = load_config("default", "quick")
  config.model.width = 4
  config.train.epochs = 2
  config.al.final_fraction = 0.15
  config.full_training = False
  # Its cycles draw each pool sample under twice; the tests check what DISAL's loss does.
  config.disal.guard_min_pool_draws = 0.0
  return with_overrides(config, **{**TOY_VAAL, **overrides})


# VAAL's networks at toy size (the reference's are 128-1024 channels wide at 32 px).
TOY_VAAL = {
  "vaal.width": 8,
  "vaal.latent_dim": 8,
  "vaal.discriminator_hidden": 32,
  "vaal.image_size": 16,
  "vaal.batch_size": 16,
  "vaal.epochs": 2,
  "vaal.steps_per_call": 5,
  "vaal.iterations_per": "labeled",
}


def with_overrides(config, **overrides):
  """Sets dotted keys ('train.epochs') of a ConfigDict in place; returns it."""
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    node[last] = value
  return config


# The tests' programs are tiny: compiling them costs more than running them. LLVM's -O1 for
# XLA:CPU's machine code (XLA's own graph optimisations still run) cut the strategy-contract
# run from 132 to 97 s; -O0 compiled no faster and ran training-heavy tests 3x slower.
# conftest.py sets it for the test processes; `xla_flags` adds it to a subprocess's flags.
FAST_COMPILE_XLA_FLAG = "--xla_backend_optimization_level=1"


def xla_flags(*flags: str) -> str:
  """XLA_FLAGS for a subprocess of the tests: `flags` and the fast-compile flag."""
  return " ".join((FAST_COMPILE_XLA_FLAG,) + flags)


def subprocess_env(**extra) -> dict[str, str]:
  env = dict(os.environ)
  env.update(extra)
  return env


def write_image_folder(
  root: pathlib.Path,
  classes: tuple[str, ...],
  train_per_class: int,
  test_per_class: int,
  size: int = 32,
  seed: int = 0,
) -> pathlib.Path:
  """A small image folder root/<split>/<class>/<i>.jpg of synthetic JPEGs: each class its own
  mean colour plus noise, so a model can tell them apart. Returns root."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  for split, count in (("train", train_per_class), ("test", test_per_class)):
    for c, name in enumerate(classes):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      colour = 255 * np.array([(c * 0.37) % 1, (c * 0.61) % 1, (c * 0.83) % 1])
      for i in range(count):
        pixels = np.clip(colour + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:04d}.jpg", quality=90)
  return root


def write_results(
  root: pathlib.Path,
  strategy: str,
  seed: int,
  accuracies,
  counts,
  num_train: int = 100,
  mious=None,
  val_accuracies=None,
) -> None:
  """A hand-built `<root>/<strategy>/seed_<seed>/results.json` as the loop writes it: test
  accuracy (and mIoU, validation accuracy) per labeled count; seconds train 2(i + 1), record
  0.5, scoring the seed."""
  run = root / strategy / f"seed_{seed}"
  run.mkdir(parents=True)
  cycles = [
    {
      "cycle": i,
      "labeled": n,
      "test_accuracy": a,
      "test_loss": 1.0 - a,
      "train_seconds": 2.0 * (i + 1),
      "record_seconds": 0.5,
      "scoring_seconds": seed,
    }
    for i, (n, a) in enumerate(zip(counts, accuracies))
  ]
  for cycle, miou in zip(cycles, mious or []):
    cycle["test_miou"] = miou
  for cycle, val in zip(cycles, val_accuracies or []):
    cycle["val_accuracy"] = val
  (run / "results.json").write_text(
    json.dumps({"strategy": strategy, "seed": seed, "num_train": num_train, "cycles": cycles})
  )

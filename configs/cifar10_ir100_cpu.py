"""CIFAR10-IR100 (the paper's imbalanced setting) on the real CIFAR-10 JPEGs of ../shared/data,
scaled to 2 CPU cores.

  python -m disal_jax.sweep --config=configs/cifar10_ir100_cpu.py \\
      --strategies=random,coreset,margin --seeds=0,1,2 --workdir=workdirs/cifar10_ir100_cpu
  python -m disal_jax.report workdirs/cifar10_ir100_cpu

The whole sweep of docs/results.md (nine strategies, seed by seed, resumable) is
results/cifar10_ir100/sweep.sh, its tables results/cifar10_ir100/report.py. One run alone on
2 CPU cores: Random, margin, CoreSet, BADGE, MC-Dropout or Learning Loss 450-600 s, DISAL about
760 s (its train branch and jvp scoring); the sweep's 30 runs about 5 hours.

The archive is looked for beside the repository (shared/data/cifar10-jpeg.tar.gz); point
--config.data.data_dir at another copy. What is kept from the paper, and what is scaled:
- validation: a stratified 2,000 of the 50,000 balanced training images (data.val_fraction),
  carved before the tail so that it is balanced like the test split, never in the pool;
- training pool: the remaining 4,800 images per class made long-tailed with imbalance ratio
  100 (the exponential profile of data.imbalance_ratio: 4,800 -> 48 per class, 11,909 in all);
- budgets: the paper's, 1,000 -> 4,000 labeled by +500 (7 cycles);
- test set: a fixed random 2,000 of the 10,000 balanced test images;
- model and training: configs/cifar10_cpu.py's recipe (ResNet-18 at width 8, 15 epochs of at
  least 300 SGD steps per cycle, lr x0.1 after 80% of the epochs), chosen there on validation;
  at 4,000 labels 15 epochs are 469 steps;
- DISAL's pool batch: 80 rows per step (disal.dynamic_batch_size; 32 elsewhere), so that
  each cycle draws every pool sample at least twice (300 steps x 80 = 24,000 draws of the
  10,909-row pool at 1,000 labels): with 32, every cycle is under disal.guard_min_pool_draws
  and DISAL would train without its dynamic loss (docs/disal.md, "Few labels in a large pool");
- everything else (SGD 0.1, momentum 0.9, weight decay 5e-4, batch 128, crop + flip, the
  whole pool scored) is the paper's.
Variant 'quick': two cycles (1,000 -> 1,500), no step floor, for smoke runs.
"""

import importlib.util
import pathlib


def _cifar10_cpu():
  """configs/cifar10_cpu.py, the recipe this config keeps (loaded by path, as config_flags
  loads config files: configs/ is not a package)."""
  path = pathlib.Path(__file__).with_name("cifar10_cpu.py")
  spec = importlib.util.spec_from_file_location("configs_cifar10_cpu", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(variant: str = ""):
  config = _cifar10_cpu().get_config()  # the archive, validation, test subset, model, steps
  config.data.max_train = 0  # the whole long-tailed pool
  config.data.imbalance_ratio = 100.0
  config.al.initial_count = 1_000
  config.al.step_count = 500
  config.al.final_count = 4_000
  config.disal.dynamic_batch_size = 80  # >= 2 draws per pool sample in every cycle
  if variant == "quick":
    config.train.min_steps = 0
    config.al.final_count = 1_500
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of configs/cifar10_ir100_cpu.py; known: 'quick'")
  return config

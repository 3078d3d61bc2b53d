"""Which classes each strategy of the cifar10_cpu sweep selected: a Markdown table.

Usage, from the repository root (the sweep folder of cifar10_cpu_al.sh; reads the same
dataset as the runs, from the decoded-array cache):

  python results/disal_dynamic_loss/class_balance.py workdirs/cifar10_cpu_al > \
      results/disal_dynamic_loss/class_balance.md

For every variant with finished runs: the selected samples of all cycles and seeds counted
per class, the smallest and largest count, and the normalised entropy of the distribution
(1 = perfectly balanced).
"""

import json
import pathlib
import sys

import numpy as np

from disal_jax.data.registry import load_dataset

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))
from tests.helpers import load_config  # noqa: E402  (the configs are files, not a package)

FINISHED_SELECTIONS = 6  # selections of a whole cifar10_cpu run (10% -> 40% by 5%: 7 cycles)


def selected_per_class(run: pathlib.Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(cycles, C) counts of the rows each cycle selected in one run's results.json."""
  cycles = json.loads((run / "results.json").read_text())["cycles"]
  return np.array(
    [
      np.bincount(labels[np.asarray(c["selected"], np.int64)], minlength=num_classes)
      for c in cycles
      if c["selected"]
    ],
    np.int64,
  ).reshape(-1, num_classes)


def main(sweep: pathlib.Path) -> None:
  dataset = load_dataset(load_config("cifar10_cpu").data)
  labels, num_classes = np.asarray(dataset.train_labels), dataset.num_classes
  print("| variant | seeds | " + " | ".join(dataset.class_names) + " | min | max | entropy |")
  print("|---|---:|" + "---:|" * (num_classes + 3))
  for variant in sorted(p for p in sweep.iterdir() if p.is_dir()):
    runs = [r.parent for r in sorted(variant.glob("*/seed_*/results.json"))]
    per_run = [selected_per_class(r, labels, num_classes) for r in runs]
    per_run = [m for m in per_run if len(m) == FINISHED_SELECTIONS]  # finished AL runs only
    if not per_run:
      continue
    counts = sum(m.sum(axis=0) for m in per_run)
    share = counts / counts.sum()
    entropy = -np.sum(share[share > 0] * np.log(share[share > 0])) / np.log(num_classes)
    print(
      f"| {variant.name} | {len(per_run)} | "
      + " | ".join(map(str, counts))
      + f" | {counts.min()} | {counts.max()} | {entropy:.3f} |"
    )


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))

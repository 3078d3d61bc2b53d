"""An ablation folder's runs as one compact CSV: a row per (variant, strategy, seed, cycle).

Usage, from the repository root (the ablation folder of cifar10_cpu_al.sh and
cifar10_cpu_library_strategies.sh):

  python results/disal_dynamic_loss/runs_csv.py workdirs/cifar10_cpu_al > \
      results/disal_dynamic_loss/cifar10_cpu_al_runs.csv

Reads `<folder>/<variant>/<strategy>/seed_<s>/results.json` (what `python -m disal_jax.ablation`
writes) and keeps what the tables of docs/results.md and cifar10_cpu_al.md are computed from:
the labeled count, validation and test accuracy of every cycle, and its seconds. The AULC, the
first and last budgets and the paired differences follow from these rows
(`disal_jax.report.tables.aulc`); the selected rows stay in the run folders (class_balance.py).
"""

import csv
import json
import pathlib
import sys

COLUMNS = (
  "variant",
  "strategy",
  "seed",
  "cycle",
  "labeled",
  "val_accuracy",
  "test_accuracy",
  "train_seconds",
  "record_seconds",
  "scoring_seconds",
)


def rows(folder: pathlib.Path):
  for path in sorted(folder.glob("*/*/seed_*/results.json")):
    run = json.loads(path.read_text())
    variant = path.parent.parent.parent.name
    for c in run["cycles"]:
      yield {
        "variant": variant,
        "strategy": c["strategy"],
        "seed": c["seed"],
        "cycle": c["cycle"],
        "labeled": c["labeled"],
        "val_accuracy": c.get("val_accuracy"),
        "test_accuracy": c["test_accuracy"],
        **{k: round(c[k], 1) for k in ("train_seconds", "record_seconds", "scoring_seconds")},
      }


def main(folder: pathlib.Path) -> None:
  writer = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
  writer.writeheader()
  writer.writerows(rows(folder))


if __name__ == "__main__":
  main(pathlib.Path(sys.argv[1]))

"""Issue 37's grid table: each cell's first-budget accuracy of every strategy against Random's
(the same labels), paired by seed, on validation and test.

  python results/disal_budget_grid/table.py workdirs/disal_budget_grid \\
      --write_csv=results/disal_budget_grid/runs.csv
  python results/disal_budget_grid/table.py workdirs/disal_budget_grid \\
      results/disal_budget_grid/before_runs.csv

Each source is a grid workdir (<workdir>/l<labeled>_r<ratio>_<variant>/<strategy>/seed_<s>/
results.json, as grid.sh writes them) or a CSV of its runs (one row per run, what
--write_csv writes). Prints a markdown table. A difference whose |mean| is inside one std of
the paired differences is a tie; the issue's bar is DISAL's validation mean at least Random's
minus half a point in every cell.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import re

import numpy as np

CELL = re.compile(r"l(\d+)_r(\d+)_(\w+)")
COLUMNS = ("labeled", "ratio", "variant", "seed", "val_accuracy", "test_accuracy", "train_seconds")


def collect(workdir: pathlib.Path) -> list[dict]:
  """One row per finished run of the grid: its cell, variant, seed and cycle-0 figures."""
  rows = []
  for folder in sorted(workdir.iterdir()):
    match = CELL.fullmatch(folder.name)
    if not match:
      continue
    for path in sorted(folder.glob("*/seed_*/results.json")):
      cycles = json.loads(path.read_text())["cycles"]
      if cycles:
        first = cycles[0]
        rows.append(
          {
            "labeled": int(match[1]),
            "ratio": int(match[2]),
            "variant": match[3],
            "seed": int(path.parent.name.removeprefix("seed_")),
            "val_accuracy": first["val_accuracy"],
            "test_accuracy": first["test_accuracy"],
            "train_seconds": first["train_seconds"],
          }
        )
  return rows


def read_csv(path: pathlib.Path) -> list[dict]:
  with open(path, newline="") as f:
    return [
      {k: (v if k == "variant" else float(v) if "." in v else int(v)) for k, v in row.items()}
      for row in csv.DictReader(f)
    ]


def _mean_std(values) -> str:
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) else "—"


def table(rows: list[dict], draws: int, baseline: str = "random") -> str:
  cells: dict = {}
  for r in rows:
    cells.setdefault((r["labeled"], r["ratio"]), {}).setdefault(r["variant"], {})[r["seed"]] = r
  variants = sorted({v for cell in cells.values() for v in cell} - {baseline})
  lines = [
    "| labeled | pool | draws / pool row | split | "
    + f"{baseline} | "
    + " | ".join(f"{v} | {v} − {baseline} (paired)" for v in variants)
    + " |",
    "|" + "---:|" * (5 + 2 * len(variants)),
  ]
  for (labeled, ratio), runs in sorted(cells.items()):
    pool = labeled * ratio
    for split in ("val", "test"):
      base = runs.get(baseline, {})
      row = [
        str(labeled),
        str(pool),
        f"{draws / pool:.1f}",
        split,
        _mean_std([100 * r[f"{split}_accuracy"] for r in base.values()]),
      ]
      for variant in variants:
        other = runs.get(variant, {})
        seeds = sorted(set(base) & set(other))
        diffs = [
          100 * (other[s][f"{split}_accuracy"] - base[s][f"{split}_accuracy"]) for s in seeds
        ]
        row.append(_mean_std([100 * r[f"{split}_accuracy"] for r in other.values()]))
        if diffs:
          verdict = (
            "tie"
            if abs(np.mean(diffs)) <= np.std(diffs)
            else ("ahead" if np.mean(diffs) > 0 else "behind")
          )
          row.append(f"{np.mean(diffs):+.2f} ± {np.std(diffs):.2f} ({len(diffs)} seeds, {verdict})")
        else:
          row.append("—")
      lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "sources",
    type=pathlib.Path,
    nargs="+",
    help="grid workdirs or runs CSVs (a run in several: the first's)",
  )
  # configs/cifar10_cpu.py: 300 steps (train.min_steps) x 32 pool rows (disal.dynamic_batch_size)
  parser.add_argument("--draws", type=int, default=300 * 32, help="pool draws per cycle")
  parser.add_argument("--write_csv", type=pathlib.Path, help="also write the runs as a CSV")
  args = parser.parse_args()
  rows, seen = [], set()
  for source in args.sources:
    for row in read_csv(source) if source.suffix == ".csv" else collect(source):
      key = (row["labeled"], row["ratio"], row["variant"], row["seed"])
      if key not in seen:
        seen.add(key)
        rows.append(row)
  if args.write_csv:
    with open(args.write_csv, "w", newline="") as f:
      writer = csv.DictWriter(f, COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
  print(table(rows, args.draws))


if __name__ == "__main__":
  main()

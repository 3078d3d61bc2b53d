"""Issue 37's grid table: each cell's first-budget accuracy of every strategy against Random's
(the same labels), paired by seed, on validation and test.

  python results/disal_budget_grid/table.py workdirs/disal_budget_grid [--draws=9600]

Reads <workdir>/l<labeled>_r<ratio>_<strategy>/<strategy>/seed_<s>/results.json (as grid.sh
writes them); prints a markdown table. A difference whose |mean| is inside one std of the
paired differences is a tie; the issue's bar is DISAL's validation mean at least Random's
minus half a point in every cell.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re

import numpy as np

CELL = re.compile(r"l(\d+)_r(\d+)_(\w+)")


def first_budget(workdir: pathlib.Path) -> dict[tuple[int, int], dict[str, dict[int, dict]]]:
  """{(labeled, ratio): {strategy: {seed: cycle-0 record}}} of the finished runs."""
  cells: dict = {}
  for folder in sorted(workdir.iterdir()):
    match = CELL.fullmatch(folder.name)
    if not match:
      continue
    labeled, ratio, variant = int(match[1]), int(match[2]), match[3]
    for path in folder.glob("*/seed_*/results.json"):
      cycles = json.loads(path.read_text())["cycles"]
      if cycles:
        seed = int(path.parent.name.removeprefix("seed_"))
        cells.setdefault((labeled, ratio), {}).setdefault(variant, {})[seed] = cycles[0]
  return cells


def _mean_std(values) -> str:
  return f"{np.mean(values):.2f} ± {np.std(values):.2f}" if len(values) else "—"


def table(workdir: pathlib.Path, draws: int, baseline: str = "random") -> str:
  cells = first_budget(workdir)
  variants = sorted({v for cell in cells.values() for v in cell} - {baseline})
  lines = ["| labeled | pool | draws / pool row | split | " + f"{baseline} | " +
           " | ".join(f"{v} | {v} − {baseline} (paired)" for v in variants) + " |",
           "|" + "---:|" * (4 + 2 * len(variants) + 1)]
  for (labeled, ratio), runs in sorted(cells.items()):
    pool = labeled * ratio
    for split in ("val", "test"):
      base = runs.get(baseline, {})
      row = [str(labeled), str(pool), f"{draws / pool:.1f}", split,
             _mean_std([100 * r[f"{split}_accuracy"] for r in base.values()])]
      for variant in variants:
        other = runs.get(variant, {})
        seeds = sorted(set(base) & set(other))
        diffs = [100 * (other[s][f"{split}_accuracy"] - base[s][f"{split}_accuracy"])
                 for s in seeds]
        row.append(_mean_std([100 * r[f"{split}_accuracy"] for r in other.values()]))
        if diffs:
          verdict = "tie" if abs(np.mean(diffs)) <= np.std(diffs) else (
              "ahead" if np.mean(diffs) > 0 else "behind")
          row.append(f"{np.mean(diffs):+.2f} ± {np.std(diffs):.2f} ({len(diffs)} seeds, "
                     f"{verdict})")
        else:
          row.append("—")
      lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdir", type=pathlib.Path)
  # configs/cifar10_cpu.py: 300 steps (train.min_steps) x 32 pool rows (disal.dynamic_batch_size)
  parser.add_argument("--draws", type=int, default=300 * 32, help="pool draws per cycle")
  args = parser.parse_args()
  print(table(args.workdir, args.draws))


if __name__ == "__main__":
  main()

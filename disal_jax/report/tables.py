"""Tables of results: CSV rows and the per-cycle accuracy table printed after a run."""

from __future__ import annotations

import csv
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np


def write_csv(path: pathlib.Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


METRIC_NAMES = {"test_accuracy": "test accuracy", "test_miou": "test mIoU",
                "val_accuracy": "validation accuracy", "val_miou": "validation mIoU"}


def aulc(counts: np.ndarray, accuracy: np.ndarray) -> float:
  """Area under the learning curve, normalised by the labeled range: the curve's mean
  accuracy under trapezoidal integration (one point gives that point)."""
  if len(counts) < 2:
    return float(accuracy[0])
  return float(np.trapezoid(accuracy, counts) / (counts[-1] - counts[0]))


def accuracy_table(results: dict[str, list], full_training_name: str,
                   metric: str = "test_accuracy") -> str:
  """Markdown: one row per labeled count, one column per strategy, `metric` in %.

  `results` maps a strategy to its per-cycle records (objects with .labeled and the
  `metric` attribute: test_accuracy, or test_miou for segmentation); Full Training becomes a
  last row of its own.
  """
  strategies = [s for s in results if s != full_training_name]
  by_count: dict[int, dict[str, float]] = {}
  for name in strategies:
    for row in results[name]:
      by_count.setdefault(row.labeled, {})[name] = getattr(row, metric)
  lines = [f"{METRIC_NAMES[metric]} (%)", "",
           "| labeled | " + " | ".join(strategies) + " |",
           "|---:|" + "---:|" * len(strategies)]
  for count in sorted(by_count):
    cells = [f"{100 * by_count[count][s]:.2f}" if s in by_count[count] else "" for s in
             strategies]
    lines.append(f"| {count} | " + " | ".join(cells) + " |")
  areas = {}
  for name in strategies:
    points = sorted((row.labeled, getattr(row, metric)) for row in results[name])
    if points:
      areas[name] = aulc(np.array([c for c, _ in points]), np.array([v for _, v in points]))
  best = max(areas.values(), default=None)
  cells = [("" if s not in areas else
            f"**{100 * areas[s]:.2f}**" if areas[s] == best and len(areas) > 1 else
            f"{100 * areas[s]:.2f}") for s in strategies]
  lines.append("| AULC | " + " | ".join(cells) + " |")
  if full_training_name in results:
    row = results[full_training_name][0]
    lines.append(f"\nFull Training ({row.labeled} labeled): {100 * getattr(row, metric):.2f}")
  return "\n".join(lines)

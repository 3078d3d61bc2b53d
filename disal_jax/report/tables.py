"""Tables of results: CSV rows and the per-cycle accuracy table printed after a run."""

from __future__ import annotations

import csv
import pathlib
from typing import Any, Iterable, Sequence


def write_csv(path: pathlib.Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


METRIC_NAMES = {"test_accuracy": "test accuracy", "test_miou": "test mIoU"}


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
  if full_training_name in results:
    row = results[full_training_name][0]
    lines.append(f"\nFull Training ({row.labeled} labeled): {100 * getattr(row, metric):.2f}")
  return "\n".join(lines)

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


def accuracy_table(results: dict[str, list], full_training_name: str) -> str:
  """Markdown: one row per labeled count, one column per strategy, test accuracy in %.

  `results` maps a strategy to its per-cycle records (objects with .labeled and
  .test_accuracy); Full Training becomes a last row of its own.
  """
  strategies = [s for s in results if s != full_training_name]
  by_count: dict[int, dict[str, float]] = {}
  for name in strategies:
    for row in results[name]:
      by_count.setdefault(row.labeled, {})[name] = row.test_accuracy
  lines = ["| labeled | " + " | ".join(strategies) + " |",
           "|---:|" + "---:|" * len(strategies)]
  for count in sorted(by_count):
    cells = [f"{100 * by_count[count][s]:.2f}" if s in by_count[count] else "" for s in
             strategies]
    lines.append(f"| {count} | " + " | ".join(cells) + " |")
  if full_training_name in results:
    row = results[full_training_name][0]
    lines.append(f"\nFull Training ({row.labeled} labeled): {100 * row.test_accuracy:.2f}")
  return "\n".join(lines)

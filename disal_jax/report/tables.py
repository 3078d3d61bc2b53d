"""Tables of results: CSV rows and the per-cycle accuracy table printed after a run."""

from __future__ import annotations

import csv
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np


def write_csv(path: pathlib.Path, rows: Iterable[dict[str, Any]], columns: Sequence[str]):
  """Writes `rows` to `path` as CSV with the given `columns` (other keys ignored)."""
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


METRIC_NAMES = {
  "test_accuracy": "test accuracy",
  "test_miou": "test mIoU",
  "val_accuracy": "validation accuracy",
  "val_miou": "validation mIoU",
}


def aulc(counts: np.ndarray, accuracy: np.ndarray) -> float:
  """Area under the learning curve, normalised by the labeled range: the curve's mean
  accuracy under trapezoidal integration (one point gives that point)."""
  if len(counts) < 2:
    return float(accuracy[0])
  return float(np.trapezoid(accuracy, counts) / (counts[-1] - counts[0]))


def paired_differences(
  values: dict[int, float], baseline: dict[int, float]
) -> tuple[list[int], np.ndarray]:
  """(seeds both hold, values minus baseline on those seeds): a strategy against a baseline,
  seed by seed (the same seed shares the initial labeled set and the initial weights)."""
  seeds = sorted(set(values) & set(baseline))
  return seeds, np.array([values[s] - baseline[s] for s in seeds], dtype=np.float64)


def paired_caption(baseline: str) -> str:
  """The sentence above a table of `paired_cells` rows."""
  return (
    f"AULC minus {baseline}'s, paired by seed, in points (mean ± std of the "
    "differences; a mean inside one std is a tie)."
  )


def paired_cells(differences: np.ndarray) -> tuple[str, str]:
  """('+1.17, −0.59', '+0.29 ± 0.88 (tie)'): the differences in points, then their mean ±
  population std and the verdict: 'ahead' / 'behind' when the mean is further from zero
  than one std of the differences, 'tie' otherwise, 'one seed' when there is one."""
  signed = lambda value: f"{100 * value:+.2f}".replace("-", "−")
  mean, std = float(differences.mean()), float(differences.std())
  verdict = (
    "one seed"
    if differences.size == 1
    else "tie"
    if abs(mean) <= std
    else "ahead"
    if mean > 0
    else "behind"
  )
  return (", ".join(map(signed, differences)), f"{signed(mean)} ± {100 * std:.2f} ({verdict})")


def accuracy_table(
  results: dict[str, list], full_training_name: str, metric: str = "test_accuracy"
) -> str:
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
  lines = [
    f"{METRIC_NAMES[metric]} (%)",
    "",
    "| labeled | " + " | ".join(strategies) + " |",
    "|---:|" + "---:|" * len(strategies),
  ]
  for count in sorted(by_count):
    cells = [f"{100 * by_count[count][s]:.2f}" if s in by_count[count] else "" for s in strategies]
    lines.append(f"| {count} | " + " | ".join(cells) + " |")
  areas = {}
  for name in strategies:
    points = sorted((row.labeled, getattr(row, metric)) for row in results[name])
    if points:
      areas[name] = aulc(np.array([c for c, _ in points]), np.array([v for _, v in points]))
  best = max(areas.values(), default=None)
  cells = [
    (
      ""
      if s not in areas
      else f"**{100 * areas[s]:.2f}**"
      if areas[s] == best and len(areas) > 1
      else f"{100 * areas[s]:.2f}"
    )
    for s in strategies
  ]
  lines.append("| AULC | " + " | ".join(cells) + " |")
  if full_training_name in results:
    row = results[full_training_name][0]
    lines.append(f"\nFull Training ({row.labeled} labeled): {100 * getattr(row, metric):.2f}")
  return "\n".join(lines)

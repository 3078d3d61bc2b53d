"""A sweep folder's results as tables and learning curves, like the paper's.

Reads every `<sweep>/<strategy>/seed_<s>/results.json` (a line per folder name, so a run made
with other settings and linked in under another name is its own line) and writes into
`<sweep>/report/`:
- results.csv: one row per (strategy, seed, cycle): labeled count, test accuracy (and mIoU for
  segmentation), loss, times;
- accuracy.md: the headline metric (test accuracy, or mIoU for segmentation sweeps), mean ±
  std over seeds per labeled count, one column per strategy, the best
  mean of each row in bold, the area under the learning curve (AULC) as the last row, and
  Full Training below;
- val_accuracy.md: the same table on the validation split, when the runs have one
  (config.data.val_fraction): the numbers to choose settings on;
- times.md: mean wall seconds per cycle (train, record, scoring) per strategy;
- accuracy.png: the mean metric against the labeled percentage, a ±std band per strategy, Full
  Training as a dashed line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Iterable

import numpy as np

from disal_jax.report import tables

FULL_TRAINING = "full_training"  # the loop's name for the upper line
CSV_COLUMNS = (
  "strategy",
  "seed",
  "cycle",
  "labeled",
  "labeled_percent",
  "test_accuracy",
  "test_miou",
  "test_loss",
  "val_accuracy",
  "val_miou",
  "train_seconds",
  "record_seconds",
  "scoring_seconds",
)


@dataclasses.dataclass(frozen=True)
class Row:
  """One run's metrics after one cycle, as the report reads them from its metrics file."""

  strategy: str
  seed: int
  cycle: int
  labeled: int
  labeled_percent: float
  test_accuracy: float
  test_loss: float
  train_seconds: float
  record_seconds: float
  scoring_seconds: float
  test_miou: float = float("nan")  # segmentation runs; NaN for classification
  val_accuracy: float = float("nan")  # runs with a validation split; NaN otherwise
  val_miou: float = float("nan")

  @property
  def score(self) -> float:
    """The headline metric: mIoU for segmentation, test accuracy otherwise."""
    return self.test_accuracy if math.isnan(self.test_miou) else self.test_miou


def _nan_if_none(value) -> float:
  return float("nan") if value is None else float(value)


def on_split(rows: list[Row], split: str) -> list[Row]:
  """The rows with the `split` ('test' or 'val') metrics in the test_* fields, which the
  tables and curves read; rows without that split are dropped."""
  if split == "test":
    return rows
  return [
    dataclasses.replace(r, test_accuracy=r.val_accuracy, test_miou=r.val_miou)
    for r in rows
    if not math.isnan(r.val_accuracy)
  ]


def metric_name(rows: Iterable[Row]) -> str:
  """'accuracy', or 'mIoU' where the rows have segmentation metrics."""
  return "accuracy" if all(math.isnan(r.test_miou) for r in rows) else "mIoU"


def collect(sweep: pathlib.Path) -> list[Row]:
  """Every cycle of every run under `sweep`, with its labeled share of the training set."""
  rows = []
  for path in sorted(sweep.glob("*/seed_*/results.json")):
    payload = json.loads(path.read_text())
    # Labelled by folder name (the strategy's, as the loop writes it): linking a run made with
    # other settings in as <sweep>/<new name> puts it beside the others as its own line.
    label = path.parent.parent.name
    for c in payload["cycles"]:
      rows.append(
        Row(
          label,
          int(payload["seed"]),
          int(c["cycle"]),
          int(c["labeled"]),
          round(100.0 * c["labeled"] / payload["num_train"], 2),
          float(c["test_accuracy"]),
          float(c["test_loss"]),
          float(c["train_seconds"]),
          float(c["record_seconds"]),
          float(c["scoring_seconds"]),
          _nan_if_none(c.get("test_miou")),
          _nan_if_none(c.get("val_accuracy")),
          _nan_if_none(c.get("val_miou")),
        )
      )
  if not rows:
    raise FileNotFoundError(
      f"{sweep}: no <strategy>/seed_<s>/results.json below it; run "
      "python -m disal_jax.sweep (or disal_jax.main) with this workdir"
    )
  return rows


def strategies_of(rows: Iterable[Row]) -> list[str]:
  """The strategy names among `rows`, sorted, without full training."""
  return sorted({r.strategy for r in rows if r.strategy != FULL_TRAINING})


def curve(rows: list[Row], strategy: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(labeled counts, mean score, std score, seeds per count) of one strategy (`Row.score`).

  Mean and std (population, ddof=0) over the seeds that reached each count: a run still in
  progress counts in the cycles it has finished.
  """
  mine = [r for r in rows if r.strategy == strategy]
  counts = np.array(sorted({r.labeled for r in mine}))
  by_count = [np.array([r.score for r in mine if r.labeled == c]) for c in counts]
  return (
    counts,
    np.array([a.mean() for a in by_count]),
    np.array([a.std() for a in by_count]),
    np.array([a.size for a in by_count]),
  )


def complete_seeds(rows: list[Row], strategy: str) -> tuple[list[int], dict[int, int]]:
  """(seeds whose run reached the sweep's last labeled count, {in-progress seed: cycles done}).

  The last count is the largest any strategy reached (they share one schedule)."""
  final = max(r.labeled for r in rows if r.strategy != FULL_TRAINING)
  cycles: dict[int, list[Row]] = {}
  for r in rows:
    if r.strategy == strategy:
      cycles.setdefault(r.seed, []).append(r)
  done = sorted(seed for seed, mine in cycles.items() if max(r.labeled for r in mine) == final)
  return done, {seed: len(mine) for seed, mine in sorted(cycles.items()) if seed not in done}


aulc = tables.aulc
PAIRED_BASELINE = "random"  # every other strategy's AULC is paired with its, seed by seed


def seed_aulcs(rows: list[Row], strategy: str) -> dict[int, float]:
  """{seed: AULC of `Row.score`} of `strategy`'s finished runs (complete_seeds)."""
  areas = {}
  for seed in complete_seeds(rows, strategy)[0]:
    mine = sorted((r.labeled, r.score) for r in rows if r.strategy == strategy and r.seed == seed)
    areas[seed] = aulc(np.array([m[0] for m in mine]), np.array([m[1] for m in mine]))
  return areas


def paired_markdown(
  areas: dict[str, dict[int, float]],
  baseline: str,
  others: Iterable[str],
  baseline_first: bool = False,
) -> list[str]:
  """Table lines: each of `others`' AULC minus `baseline`'s (`baseline_first`: `baseline`'s
  minus each of theirs), paired by seed (the seeds both finished; a strategy sharing none is
  left out), per seed and mean ± std with the verdict."""
  lines = ["| strategy | seeds | per seed | mean ± std |", "|---|---|---|---|"]
  for s in others:
    pair = (
      (areas[baseline], areas.get(s, {})) if baseline_first else (areas.get(s, {}), areas[baseline])
    )
    seeds, differences = tables.paired_differences(*pair)
    if seeds:
      lines.append(
        f"| {s} | {','.join(map(str, seeds))} | "
        + " | ".join(tables.paired_cells(differences))
        + " |"
      )
  return lines


def accuracy_markdown(rows: list[Row], split: str = "test") -> str:
  """The mean ± std table of `split` ('test' or 'val'), AULC last, Full Training below."""
  rows = on_split(rows, split)
  strategies = strategies_of(rows)
  curves = {s: curve(rows, s) for s in strategies}
  complete = {s: complete_seeds(rows, s) for s in strategies}
  counts = sorted({int(c) for s in strategies for c in curves[s][0]})
  header = "| labeled | " + " | ".join(f"{s} (n={len(complete[s][0])})" for s in strategies) + " |"
  lines = [header, "|---:|" + "---:|" * len(strategies)]

  def cells(values: dict[str, tuple[float, float, int]]) -> list[str]:
    best = max((m for m, _, _ in values.values()), default=None)
    out = []
    for s in strategies:
      if s not in values:
        out.append("")
        continue
      mean, std, n = values[s]
      text = f"{100 * mean:.2f} ± {100 * std:.2f}"
      text = f"**{text}**" if mean == best else text
      out.append(text if n == len(complete[s][0]) else f"{text} (n={n})")
    return out

  for count in counts:
    values = {}
    for s in strategies:
      c, mean, std, n = curves[s]
      hit = np.flatnonzero(c == count)
      if hit.size:
        values[s] = (mean[hit[0]], std[hit[0]], n[hit[0]])
    percent = next(r.labeled_percent for r in rows if r.labeled == count)
    label = f"{count} ({percent:g}%)"
    lines.append(f"| {label} | " + " | ".join(cells(values)) + " |")
  areas = {s: seed_aulcs(rows, s) for s in strategies}  # strategy -> {finished seed: AULC}
  lines.append(
    "| AULC | "
    + " | ".join(
      cells(
        {
          s: (float(np.mean(list(a.values()))), float(np.std(list(a.values()))), len(a))
          for s, a in areas.items()
          if a
        }
      )
    )
    + " |"
  )
  full = [r.score for r in rows if r.strategy == FULL_TRAINING]
  if full:
    lines.append(
      f"\nFull Training ({len(full)} seeds): {100 * np.mean(full):.2f} ± {100 * np.std(full):.2f}"
    )
  metric = metric_name(rows)
  split_name = "Test" if split == "test" else "Validation"
  lines.append(
    f"\n{split_name} {metric} (%), mean ± std over seeds; best mean per row in bold. "
    f"AULC: area under the {metric} curve over the labeled range, divided by the range; "
    "n: finished runs."
  )
  others = [s for s in strategies if s != PAIRED_BASELINE]
  if PAIRED_BASELINE in areas and any(areas[s] for s in others):
    lines += ["\n" + tables.paired_caption(PAIRED_BASELINE) + "\n"]
    lines += paired_markdown(areas, PAIRED_BASELINE, others)
  total = len(counts)
  running = [
    f"{s} seed {seed} ({done} of {total} cycles)"
    for s in strategies
    for seed, done in complete[s][1].items()
  ]
  if running:
    lines.append(
      "In progress (in the rows they reached, marked with their n; not in the AULC): "
      + ", ".join(running)
      + "."
    )
  return "\n".join(lines)


def times_markdown(rows: list[Row]) -> str:
  """A markdown table of each strategy's mean seconds per cycle: training, recording,
  scoring."""
  strategies = strategies_of(rows)
  lines = [
    "| strategy | cycle | labeled | train s | record s | scoring s |",
    "|---|---:|---:|---:|---:|---:|",
  ]
  for s in strategies:
    for cycle in sorted({r.cycle for r in rows if r.strategy == s}):
      mine = [r for r in rows if r.strategy == s and r.cycle == cycle]
      lines.append(
        f"| {s} | {cycle} | {mine[0].labeled} | "
        f"{np.mean([r.train_seconds for r in mine]):.1f} | "
        f"{np.mean([r.record_seconds for r in mine]):.1f} | "
        f"{np.mean([r.scoring_seconds for r in mine]):.1f} |"
      )
  lines.append("\nMean wall seconds over seeds.")
  return "\n".join(lines)


def plot(rows: list[Row], path: pathlib.Path, title: str, split: str = "test") -> None:
  """Mean `split` ('test' or 'val') metric against the labeled share, a ±std band per line."""
  rows = on_split(rows, split)
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
  for s in strategies_of(rows):
    counts, mean, std, _ = curve(rows, s)
    n = len(complete_seeds(rows, s)[0])
    x = np.array([next(r.labeled_percent for r in rows if r.labeled == c) for c in counts])
    (line,) = ax.plot(
      x,
      100 * mean,
      marker="o",
      markersize=3,
      label=f"{s} (n={n})",
      linewidth=2.2 if s == "disal" else 1.4,
    )
    ax.fill_between(
      x, 100 * (mean - std), 100 * (mean + std), color=line.get_color(), alpha=0.15, linewidth=0
    )
  full = [r.score for r in rows if r.strategy == FULL_TRAINING]
  if full:
    ax.axhline(
      100 * np.mean(full), color="black", linestyle="--", linewidth=1, label="Full Training"
    )
  ax.set_xlabel("% of labeled data")
  ax.set_ylabel(f"{'test' if split == 'test' else 'validation'} {metric_name(rows)} (%)")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def write_report(sweep: pathlib.Path, out: pathlib.Path | None = None) -> pathlib.Path:
  """Writes results.csv, accuracy.md (val_accuracy.md), times.md and accuracy.png; returns
  the folder."""
  rows = collect(sweep)
  out = out or sweep / "report"
  out.mkdir(parents=True, exist_ok=True)
  tables.write_csv(out / "results.csv", [dataclasses.asdict(r) for r in rows], CSV_COLUMNS)
  (out / "accuracy.md").write_text(accuracy_markdown(rows) + "\n")
  if on_split(rows, "val"):
    (out / "val_accuracy.md").write_text(accuracy_markdown(rows, "val") + "\n")
  (out / "times.md").write_text(times_markdown(rows) + "\n")
  plot(rows, out / "accuracy.png", sweep.name)
  return out

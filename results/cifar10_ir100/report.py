"""The CIFAR10-IR100 sweep's tables: accuracy per cycle and AULC paired with Random, learning
curves with bands, and the labels the rarest classes received.

Usage, from the repository root (the sweep folder of configs/cifar10_ir100_cpu.py's command):

  python results/cifar10_ir100/report.py workdirs/cifar10_ir100_cpu [results/cifar10_ir100]

Writes into the output folder: results.csv (every cycle of every run), accuracy.md and
val_accuracy.md (mean ± std per labeled count, AULC, and AULC minus Random's paired by seed
with its verdict), times.md, accuracy.png and val_accuracy.png (mean ± std bands; git ignores
them), disal_pairs.md (DISAL's AULC minus every other strategy's, the control random_dynamic
included, paired by seed, on both splits), and rare_classes.md: per strategy, the labels each
of the pool's five rarest classes holds after the last cycle (mean ± std over the finished
seeds), the five together, and the smallest class count; the pool's own counts and Random's
expectation on its first rows.
"""

import json
import pathlib
import sys

import ml_collections
import numpy as np

from disal_jax.data.registry import load_dataset
from disal_jax.report import sweep_report

RAREST = 5  # the classes counted: the pool's five smallest
DISAL = "disal"  # the strategy paired with every other in disal_pairs.md


def labeled_per_class(run: pathlib.Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """(C,) labels per class held after the last cycle of a run (labeled_round.npy: the round
  each pool row was labeled in, -1 for never)."""
  rounds = np.load(run / "labeled_round.npy")
  return np.bincount(labels[rounds >= 0], minlength=num_classes)


def finished(run: pathlib.Path, final_count: int) -> bool:
  """Whether the run's last cycle reached `final_count` labels."""
  cycles = json.loads((run / "results.json").read_text())["cycles"]
  return bool(cycles) and cycles[-1]["labeled"] == final_count


def rare_classes_markdown(sweep: pathlib.Path) -> str:
  """The rare-class table of `sweep` (see the module docstring)."""
  # the config the runs were made with, as the sweep wrote it (data_dir overrides included)
  config = ml_collections.ConfigDict(json.loads((sweep / "config.json").read_text()))
  dataset = load_dataset(config.data)
  labels = np.asarray(dataset.train_labels)
  num_classes = dataset.num_classes
  pool = np.bincount(labels, minlength=num_classes)
  rarest = np.argsort(pool, kind="stable")[:RAREST]
  final = int(config.al.final_count)
  names = [dataset.class_names[c] for c in rarest]
  head = (
    f"| strategy | seeds | {' | '.join(names)} | five rarest | smallest class |\n"
    "|---|---:|" + "---:|" * (RAREST + 2)
  )
  expected = pool * final / pool.sum()
  lines = [
    head,
    f"| pool ({pool.sum()} images) | | {' | '.join(str(pool[c]) for c in rarest)} "
    f"| {pool[rarest].sum()} | {pool.min()} |",
    f"| Random's expectation at {final} labels | | "
    + " | ".join(f"{expected[c]:.1f}" for c in rarest)
    + f" | {expected[rarest].sum():.1f} | {expected.min():.1f} |",
  ]
  cell = lambda values: f"{np.mean(values):.1f} ± {np.std(values):.1f}"
  for strategy in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name != "report"):
    runs = [r.parent for r in sorted(strategy.glob("seed_*/results.json"))]
    counts = np.array(
      [labeled_per_class(r, labels, num_classes) for r in runs if finished(r, final)]
    ).reshape(-1, num_classes)
    if not len(counts):
      continue
    lines.append(
      f"| {strategy.name} | {len(counts)} | "
      + " | ".join(cell(counts[:, c]) for c in rarest)
      + f" | {cell(counts[:, rarest].sum(axis=1))} | {cell(counts.min(axis=1))} |"
    )
  caption = (
    f"Labels per class after the last cycle ({final} labeled), the pool's {RAREST} rarest "
    "classes, mean ± std over the finished seeds."
  )
  return caption + "\n\n" + "\n".join(lines) + "\n"


def disal_pairs_markdown(rows: list[sweep_report.Row]) -> str:
  """DISAL's AULC minus each other strategy's, paired by seed, validation then test; '' while
  DISAL has no finished run."""
  sections = []
  for split, name in (("val", "Validation"), ("test", "Test")):
    on_split = sweep_report.on_split(rows, split)
    strategies = sweep_report.strategies_of(on_split)
    areas = {s: sweep_report.seed_aulcs(on_split, s) for s in strategies}
    if not areas.get(DISAL):
      return ""
    others = [s for s in strategies if s != DISAL]
    caption = f"{name}: DISAL's AULC minus each strategy's, paired by seed, in points."
    sections.append(
      caption
      + "\n\n"
      + "\n".join(sweep_report.paired_markdown(areas, DISAL, others, baseline_first=True))
    )
  return (
    "\n\n".join(sections) + "\n\n(mean ± std of the differences; a mean inside one std is a tie)\n"
  )


def main(sweep: pathlib.Path, out: pathlib.Path) -> None:
  sweep_report.write_report(sweep, out)
  rows = sweep_report.collect(sweep)
  sweep_report.plot(rows, out / "val_accuracy.png", f"{sweep.name} (validation)", split="val")
  (out / "rare_classes.md").write_text(rare_classes_markdown(sweep))
  pairs = disal_pairs_markdown(rows)
  if pairs:
    (out / "disal_pairs.md").write_text(pairs)
  print(f"wrote {out}")


if __name__ == "__main__":
  main(
    pathlib.Path(sys.argv[1]),
    pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "results/cifar10_ir100"),
  )

"""An ablation folder's table and learning curves (`python -m disal_jax.ablation` writes them).

The folder holds `<variant>/<strategy>/seed_<s>/results.json`, one variant per config.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Optional

import numpy as np

from disal_jax.report import sweep_report, tables


def _mean_std(values: list[float]) -> str:
  if not values:
    return ""
  return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def _strategy_dirs(workdir: pathlib.Path, name: str) -> list[pathlib.Path]:
  """A variant's AL strategy folders (Full Training's aside)."""
  return sorted(
    p for p in (workdir / name).glob("*") if p.is_dir() and p.name != sweep_report.FULL_TRAINING
  )


def _finished_runs(strategy_dir: pathlib.Path) -> dict[int, list[dict]]:
  """seed -> cycles of the runs that went furthest (the finished ones, once any finished)."""
  runs = {}
  for path in sorted(strategy_dir.glob("seed_*/results.json")):
    result = json.loads(path.read_text())
    if result["cycles"]:
      runs[int(result["seed"])] = result["cycles"]
  final = max((len(r) for r in runs.values()), default=0)
  return {seed: r for seed, r in runs.items() if len(r) == final}


def _aulc(cycles: list[dict], split: str) -> Optional[float]:
  """The run's area under its `split` learning curve, or None if a cycle lacks the split."""
  if any(c.get(f"{split}_accuracy") is None for c in cycles):
    return None
  return tables.aulc(
    np.array([c["labeled"] for c in cycles]), np.array([c[f"{split}_accuracy"] for c in cycles])
  )


def summarise(workdir: pathlib.Path, names: list[str]) -> str:
  """The ablation table (markdown) from `<workdir>/<variant>/<strategy>/seed_*/results.json`."""
  header = (
    "| variant | strategy | n | first val | first test | last val | last test | "
    "AULC val | AULC test | train s |"
  )
  lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name in names:
    for strategy_dir in _strategy_dirs(workdir, name):
      runs = list(_finished_runs(strategy_dir).values())
      if not runs:
        continue
      first = {
        s: [r[0][f"{s}_accuracy"] for r in runs if r[0].get(f"{s}_accuracy") is not None]
        for s in ("val", "test")
      }
      last = {
        s: [r[-1][f"{s}_accuracy"] for r in runs if r[-1].get(f"{s}_accuracy") is not None]
        for s in ("val", "test")
      }
      area = {s: [a for a in (_aulc(r, s) for r in runs) if a is not None] for s in ("val", "test")}
      seconds = np.mean([sum(c["train_seconds"] + c["record_seconds"] for c in r) for r in runs])
      cells = [
        _mean_std(first["val"]),
        _mean_std(first["test"]),
        _mean_std(last["val"]),
        _mean_std(last["test"]),
        _mean_std(area["val"]),
        _mean_std(area["test"]),
        f"{seconds:.0f}",
      ]
      lines.append(f"| {name} | {strategy_dir.name} | {len(runs)} | " + " | ".join(cells) + " |")
  lines.append(
    "\nAccuracy (%), mean ± std over seeds: the first and the last cycle, and the "
    "area under the learning curve divided by the labeled range. train s: train + "
    "record seconds per run."
  )
  return "\n".join(lines)


def paired(workdir: pathlib.Path, names: list[str], baseline: str) -> str:
  """Each variant's AULC minus `baseline`'s, paired by seed (markdown).

  Only seeds both have finished, with the same labeled counts, are paired. Per split: the
  per-seed differences in points, their mean ± (population) std, and the verdict: 'ahead' or
  'behind' when the mean is further from zero than one std of the differences, else 'tie'
  (one seed: no verdict). `baseline` must hold one AL strategy.
  """
  base_dirs = _strategy_dirs(workdir, baseline)
  if len(base_dirs) != 1:
    raise ValueError(
      f"the baseline variant {baseline!r} must hold one AL strategy's runs; "
      f"{workdir / baseline} holds {[p.name for p in base_dirs]}"
    )
  base = _finished_runs(base_dirs[0])
  lines = [
    tables.paired_caption(baseline) + "\n",
    "| variant | strategy | seeds | val: per seed | val | test: per seed | test |",
    "|---|---|---|---|---|---|---|",
  ]
  for name in names:
    if name == baseline:
      continue
    for strategy_dir in _strategy_dirs(workdir, name):
      runs = _finished_runs(strategy_dir)
      seeds = [
        s
        for s in sorted(runs)
        if s in base and [c["labeled"] for c in runs[s]] == [c["labeled"] for c in base[s]]
      ]
      if not seeds:
        continue
      cells = []
      for split in ("val", "test"):
        mine, theirs = (
          {s: a for s in seeds if (a := _aulc(r[s], split)) is not None} for r in (runs, base)
        )
        _, differences = tables.paired_differences(mine, theirs)
        cells += list(tables.paired_cells(differences)) if differences.size else ["", ""]
      lines.append(
        f"| {name} | {strategy_dir.name} | {','.join(map(str, seeds))} | "
        + " | ".join(cells)
        + " |"
      )
  return "\n".join(lines)


def learning_curve_rows(workdir: pathlib.Path, names: list[str]) -> list[sweep_report.Row]:
  """Every cycle of the named variants' runs, one line per variant (per `variant/strategy`
  where a variant ran several strategies); Full Training keeps its name (the dashed line)."""
  rows = []
  for name in names:
    try:
      mine = sweep_report.collect(workdir / name)
    except FileNotFoundError:
      continue  # nothing finished a cycle yet
    strategies = sweep_report.strategies_of(mine)
    for r in mine:
      if r.strategy == sweep_report.FULL_TRAINING:
        label = r.strategy
      else:
        label = name if len(strategies) == 1 else f"{name}/{r.strategy}"
      rows.append(dataclasses.replace(r, strategy=label))
  return rows


def write_plots(workdir: pathlib.Path, names: list[str]) -> list[pathlib.Path]:
  """ablation_<split>.png for each split the runs hold; returns the files written."""
  rows = learning_curve_rows(workdir, names)
  written = []
  for split in ("val", "test"):
    if sweep_report.on_split(rows, split):
      path = workdir / f"ablation_{split}.png"
      sweep_report.plot(rows, path, workdir.name, split)
      written.append(path)
  return written

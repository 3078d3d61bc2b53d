"""An ablation folder's table and learning curves (`python -m disal_jax.ablation` writes them).

The folder holds `<variant>/<strategy>/seed_<s>/results.json`, one variant per config.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np

from disal_jax.report import sweep_report, tables


def _mean_std(values: list[float]) -> str:
  if not values:
    return ""
  return f"{100 * np.mean(values):.2f} ± {100 * np.std(values):.2f}"


def summarise(workdir: pathlib.Path, names: list[str]) -> str:
  """The ablation table (markdown) from `<workdir>/<variant>/<strategy>/seed_*/results.json`."""
  header = ("| variant | strategy | n | first val | first test | last val | last test | "
            "AULC val | AULC test | train s |")
  lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for name in names:
    for strategy_dir in sorted(p for p in (workdir / name).glob("*") if p.is_dir()):
      if strategy_dir.name == sweep_report.FULL_TRAINING:
        continue
      runs = [json.loads(p.read_text())["cycles"]
              for p in sorted(strategy_dir.glob("seed_*/results.json"))]
      runs = [r for r in runs if r]
      if not runs:
        continue
      final = max(len(r) for r in runs)
      runs = [r for r in runs if len(r) == final]  # finished (or equally far) runs only
      first = {s: [r[0][f"{s}_accuracy"] for r in runs if r[0].get(f"{s}_accuracy") is not None]
               for s in ("val", "test")}
      last = {s: [r[-1][f"{s}_accuracy"] for r in runs if r[-1].get(f"{s}_accuracy") is not None]
              for s in ("val", "test")}
      area = {s: [tables.aulc(np.array([c["labeled"] for c in r]),
                              np.array([c[f"{s}_accuracy"] for c in r]))
                  for r in runs if all(c.get(f"{s}_accuracy") is not None for c in r)]
              for s in ("val", "test")}
      seconds = np.mean([sum(c["train_seconds"] + c["record_seconds"] for c in r) for r in runs])
      cells = [_mean_std(first["val"]), _mean_std(first["test"]), _mean_std(last["val"]),
               _mean_std(last["test"]), _mean_std(area["val"]), _mean_std(area["test"]),
               f"{seconds:.0f}"]
      lines.append(f"| {name} | {strategy_dir.name} | {len(runs)} | " + " | ".join(cells) + " |")
  lines.append("\nAccuracy (%), mean ± std over seeds: the first and the last cycle, and the "
               "area under the learning curve divided by the labeled range. train s: train + "
               "record seconds per run.")
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

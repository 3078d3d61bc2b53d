"""Runs named config variants x seeds and tabulates them on validation and test.

  python -m disal_jax.ablation --config=configs/default.py --workdir=workdirs/ablation \\
      --variant=random:strategies=random \\
      --variant=mse_rampup:disal.dynamic_loss=mse,disal.weight_schedule=rampup \\
      --seeds=0,1,2 --config.data.val_fraction=0.1

Each variant is the base config with its dotted overrides (`key=value`, comma-separated;
values parsed as Python literals where they can be) and runs the config's strategies (one
strategy per variant is the usual use) into `<workdir>/<variant>/`, resumably, as
`disal_jax.main` would. `<workdir>/ablation.md` then holds one row per (variant, strategy):
mean ± std over seeds of the first cycle's and the last cycle's accuracy and of the AULC,
on the validation split and on the test split, and the mean train seconds per run. Choose
on the validation columns; the test columns are reported, not chosen on.
"""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, loop
from disal_jax.report import tables
from disal_jax.variants import finished, parse_variant, variant_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.",
                                          lock_config=True)
_VARIANTS = flags.DEFINE_multi_string(
    "variant", [], "name:key=value,key=value (dotted config keys); repeat for each variant.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The ablation folder.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Only (re)write ablation.md.")


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
      if strategy_dir.name == loop.FULL_TRAINING:
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  workdir = pathlib.Path(_WORKDIR.value)
  try:
    variants = [parse_variant(v) for v in _VARIANTS.value]
    configs = [variant_config(_CONFIG.value, overrides) for _, overrides in variants]
  except (ValueError, KeyError) as e:
    raise app.UsageError(str(e)) from e
  if not variants:
    raise app.UsageError("give at least one --variant")
  if not _TABLE_ONLY.value:
    seeds = [int(s) for s in _SEEDS.value]
    for seed in seeds:  # seed-major: every variant gets its first seed before any its second
      for (name, _), variant in zip(variants, configs):
        config = variant.copy_and_resolve_references()
        config.seed = seed
        if finished(config, workdir / name):
          logging.info("%s seed %d: finished (results.json complete); skipped", name, seed)
          continue
        loop.run_experiment(config, str(workdir / name))
  workdir.mkdir(parents=True, exist_ok=True)
  table = summarise(workdir, [name for name, _ in variants])
  (workdir / "ablation.md").write_text(table + "\n")
  print(table, flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)

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
on the validation split and on the test split, and the mean train seconds per run;
`ablation_val.png` and `ablation_test.png` draw the variants' learning curves (mean ± std).
`--baseline=random` adds each variant's AULC minus that variant's, paired by seed, with
mean ± std of the differences and the verdict (a mean inside one std is a tie).
Choose on the validation columns; the test columns are reported, not chosen on.
"""

from __future__ import annotations

import logging
import pathlib

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, loop
from disal_jax.report import ablation_report
from disal_jax.variants import finished, parse_variant, variant_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.",
                                          lock_config=True)
_VARIANTS = flags.DEFINE_multi_string(
    "variant", [], "name:key=value,key=value (dotted config keys); repeat for each variant.")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The ablation folder.")
_TABLE_ONLY = flags.DEFINE_bool("table_only", False, "Only (re)write ablation.md and its plots.")
_BASELINE = flags.DEFINE_string(
    "baseline", None, "A variant (one strategy, e.g. random) to pair the others' AULC with, "
    "seed by seed, in a second table of ablation.md.")


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
  names = [name for name, _ in variants]
  if _BASELINE.value is not None and _BASELINE.value not in names:
    raise app.UsageError(f"--baseline={_BASELINE.value} is not one of the variants {names}")
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
  table = ablation_report.summarise(workdir, names)
  if _BASELINE.value is not None:
    table += "\n\n" + ablation_report.paired(workdir, names, _BASELINE.value)
  (workdir / "ablation.md").write_text(table + "\n")
  ablation_report.write_plots(workdir, names)
  print(table, flush=True)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)

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

import dataclasses
import functools
import logging
import pathlib

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, loop
from disal_jax.report import ablation_report
from disal_jax.variants import finished, parse_variant, variant_config


@dataclasses.dataclass(frozen=True)
class Flags:
  """This command's flags (`define_flags`)."""

  config: flags.FlagHolder
  variants: flags.FlagHolder
  seeds: flags.FlagHolder
  workdir: flags.FlagHolder
  table_only: flags.FlagHolder
  baseline: flags.FlagHolder


def define_flags() -> Flags:
  """Defines this command's flags on absl's FLAGS. Called when the command runs, never at
  import: importing this module defines no flag."""
  defined = Flags(
    config_flags.DEFINE_config_file(
      "config", None, "Base experiment config file.", lock_config=True
    ),
    flags.DEFINE_multi_string(
      "variant", [], "name:key=value,key=value (dotted config keys); repeat for each variant."
    ),
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run."),
    flags.DEFINE_string("workdir", None, "The ablation folder."),
    flags.DEFINE_bool("table_only", False, "Only (re)write ablation.md and its plots."),
    flags.DEFINE_string(
      "baseline",
      None,
      "A variant (one strategy, e.g. random) to pair the others' AULC "
      "with, seed by seed, in a second table of ablation.md.",
    ),
  )
  flags.mark_flags_as_required(["config", "workdir"])
  return defined


def main(argv: list[str], args: Flags) -> None:
  """Runs each --variant over --seeds (finished runs skipped) and writes the comparison table."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  workdir = pathlib.Path(args.workdir.value)
  baseline = args.baseline.value
  try:
    variants = [parse_variant(v) for v in args.variants.value]
    configs = [variant_config(args.config.value, overrides) for _, overrides in variants]
  except (ValueError, KeyError) as e:
    raise app.UsageError(str(e)) from e
  if not variants:
    raise app.UsageError("give at least one --variant")
  names = [name for name, _ in variants]
  if baseline is not None and baseline not in names:
    raise app.UsageError(f"--baseline={baseline} is not one of the variants {names}")
  if not args.table_only.value:
    seeds = [int(s) for s in args.seeds.value]
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
  if baseline is not None:
    table += "\n\n" + ablation_report.paired(workdir, names, baseline)
  (workdir / "ablation.md").write_text(table + "\n")
  ablation_report.write_plots(workdir, names)
  print(table, flush=True)


if __name__ == "__main__":
  cli.run(functools.partial(main, args=define_flags()))

"""Runs an active-learning experiment: python -m disal_jax.main --config=configs/default.py

Flags: --config (an ml_collections config file; override keys with --config.seed=3 etc.;
an unknown key fails at once), --workdir (where results, logs, indices and checkpoints are
written; rerunning the same command resumes there) and --force (start over).

Several hosts: start the same command on every host with --distributed (docs/multihost.md:
"Running on a TPU VM pod / several GPU hosts"); --coordinator_address, --num_processes and
--process_id are read from the cluster environment when left out.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, distributed, loop


@dataclasses.dataclass(frozen=True)
class Flags:
  """This command's flags (`define_flags`)."""

  config: flags.FlagHolder
  workdir: flags.FlagHolder
  force: flags.FlagHolder
  distributed: distributed.Flags


def define_flags() -> Flags:
  """Defines this command's flags on absl's FLAGS. Called when the command runs, never at
  import: importing this module defines no flag, so entry modules can share a process."""
  defined = Flags(
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True),
    flags.DEFINE_string("workdir", "workdirs/default", "Output directory."),
    flags.DEFINE_bool(
      "force",
      False,
      "Discard this config's runs already in --workdir "
      "and start over (needed when their config differs).",
    ),
    distributed.define_flags(),
  )
  flags.mark_flags_as_required(["config"])
  return defined


def main(argv: list[str], args: Flags) -> None:
  """Runs the experiment that --config describes in --workdir (absl's app.run entry point)."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  args.distributed.initialize()
  loop.run_experiment(args.config.value, args.workdir.value, force=args.force.value)


if __name__ == "__main__":
  cli.run(functools.partial(main, args=define_flags()))

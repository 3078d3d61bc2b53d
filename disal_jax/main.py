"""Runs an active-learning experiment: python -m disal_jax.main --config=configs/default.py

Flags: --config (an ml_collections config file; override keys with --config.seed=3 etc.;
an unknown key fails at once), --workdir (where results, logs, indices and checkpoints are
written; rerunning the same command resumes there) and --force (start over).

Several hosts: start the same command on every host with --distributed (docs/multihost.md:
"Running on a TPU VM pod / several GPU hosts"); --coordinator_address, --num_processes and
--process_id are read from the cluster environment when left out.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, distributed, loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/default", "Output directory.")
_FORCE = flags.DEFINE_bool("force", False, "Discard this config's runs already in --workdir "
                           "and start over (needed when their config differs).")
_DISTRIBUTED = distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  _DISTRIBUTED.initialize()
  loop.run_experiment(_CONFIG.value, _WORKDIR.value, force=_FORCE.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  cli.run(main)

"""Runs every (strategy, seed) pair of a config into one sweep folder, resumably.

  python -m disal_jax.sweep --config=configs/cifar10_cpu.py --strategies=disal,random \\
      --seeds=0,1,2 --workdir=workdirs/sweep_cifar10_cpu
  python -m disal_jax.report workdirs/sweep_cifar10_cpu

Each pair runs in its own folder `<workdir>/<strategy>/seed_<s>/` with its own checkpoints,
so an interrupted sweep continues where it stopped when the same command runs again, and
finished pairs are skipped. Full Training runs once per seed (unless
--config.full_training=False). --distributed and its flags run the sweep on several hosts, as
for disal_jax.main.
"""

from __future__ import annotations

import logging

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, distributed, loop

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_STRATEGIES = flags.DEFINE_list("strategies", None,
                                "Strategies to run (default: the config's).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run.")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep folder.")
_FORCE = flags.DEFINE_bool("force", False, "Discard existing runs of these pairs first.")
_DISTRIBUTED = distributed.define_flags()


def parse_seeds(values: list[str]) -> list[int]:
  try:
    seeds = [int(v) for v in values]
  except ValueError as e:
    raise app.UsageError(f"--seeds takes integers, got {values}") from e
  if len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds names a seed twice: {values}")
  return seeds


def run_sweep(config, strategies: list[str] | None, seeds: list[int], workdir: str,
              force: bool = False) -> dict[int, dict[str, list]]:
  """Runs run_experiment once per seed with the given strategies; returns {seed: results}."""
  results = {}
  for seed in seeds:
    seed_config = config.copy_and_resolve_references()
    seed_config.seed = seed
    if strategies:
      seed_config.strategies = ",".join(strategies)
    logging.info("sweep: seed %d, strategies %s", seed, seed_config.strategies)
    results[seed] = loop.run_experiment(seed_config, workdir, force=force)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  _DISTRIBUTED.initialize()
  run_sweep(_CONFIG.value, _STRATEGIES.value, parse_seeds(_SEEDS.value), _WORKDIR.value,
            _FORCE.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  cli.run(main)

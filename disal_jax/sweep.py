"""Runs every (strategy, seed) pair of a config into one sweep folder, resumably.

  python -m disal_jax.sweep --config=configs/cifar10_cpu.py --strategies=disal,random \\
      --seeds=0,1,2 --workdir=workdirs/sweep_cifar10_cpu [--workers=N]
  python -m disal_jax.report workdirs/sweep_cifar10_cpu

Each pair runs in its own folder `<workdir>/<strategy>/seed_<s>/` with its own checkpoints,
so an interrupted sweep continues where it stopped when the same command runs again, and
finished pairs are skipped. Full Training runs once per seed (unless
--config.full_training=False).

Several workers share a sweep: --workers=N starts N worker processes (each with
--devices_per_worker of the machine's GPUs, if given), or start the same command N times
yourself (on one machine or several sharing the folder). A worker takes the next pair whose
run lock it can get (disal_jax.run_lock), skips pairs that are finished or held by another
worker, and stops when none is left; the last worker to find every pair finished writes
the report (<workdir>/report). --distributed and its flags run one sweep on several hosts as
one job, as for disal_jax.main (not with --workers).
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import logging
import os
import pathlib
import shutil
import subprocess
import sys

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli, distributed, loop, run_lock
from disal_jax.data.registry import load_dataset
from disal_jax.report import sweep_report


@dataclasses.dataclass(frozen=True)
class Flags:
  """This command's flags (`define_flags`)."""

  config: flags.FlagHolder
  strategies: flags.FlagHolder
  seeds: flags.FlagHolder
  workdir: flags.FlagHolder
  force: flags.FlagHolder
  workers: flags.FlagHolder
  devices_per_worker: flags.FlagHolder
  distributed: distributed.Flags


def define_flags() -> Flags:
  """Defines this command's flags on absl's FLAGS. Called when the command runs, never at
  import: importing this module (`run_sweep` and the rest) defines no flag."""
  defined = Flags(
    config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True),
    flags.DEFINE_list("strategies", None, "Strategies to run (default: the config's)."),
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run."),
    flags.DEFINE_string("workdir", None, "The sweep folder."),
    flags.DEFINE_bool("force", False, "Discard existing runs of these pairs first."),
    flags.DEFINE_integer("workers", 1, "Worker processes sharing the sweep."),
    flags.DEFINE_integer(
      "devices_per_worker",
      0,
      "With --workers: give worker i GPUs i*k .. i*k+k-1 "
      "(CUDA_VISIBLE_DEVICES); 0 = every worker sees every device.",
    ),
    distributed.define_flags(),
  )
  flags.mark_flags_as_required(["config", "workdir"])
  return defined


def parse_seeds(values: list[str]) -> list[int]:
  """The --seeds values as integers; UsageError for a non-integer or a repeated seed."""
  try:
    seeds = [int(v) for v in values]
  except ValueError as e:
    raise app.UsageError(f"--seeds takes integers, got {values}") from e
  if len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds names a seed twice: {values}")
  return seeds


def _seed_config(config, seed: int, strategies: list[str] | None):
  seed_config = config.copy_and_resolve_references()
  seed_config.seed = seed
  if strategies:
    seed_config.strategies = ",".join(strategies)
  return seed_config


def pairs(config, strategies: list[str] | None, seeds: list[int]) -> list[tuple[object, str]]:
  """(seed config, run name) of every pair of the sweep, seed by seed."""
  out = []
  for seed in seeds:
    seed_config = _seed_config(config, seed, strategies)
    out.extend((seed_config, name) for name in loop.run_names(seed_config))
  return out


def discard(config, strategies: list[str] | None, seeds: list[int], workdir: str) -> None:
  """--force: removes every pair's run folder, each under its lock (a pair another process
  is running stops this with RunLocked)."""
  for seed_config, name in pairs(config, strategies, seeds):
    folder = loop.run_dir(pathlib.Path(workdir), name, seed_config.seed)
    with run_lock.hold([folder]):
      if folder.exists():
        logging.info("--force: discarding %s", folder)
        shutil.rmtree(folder)


def run_sweep(
  config, strategies: list[str] | None, seeds: list[int], workdir: str, force: bool = False
) -> dict[int, dict[str, list]]:
  """One worker's pass over the sweep; returns {seed: {name: records}} of the pairs it ran.

  Pairs already finished, or run by another process (their lock is held), are skipped; when
  every pair is finished the worker writes the report, unless another is writing it.
  """
  if force:
    discard(config, strategies, seeds, workdir)
  workdir_path = pathlib.Path(workdir)
  dataset = None
  results: dict[int, dict[str, list]] = {}
  for seed_config, name in pairs(config, strategies, seeds):
    seed = seed_config.seed
    if loop.run_finished(seed_config, workdir_path, name):
      logging.info("sweep: %s seed %d finished; skipped", name, seed)
      continue
    if dataset is None:
      dataset = load_dataset(seed_config.data)
    try:
      ran = loop.run_experiment(seed_config, workdir, dataset=dataset, only=[name])
    except run_lock.RunLocked:
      logging.info(
        "sweep: %s seed %d is being run by %s; skipped",
        name,
        seed,
        run_lock.holder(loop.run_dir(workdir_path, name, seed)),
      )
      continue
    results.setdefault(seed, {}).update(ran)
  left = [
    (c.seed, name)
    for c, name in pairs(config, strategies, seeds)
    if not loop.run_finished(c, workdir_path, name)
  ]
  if left:
    logging.info(
      "sweep: %d pair(s) not finished, held by other workers or stopped: %s", len(left), left
    )
  elif distributed.is_primary():
    _write_report_once(workdir_path)
  return results


def _write_report_once(workdir: pathlib.Path) -> None:
  """Writes the report unless another worker is writing it at this moment."""
  with open(workdir / "report.lock", "w") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      return
    out = sweep_report.write_report(workdir)
    logging.info("sweep: every pair finished; report written to %s", out)


def _spawn_workers(count: int, devices_per_worker: int) -> int:
  """Starts `count` copies of this command as single workers; the worst exit status."""
  argv = [
    a for a in sys.argv[1:] if not a.startswith(("--workers", "--force", "--devices_per_worker"))
  ]
  procs = []
  for i in range(count):
    env = dict(os.environ)
    if devices_per_worker:
      env["CUDA_VISIBLE_DEVICES"] = ",".join(
        str(d) for d in range(i * devices_per_worker, (i + 1) * devices_per_worker)
      )
    procs.append(
      subprocess.Popen([sys.executable, "-m", "disal_jax.sweep", *argv, "--workers=1"], env=env)
    )
  return max(p.wait() for p in procs)


def main(argv: list[str], args: Flags) -> None:
  """Runs the sweep: every strategy and seed, on --workers processes."""
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  seeds = parse_seeds(args.seeds.value)
  workers = args.workers.value
  if workers < 1:
    raise app.UsageError(f"--workers={workers}: give 1 or more")
  if workers > 1:
    if args.distributed.distributed.value:
      raise app.UsageError(
        "--workers runs independent processes; --distributed runs one "
        "job over several hosts: use one or the other"
      )
    if args.force.value:  # once, before any worker starts
      discard(args.config.value, args.strategies.value, seeds, args.workdir.value)
    status = _spawn_workers(workers, args.devices_per_worker.value)
    if status:
      sys.exit(status)
    return
  args.distributed.initialize()
  run_sweep(args.config.value, args.strategies.value, seeds, args.workdir.value, args.force.value)


if __name__ == "__main__":
  cli.run(functools.partial(main, args=define_flags()))

"""One process per run folder (disal_jax.run_lock), and several sweep workers sharing a sweep."""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from disal_jax import run_lock
from tests.helpers import REPO, subprocess_env, xla_flags

HOLD = """
import pathlib, sys, time
from disal_jax import run_lock
assert run_lock.try_acquire(pathlib.Path(sys.argv[1])) is not None
print("held", flush=True)
time.sleep(120)
"""


def _holder(run_dir):
  """A process that takes the run's lock and sleeps; returned once it holds it."""
  proc = subprocess.Popen(
    [sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True
  )
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_held_run_is_refused_naming_its_holder_and_a_dead_ones_taken_over(tmp_path, caplog):
  run = tmp_path / "disal" / "seed_0"
  proc = _holder(run)
  try:
    assert run_lock.try_acquire(run) is None
    with pytest.raises(run_lock.RunLocked, match=f"in use by process {proc.pid} on host"):
      with run_lock.hold([tmp_path / "random" / "seed_0", run]):
        pass
    # holding none: the first run of the list was released when the second was refused
    fd = run_lock.try_acquire(tmp_path / "random" / "seed_0")
    assert fd is not None and fd >= 0
    run_lock.release(fd)
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  caplog.set_level(logging.WARNING, logger="disal_jax.run_lock")
  fd = run_lock.try_acquire(run)  # the killed holder's lock: taken over, and said so
  assert fd is not None and fd >= 0
  assert f"process {proc.pid} on host" in caplog.text and "taking it over" in caplog.text
  assert json.loads(run_lock.lock_path(run).read_text())["pid"] == os.getpid()
  run_lock.release(fd)
  caplog.clear()
  run_lock.release(run_lock.try_acquire(run))  # a clean release leaves nothing to take over
  assert "taking it over" not in caplog.text


def _main(workdir, *extra):
  return [
    sys.executable,
    "-m",
    "disal_jax.main",
    "--config=configs/default.py:quick",
    f"--workdir={workdir}",
    "--config.strategies=random",
    "--config.full_training=False",
    *extra,
  ]


def _selections(run_dir):
  return [np.load(p).tolist() for p in sorted(run_dir.glob("selected_cycle*.npy"))]


def _accuracies(run_dir):
  return [c["test_accuracy"] for c in json.loads((run_dir / "results.json").read_text())["cycles"]]


@pytest.mark.slow
def test_a_second_process_on_a_running_run_exits_2_and_the_first_is_unharmed(tmp_path):
  env = subprocess_env(XLA_FLAGS=xla_flags())
  first = subprocess.Popen(
    _main(tmp_path / "a"),
    cwd=REPO,
    env=env,
    text=True,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
  )
  lock = run_lock.lock_path(tmp_path / "a" / "random" / "seed_0")
  deadline = time.time() + 120
  while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
    time.sleep(0.2)
  second = subprocess.run(
    _main(tmp_path / "a"), cwd=REPO, env=env, text=True, capture_output=True, timeout=300
  )
  out, err = first.communicate(timeout=600)
  assert first.returncode == 0, err[-2000:]
  assert second.returncode == 2
  lines = [line for line in second.stderr.splitlines() if line.startswith("error:")]
  assert len(lines) == 1 and f"in use by process {first.pid} on host" in lines[0]
  alone = subprocess.run(
    _main(tmp_path / "b"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600
  )
  assert alone.returncode == 0, alone.stderr[-2000:]
  a, b = tmp_path / "a" / "random" / "seed_0", tmp_path / "b" / "random" / "seed_0"
  assert _selections(a) == _selections(b) and _selections(a)
  assert _accuracies(a) == _accuracies(b)
  assert not lock.read_text().strip()  # released at the end


@pytest.mark.slow
def test_two_sweep_workers_run_every_pair_once_as_one_worker_does(tmp_path):
  env = subprocess_env(XLA_FLAGS=xla_flags())
  common = [
    "--config=configs/default.py:quick",
    "--strategies=random,coreset",
    "--seeds=0,1",
    "--config.full_training=False",
  ]
  for workdir, workers in (("two", 2), ("one", 1)):
    out = subprocess.run(
      [
        sys.executable,
        "-m",
        "disal_jax.sweep",
        *common,
        f"--workdir={tmp_path / workdir}",
        f"--workers={workers}",
      ],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
  for strategy in ("random", "coreset"):
    for seed in (0, 1):
      two = tmp_path / "two" / strategy / f"seed_{seed}"
      one = tmp_path / "one" / strategy / f"seed_{seed}"
      assert _selections(two) == _selections(one) and _selections(two)
      assert _accuracies(two) == _accuracies(one)
      epochs = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
      first_epochs = [e for e in epochs if e.get("cycle") == 0 and e.get("epoch") == 1]
      assert len(first_epochs) == 1  # run once: a second worker would have written it again
  assert (tmp_path / "two" / "report" / "accuracy.md").exists()

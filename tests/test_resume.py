"""Interruption, resume and fault handling: orbax checkpoints, SIGKILL, corruption, bad config."""

import json
import pathlib
import signal
import subprocess
import sys

import numpy as np
import pytest

from disal_jax import checkpoint, loop
from disal_jax.training.trainer import TrainingDiverged
from tests.helpers import REPO, subprocess_env, tiny_config

pytestmark = pytest.mark.slow  # whole runs or subprocesses: not in the quick tier

# DISAL exercises every piece of a checkpoint: the record, the start parameters, the hook.
RUN_ARGS = [
  "--config=configs/default.py:quick",
  "--config.strategies=disal",
  "--config.model.width=4",
  "--config.train.epochs=3",
  "--config.al.final_fraction=0.25",
  "--config.full_training=False",
  "--config.checkpoint.every_epochs=1",
  "--config.data.max_train=400",
]
TAG = "disal seed 0"
CYCLES = 4  # 10%, 15%, 20%, 25% of 400


def _main(workdir, kill_at=""):
  env = subprocess_env()
  env.pop("DISAL_JAX_KILL_AT", None)
  if kill_at:
    env["DISAL_JAX_KILL_AT"] = kill_at
  return subprocess.run(
    [sys.executable, "-m", "disal_jax.main", *RUN_ARGS, f"--workdir={workdir}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
    env=env,
  )


def _outcome(workdir: pathlib.Path):
  run = workdir / "disal" / "seed_0"
  selected = [np.load(run / f"selected_cycle{c}.npy") for c in range(CYCLES - 1)]
  cycles = json.loads((run / "results.json").read_text())["cycles"]
  return selected, [(c["labeled"], c["test_accuracy"], c["test_loss"]) for c in cycles]


def _assert_same(a, b):
  (sel_a, metrics_a), (sel_b, metrics_b) = a, b
  for x, y in zip(sel_a, sel_b, strict=True):
    np.testing.assert_array_equal(x, y)
  assert [m[0] for m in metrics_a] == [m[0] for m in metrics_b]
  np.testing.assert_allclose(
    [m[1:] for m in metrics_a], [m[1:] for m in metrics_b], rtol=1e-6, atol=1e-7
  )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  out = _main(workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  return _outcome(workdir)


def test_killed_mid_epoch_and_mid_selection_resumes_to_the_same_run(uninterrupted, tmp_path):
  killed = _main(tmp_path, kill_at=f"train:{TAG}:1:1:1")  # cycle 1, 2nd epoch, 2nd step
  assert killed.returncode == -signal.SIGKILL
  assert not (tmp_path / "disal/seed_0/selected_cycle1.npy").exists()
  killed = _main(tmp_path, kill_at=f"select:{TAG}:2")  # before cycle 2's selection
  assert killed.returncode == -signal.SIGKILL
  assert "resuming from checkpoint" in killed.stderr
  assert not (tmp_path / "disal/seed_0/selected_cycle2.npy").exists()
  resumed = _main(tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  _assert_same(_outcome(tmp_path), uninterrupted)


def _corrupt_newest(run: pathlib.Path) -> int:
  ckpt = checkpoint.RunCheckpointer(run / "checkpoints", keep=3)
  newest = ckpt.steps()[-1]
  ckpt.close()
  data = [
    p
    for p in (run / "checkpoints" / str(newest) / "arrays").rglob("*")
    if p.is_file() and p.parent.name == "d"
  ]
  assert data, "no array data files found to corrupt"
  for path in data:
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob[: len(blob) - 7]))  # flipped and truncated
  return newest


def test_a_corrupt_newest_checkpoint_is_reported_and_the_one_before_used(uninterrupted, tmp_path):
  killed = _main(tmp_path, kill_at=f"train:{TAG}:2:2:0")
  assert killed.returncode == -signal.SIGKILL
  newest = _corrupt_newest(tmp_path / "disal/seed_0")
  resumed = _main(tmp_path)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f"checkpoint {newest} in" in resumed.stderr and "corrupt" in resumed.stderr
  _assert_same(_outcome(tmp_path), uninterrupted)


# -- in-process -------------------------------------------------------------------------
def _quick(**overrides):
  return tiny_config(
    **{"strategies": "random", "data.max_train": 400, "checkpoint.every_epochs": 1, **overrides}
  )


def test_a_finished_run_is_not_redone(tmp_path):
  first = loop.run_experiment(_quick(), str(tmp_path))
  lines = (tmp_path / "random/seed_0/metrics.jsonl").read_text().count("\n")
  second = loop.run_experiment(_quick(), str(tmp_path))
  assert [r.test_accuracy for r in second["random"]] == [r.test_accuracy for r in first["random"]]
  assert (tmp_path / "random/seed_0/metrics.jsonl").read_text().count("\n") == lines


def test_a_different_config_refuses_to_resume_and_names_the_keys(tmp_path):
  loop.run_experiment(_quick(), str(tmp_path))
  changed = _quick(**{"train.epochs": 3, "train.learning_rate": 0.01})
  with pytest.raises(checkpoint.ConfigMismatchError) as e:
    loop.run_experiment(changed, str(tmp_path))
  message = str(e.value)
  assert "train.epochs: 2 -> 3" in message and "train.learning_rate" in message
  assert "--force" in message and "train.batch_size" not in message
  # keys that do not change results may differ, and so may the keys of strategies the run
  # does not read (Random reads no strategy section)
  loop.run_experiment(
    _quick(**{"train.log_every_epochs": 5, "disal.branch_start_fraction": 0.25}), str(tmp_path)
  )
  rows = loop.run_experiment(changed, str(tmp_path), force=True)["random"]
  assert (
    json.loads((tmp_path / "random/seed_0/run_config.json").read_text())["train"]["epochs"] == 3
    and len(rows) == 2
  )


def test_non_finite_loss_names_cycle_epoch_and_step_and_keeps_good_checkpoints(tmp_path):
  # lr x 1e30 from the third epoch on: the weights blow up there.
  config = _quick(**{"train.epochs": 3, "train.lr_decay_at": 0.67, "train.lr_decay_factor": 1e30})
  with pytest.raises(TrainingDiverged, match=r"cycle 0, epoch 3, step \d+ of 2"):
    loop.run_experiment(config, str(tmp_path))
  ckpt = checkpoint.RunCheckpointer(tmp_path / "random/seed_0/checkpoints", keep=3)
  assert ckpt.steps() == [1, 2]  # epochs 1 and 2 of cycle 0; nothing of epoch 3
  assert ckpt.restore_newest(lambda meta: _template_for(config, tmp_path, meta))[0] == 2
  ckpt.close()


def _template_for(config, tmp_path, meta):
  """The structure of a mid-cycle checkpoint of the `random` run (for restore checks)."""
  import jax

  from disal_jax.data.registry import load_dataset
  from disal_jax.models.registry import build_model
  from disal_jax.training import sharding
  from disal_jax.training.trainer import Trainer

  dataset = load_dataset(config.data)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh()
  )
  p = trainer.progress_template("none", 64)
  assert meta["has_progress"]
  return {
    "labeled_round": jax.ShapeDtypeStruct((400,), np.int32),
    "progress": {"state": p.state, "start_params": p.start_params, "record": None},
  }

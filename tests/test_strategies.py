"""The loop-level contract, through run_experiment on a tiny problem, for strategies that
stand for each way a strategy meets the loop: no record (random), a train-step hook and a
record (disal), epoch callbacks (tracincp_*), files kept between cycles (tod). Every
registered strategy's unit-level contract is tests/test_strategy_contract.py; VAAL runs
through the loop in tests/test_vaal.py, CoreSet in tests/test_distributed.py and
tests/test_run_lock.py."""

import json

import numpy as np
import pytest

from disal_jax import loop, pool
from disal_jax.strategies import registry
from tests.helpers import tiny_config

pytestmark = pytest.mark.slow  # whole runs or subprocesses: not in the quick tier

NAMES = ["random", "disal", "tracincp_full", "tracincp_last", "tod"]
# Run a second time to check that the same seed picks the same rows through the loop (a hook
# with module state and a record, the files TOD keeps between cycles).
REPEATED = ["disal", "tod"]


def _config(names=NAMES):
  # 400 digits, 40 labeled then +20: every strategy's full path in seconds.
  return tiny_config(
    **{
      "strategies": ",".join(names),
      "data.max_train": 400,
      "train.eval_batch_size": 64,
      "gradnorm.chunk_size": 8,
      "tracin.chunk_size": 8,
      "tracin.store": "disk",
    }
  )


@pytest.fixture(scope="module")
def twice(tmp_path_factory):
  """Every strategy run once, the REPEATED ones twice, with the same seed, in separate
  workdirs."""
  runs = []
  for name, names in (("a", NAMES), ("b", REPEATED)):
    workdir = tmp_path_factory.mktemp(name)
    runs.append((workdir, loop.run_experiment(_config(names), str(workdir))))
  return runs


def test_the_registry_lists_every_strategy_of_this_issue():
  for name in (
    "disal",
    "random",
    "mc_dropout",
    "coreset",
    "gradnorm_entropy",
    "gradnorm_expected",
    "tracincp_full",
    "tracincp_last",
    "learning_loss",
    "tidal",
    "coregcn",
    "uncertaingcn",
    "tod",
    "vaal",
    "entropy",
    "margin",
    "least_confidence",
    "badge",
    "typiclust",
    "probcover",
    "batchbald",
  ):
    assert name in registry.names()


@pytest.mark.parametrize("name", NAMES)
def test_selection_is_not_an_artefact_of_row_order(twice, name):
  """The loop's pool.add_labels already refuses duplicates, labeled or out-of-range rows;
  what it cannot see is a strategy whose ties (or a bug) fall to the lowest rows, which in an
  image folder (stored class by class) are one or two classes."""
  (workdir, results), _ = twice
  counts = pool.budget_schedule(_config().al, 400)
  assert [r.labeled for r in results[name]] == counts == [40, 60]
  selected = np.load(workdir / name / "seed_0" / "selected_cycle0.npy")
  unlabeled = pool.unlabeled_indices(pool.initial_labeled(400, counts[0], seed=0))
  assert not set(selected.tolist()) <= set(unlabeled[:60].tolist())


@pytest.mark.parametrize("name", REPEATED)
def test_same_seed_selects_the_same_rows(twice, name):
  (a, _), (b, _) = twice
  np.testing.assert_array_equal(
    np.load(a / name / "seed_0" / "selected_cycle0.npy"),
    np.load(b / name / "seed_0" / "selected_cycle0.npy"),
  )


def test_tracincp_reports_its_checkpoint_cost(twice):
  (workdir, results), _ = twice
  full = results["tracincp_full"][0].strategy_metrics
  last = results["tracincp_last"][0].strategy_metrics
  epochs = _config().train.epochs
  assert full["snapshots"] == epochs and last["snapshots"] == epochs - epochs // 2
  assert full["snapshot_bytes"] == pytest.approx(
    last["snapshot_bytes"] * epochs / (epochs - epochs // 2)
  )
  payload = json.loads((workdir / "tracincp_full/seed_0/results.json").read_text())
  assert payload["cycles"][0]["strategy_metrics"]["snapshot_bytes"] > 0
  assert not (workdir / "tracincp_full/seed_0/cycle0/snapshots").exists()  # released

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax import loop, pool
from disal_jax.errors import ConfigError
from tests.helpers import tiny_config


@pytest.fixture(scope="module")
def two_cycle_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run")
  # 40 steps of 64 pool draws: every pool row is drawn twice, so the dynamic loss counts
  config = tiny_config(
    **{
      "strategies": "disal,random,random_dynamic",
      "full_training": True,
      "train.min_steps": 40,
      "disal.dynamic_batch_size": 64,
    }
  )
  return workdir, config, loop.run_experiment(config, str(workdir))


@pytest.mark.slow
def test_two_cycles_of_disal_and_random_keep_every_selection_invariant(two_cycle_run):
  workdir, config, results = two_cycle_run
  num_train = 1438
  expected_counts = pool.budget_schedule(config.al, num_train)
  assert expected_counts == [144, 216]
  initial = pool.initial_labeled(num_train, expected_counts[0], config.seed)
  for name in ("disal", "random"):
    rows = results[name]
    assert [r.labeled for r in rows] == expected_counts
    selected = np.load(workdir / name / "seed_0" / "selected_cycle0.npy")
    k = expected_counts[1] - expected_counts[0]
    assert selected.shape == (k,) and len(np.unique(selected)) == k
    assert (initial[selected] == pool.UNLABELED).all()  # previously unlabeled
    labeled_round = np.load(workdir / name / "seed_0" / "labeled_round.npy")
    assert (labeled_round >= 0).sum() == expected_counts[-1]
    assert set(np.flatnonzero(labeled_round == 1)) == set(selected.tolist())
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in rows)
  # the strategies start from the same labeled set and choose differently
  assert not np.array_equal(
    np.sort(np.load(workdir / "disal/seed_0/selected_cycle0.npy")),
    np.sort(np.load(workdir / "random/seed_0/selected_cycle0.npy")),
  )


@pytest.mark.slow
def test_the_control_picks_as_random_and_trains_as_disal(two_cycle_run):
  """random_dynamic: Random's rows in every cycle; at cycle 0 (the same labels for all three)
  exactly DISAL's model, which the dynamic loss makes differ from Random's."""
  workdir, _, results = two_cycle_run
  picks = lambda name: np.load(workdir / name / "seed_0" / "selected_cycle0.npy")
  np.testing.assert_array_equal(picks("random_dynamic"), picks("random"))
  assert not np.array_equal(picks("disal"), picks("random"))
  control, disal, random = (results[n][0] for n in ("random_dynamic", "disal", "random"))
  assert control.test_loss == disal.test_loss and control.test_accuracy == disal.test_accuracy
  assert control.test_loss != random.test_loss


@pytest.mark.slow
def test_run_writes_results_files_a_report_can_read(two_cycle_run):
  workdir, _, results = two_cycle_run
  payload = json.loads((workdir / "disal/seed_0/results.json").read_text())
  # the default train-branch target needs no eval-pass record
  assert payload["record"] == "none" and len(payload["cycles"]) == 2
  assert payload["cycles"][0]["scoring_seconds"] > 0
  csv_lines = (workdir / "random/seed_0/results.csv").read_text().strip().splitlines()
  assert csv_lines[0].startswith("strategy,seed,cycle,labeled,test_accuracy")
  assert len(csv_lines) == 3
  summary = (workdir / "summary.md").read_text()
  assert "| labeled | disal | random | random_dynamic |" in summary
  assert "Full Training (1438 labeled)" in summary
  assert results[loop.FULL_TRAINING][0].labeled == 1438
  assert (workdir / "disal/seed_0/metrics.jsonl").stat().st_size > 0


def test_random_selection_is_a_uniform_sample_without_replacement():
  import jax

  from disal_jax.strategies.base import ScoringContext, select_top_k
  from disal_jax.strategies.random import random_scores

  candidates = np.arange(1000, 1100)
  counts = np.zeros(100)
  for s in range(200):
    ctx = ScoringContext(None, None, None, candidates, np.arange(10), jax.random.key(s), 0)
    picks = select_top_k(random_scores(ctx), ctx, 10)
    assert len(np.unique(picks)) == 10 and np.isin(picks, candidates).all()
    counts[picks - 1000] += 1
  # each candidate is picked with probability 0.1: 20 times in 200 draws on average
  assert counts.min() > 5 and counts.max() < 40


def test_record_keep_below_the_strategy_need_is_refused(tmp_path):
  config = tiny_config(
    **{"strategies": "disal", "record.keep": "none", "disal.target_source": "eval_pass"}
  )
  with pytest.raises(ConfigError, match="record.keep='none' is invalid for strategy 'disal'"):
    loop.run_experiment(config, str(tmp_path))


@pytest.mark.slow
def test_the_default_config_twice_gives_bit_identical_selections(tmp_path):
  from tests.helpers import load_config

  runs = [
    loop.run_experiment(load_config("default", "quick"), str(tmp_path / name))
    for name in ("a", "b")
  ]
  for name in ("disal", "random"):
    for cycle in range(len(runs[0][name]) - 1):
      a, b = (
        np.load(tmp_path / w / name / "seed_0" / f"selected_cycle{cycle}.npy") for w in ("a", "b")
      )
      np.testing.assert_array_equal(a, b)
    assert [r.test_accuracy for r in runs[0][name]] == [r.test_accuracy for r in runs[1][name]]


def test_scoring_and_selection_run_at_highest_matmul_precision():
  """On GPUs float32 matmuls default to TF32; score_and_select pins them to HIGHEST, and the
  epoch callback is closed even when scoring fails."""
  import types

  from disal_jax.strategies import base

  lowered = {}

  def score(ctx):
    a = jnp.ones((4, 4))
    lowered["score"] = jax.jit(lambda x: x @ x).lower(a).as_text()
    return np.arange(4.0)

  def select(evidence, ctx, k):
    lowered["select"] = jax.jit(lambda x: x @ x).lower(jnp.ones((4, 4))).as_text()
    return np.argsort(-evidence)[:k]

  closed = []
  callback = types.SimpleNamespace(close=lambda: closed.append(True))
  ctx = types.SimpleNamespace(epoch_callback=callback)
  strategy = types.SimpleNamespace(score=score, select=select)
  _, picks = base.score_and_select(strategy, ctx, 2)
  assert picks.tolist() == [3, 2] and closed == [True]
  for text in lowered.values():
    assert "precision = [HIGHEST, HIGHEST]" in text
  assert "HIGHEST" not in jax.jit(lambda x: x @ x).lower(jnp.ones((4, 4))).as_text()
  failing = types.SimpleNamespace(score=lambda ctx: 1 / 0, select=select)
  with pytest.raises(ZeroDivisionError):
    base.score_and_select(failing, ctx, 2)
  assert closed == [True, True]


STATEFUL = ("disal", "tidal", "learning_loss", "tod")  # strategies with a train hook's state


@pytest.mark.slow
def test_warm_start_runs_carry_the_weights_and_restart_the_cycle_state(tmp_path, monkeypatch):
  """train.warm_start through the loop, for every strategy whose hook keeps state: each cycle
  after the first starts from the weights the previous one ended with (module parameters
  included), at step 0, with a fresh random stream and fresh per-cycle extras (TiDAL's
  running means, DISAL's train-branch targets)."""
  from disal_jax.training.trainer import Trainer

  seen = []
  original = Trainer.train_cycle

  def spy(self, state, labeled, pool_rows, cycle_seed, **kw):
    host = jax.device_get(state)
    result = original(self, state, labeled, pool_rows, cycle_seed, **kw)
    seen.append((kw["cycle"], host, jax.device_get(result.state)))
    return result

  monkeypatch.setattr(Trainer, "train_cycle", spy)
  config = tiny_config(
    **{
      "strategies": ",".join(STATEFUL),
      "data.max_train": 300,
      "train.warm_start": True,
      "tod.pool_batch_size": 16,
    }
  )
  results = loop.run_experiment(config, str(tmp_path))
  assert all(len(results[name]) == 2 for name in STATEFUL)
  assert [c for c, _, _ in seen] == [0, 1] * len(STATEFUL)
  checked = set()
  for run in range(len(STATEFUL)):
    cycles = seen[2 * run : 2 * run + 2]
    for (_, _, ended), (_, started, _) in zip(cycles, cycles[1:]):
      for a, b in zip(jax.tree.leaves(started.params), jax.tree.leaves(ended.params)):
        np.testing.assert_array_equal(a, b)
      assert int(started.step) == 0 and int(ended.step) > 0
      assert not np.array_equal(jax.random.key_data(started.rng), jax.random.key_data(ended.rng))
      for name, value in started.extras.items():
        if name in ("tidal_count", "tidal_mean", "disal_target_mean", "disal_target_weight"):
          assert not np.asarray(value).any(), name  # this cycle's statistics start at zero
          checked.add(name)
  assert {"tidal_count", "disal_target_mean"} <= checked


@pytest.mark.parametrize("warm_start", [False, True])
def test_each_cycle_scores_its_own_subset_and_starts_as_warm_start_says(
  tmp_path, monkeypatch, warm_start
):
  """al.subset_size and train.warm_start as the loop reads them: each cycle trains (and
  scores) its own seeded subset of the unlabeled rows, and starts from the previous cycle's
  weights exactly when warm_start is set."""
  from disal_jax.training.trainer import Trainer

  seen = []
  original = Trainer.train_cycle

  def spy(self, state, labeled, pool_rows, cycle_seed, **kw):
    started = jax.device_get(state.params)  # before the cycle donates the state
    result = original(self, state, labeled, pool_rows, cycle_seed, **kw)
    seen.append((np.asarray(pool_rows), started, jax.device_get(result.state.params)))
    return result

  monkeypatch.setattr(Trainer, "train_cycle", spy)
  config = tiny_config(
    **{
      "strategies": "random",
      "data.max_train": 200,
      "train.epochs": 1,
      "al.final_fraction": 0.2,
      "al.subset_size": 30,
      "train.warm_start": warm_start,
    }
  )
  loop.run_experiment(config, str(tmp_path))
  labeled_round = np.load(tmp_path / "random/seed_0/labeled_round.npy")
  assert len(seen) == 3  # 20, 30, 40 labeled
  for cycle, (rows, _, _) in enumerate(seen):
    before = np.where(labeled_round <= cycle, labeled_round, pool.UNLABELED)  # at cycle
    assert len(rows) == 30 and (before[rows] == pool.UNLABELED).all()
    np.testing.assert_array_equal(rows, pool.scoring_candidates(before, 30, config.seed, cycle))
  assert not np.array_equal(seen[0][0], seen[1][0])
  for (_, _, ended), (_, started, _) in zip(seen, seen[1:]):
    same = all(
      np.array_equal(a, b) for a, b in zip(jax.tree.leaves(started), jax.tree.leaves(ended))
    )
    assert same == warm_start

"""The ablation runner's pieces: variants, which runs count as finished, the curves."""

import json

import numpy as np
import pytest
from PIL import Image

from disal_jax import loop, pool, variants
from disal_jax.report import ablation_report, sweep_report
from tests.helpers import tiny_config, write_results


def test_a_variant_parses_literals_and_names_an_unknown_key():
  name, overrides = variants.parse_variant("lam3:disal.dynamic_weight=3,disal.branch=joint")
  assert name == "lam3" and overrides == {"disal.dynamic_weight": 3, "disal.branch": "joint"}
  config = variants.variant_config(tiny_config(), overrides)
  assert config.disal.dynamic_weight == 3.0 and isinstance(config.disal.dynamic_weight, float)
  with pytest.raises(ValueError, match="disal.weight"):
    variants.variant_config(tiny_config(), {"disal.weight": 1})
  with pytest.raises(ValueError, match="key=value"):
    variants.parse_variant("x:disal.branch")


def test_only_runs_with_every_cycle_in_results_json_count_as_finished(tmp_path):
  config = tiny_config(**{"strategies": "random", "full_training": True})
  cycles = len(pool.budget_schedule(config.al, 100))
  assert cycles > 1

  def write(name, count):
    run = loop.run_dir(tmp_path, name, config.seed)
    run.mkdir(parents=True, exist_ok=True)
    (run / "results.json").write_text(json.dumps({"num_train": 100, "cycles": [{}] * count}))

  assert not variants.finished(config, tmp_path)
  write("random", cycles - 1)
  write(loop.FULL_TRAINING, 1)
  assert not variants.finished(config, tmp_path)  # a cycle short
  write("random", cycles)
  assert variants.finished(config, tmp_path)
  config.seed = 1
  assert not variants.finished(config, tmp_path)  # another seed's run


def test_the_learning_curves_name_each_variant_and_draw_both_splits(tmp_path):
  write_results(tmp_path / "random", "random", 0, [0.5, 0.6], (10, 20), val_accuracies=[0.4, 0.5])
  write_results(tmp_path / "random", loop.FULL_TRAINING, 0, [0.9], (100,), val_accuracies=[0.8])
  write_results(tmp_path / "lam0", "disal", 0, [0.3, 0.7], (10, 20), val_accuracies=[0.2, 0.6])
  write_results(tmp_path / "both", "disal", 0, [0.3, 0.7], (10, 20), val_accuracies=[0.2, 0.6])
  write_results(tmp_path / "both", "margin", 1, [0.1, 0.2], (10, 20), val_accuracies=[0.3, 0.4])
  rows = ablation_report.learning_curve_rows(tmp_path, ["random", "lam0", "both", "not_started"])
  assert sorted({r.strategy for r in rows}) == [
    "both/disal",
    "both/margin",
    loop.FULL_TRAINING,
    "lam0",
    "random",
  ]
  val = sweep_report.on_split(rows, "val")
  assert [r.test_accuracy for r in val if r.strategy == "lam0"] == [0.2, 0.6]
  written = ablation_report.write_plots(tmp_path, ["random", "lam0", "both"])
  assert [p.name for p in written] == ["ablation_val.png", "ablation_test.png"]
  images = [np.asarray(Image.open(p).convert("L")) for p in written]
  assert images[0].shape[1] > 400 and len(np.unique(images[0])) > 10
  assert not np.array_equal(images[0], images[1])  # different curves, different axis label


def test_the_paired_table_differences_each_seed_against_the_baseline(tmp_path):
  # two cycles at 10 and 20 labels: AULC is the mean of the two accuracies (trapezoid)
  base = {0: [0.40, 0.50], 1: [0.30, 0.50], 2: [0.50, 0.60]}
  for seed, acc in base.items():
    write_results(tmp_path / "random", "random", seed, acc, (10, 20), val_accuracies=acc)
  write_results(tmp_path / "random", loop.FULL_TRAINING, 0, [0.9], (100,))
  ahead = {s: [a + 0.02 * (s + 2), b + 0.02 * (s + 2)] for s, (a, b) in base.items()}
  mixed = {0: [0.41, 0.51], 1: [0.29, 0.49], 2: [0.52, 0.62]}
  for seed in base:
    write_results(
      tmp_path / "ahead", "disal", seed, ahead[seed], (10, 20), val_accuracies=mixed[seed]
    )
  write_results(tmp_path / "short", "margin", 0, [0.1, 0.1], (10, 20))
  write_results(tmp_path / "short", "margin", 1, [0.9, 0.9], (10, 30))  # other counts: unpaired
  table = ablation_report.paired(tmp_path, ["random", "ahead", "short"], "random")
  rows = {
    line.split(" | ")[0].strip("| "): line.split(" | ")
    for line in table.splitlines()
    if line.startswith("| ahead") or line.startswith("| short")
  }
  # validation: +1, −1, +2 points: mean +0.67, std 1.25 -> a tie
  assert rows["ahead"][3] == "+1.00, −1.00, +2.00"
  assert rows["ahead"][4] == f"+0.67 ± {100 * np.std([0.01, -0.01, 0.02]):.2f} (tie)"
  # test: +4, +6, +8 points -> ahead
  assert rows["ahead"][5] == "+4.00, +6.00, +8.00"
  assert rows["ahead"][6].startswith("+6.00 ± 1.63 (ahead)")
  assert rows["short"][2] == "0"  # seed 1 counts differ from the baseline's
  assert rows["short"][6].startswith("−35.00 ± 0.00 (one seed)")
  write_results(tmp_path / "random", "margin", 0, [0.5, 0.5], (10, 20))
  with pytest.raises(ValueError, match="one AL strategy"):
    ablation_report.paired(tmp_path, ["random", "ahead"], "random")

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
    (run / "results.json").write_text(json.dumps({"num_train": 100,
                                                  "cycles": [{}] * count}))
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
  assert sorted({r.strategy for r in rows}) == ["both/disal", "both/margin", loop.FULL_TRAINING,
                                                "lam0", "random"]
  val = sweep_report.on_split(rows, "val")
  assert [r.test_accuracy for r in val if r.strategy == "lam0"] == [0.2, 0.6]
  written = ablation_report.write_plots(tmp_path, ["random", "lam0", "both"])
  assert [p.name for p in written] == ["ablation_val.png", "ablation_test.png"]
  images = [np.asarray(Image.open(p).convert("L")) for p in written]
  assert images[0].shape[1] > 400 and len(np.unique(images[0])) > 10
  assert not np.array_equal(images[0], images[1])  # different curves, different axis label

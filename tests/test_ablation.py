"""The ablation runner's pieces: variants, and which runs count as finished."""

import json

import pytest

from disal_jax import loop, pool, variants

from tests.helpers import tiny_config


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

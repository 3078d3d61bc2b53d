"""Sweeps and reports: hand-built results with known statistics, and a tiny real sweep."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from disal_jax import sweep
from disal_jax.report import sweep_report
from tests.helpers import REPO, tiny_config, write_results


@pytest.fixture
def hand_built(tmp_path):
  counts = [10, 20, 30]
  write_results(tmp_path, "disal", 0, [0.5, 0.7, 0.8], counts)
  write_results(tmp_path, "disal", 1, [0.6, 0.7, 0.9], counts)
  write_results(tmp_path, "random", 0, [0.5, 0.6, 0.7], counts)
  write_results(tmp_path, "random", 1, [0.7, 0.6, 0.7], counts)
  write_results(tmp_path, "full_training", 0, [0.95], [100])
  write_results(tmp_path, "full_training", 1, [0.97], [100])
  return tmp_path


def test_aulc_is_the_trapezoid_mean_of_the_curve():
  assert sweep_report.aulc(np.array([10, 20, 30]), np.array([0.5, 0.7, 0.8])) == pytest.approx(
    (0.5 + 0.7) / 2 * 0.5 + (0.7 + 0.8) / 2 * 0.5
  )
  assert sweep_report.aulc(np.array([10]), np.array([0.4])) == 0.4


def test_table_has_mean_std_best_marked_aulc_and_full_training(hand_built):
  rows = sweep_report.collect(hand_built)
  table = sweep_report.accuracy_markdown(rows)
  lines = table.splitlines()
  assert lines[0] == "| labeled | disal (n=2) | random (n=2) |"
  # 10 labeled: disal 55 ± 5, random 60 ± 10 -> random is best
  assert lines[2] == "| 10 (10%) | 55.00 ± 5.00 | **60.00 ± 10.00** |"
  assert lines[3] == "| 20 (20%) | **70.00 ± 0.00** | 60.00 ± 0.00 |"
  assert lines[4] == "| 30 (30%) | **85.00 ± 5.00** | 70.00 ± 0.00 |"
  disal_aulc = [
    sweep_report.aulc(np.array([10, 20, 30]), np.array(a))
    for a in ([0.5, 0.7, 0.8], [0.6, 0.7, 0.9])
  ]
  assert lines[5].startswith(
    f"| AULC | **{100 * np.mean(disal_aulc):.2f} ± {100 * np.std(disal_aulc):.2f}** |"
  )
  assert "Full Training (2 seeds): 96.00 ± 1.00" in table


def test_each_strategy_is_paired_with_random_seed_by_seed(hand_built):
  area = lambda a: sweep_report.aulc(np.array([10, 20, 30]), np.array(a))
  # seed 0: disal 0.675 - random 0.600; seed 1: 0.725 - 0.650: +7.50 both -> ahead
  differences = [
    area([0.5, 0.7, 0.8]) - area([0.5, 0.6, 0.7]),
    area([0.6, 0.7, 0.9]) - area([0.7, 0.6, 0.7]),
  ]
  assert differences == pytest.approx([0.075, 0.075])
  table = sweep_report.accuracy_markdown(sweep_report.collect(hand_built))
  assert "| disal | 0,1 | +7.50, +7.50 | +7.50 ± 0.00 (ahead) |" in table
  write_results(hand_built, "margin", 1, [0.7, 0.6, 0.6], [10, 20, 30])
  table = sweep_report.accuracy_markdown(sweep_report.collect(hand_built))
  assert "| margin | 1 | −2.50 | −2.50 ± 0.00 (one seed) |" in table
  assert "| random |" not in table


def test_a_run_in_progress_counts_in_its_rows_but_not_in_the_aulc(hand_built):
  complete = sweep_report.accuracy_markdown(sweep_report.collect(hand_built))
  write_results(hand_built, "disal", 2, [0.2], [10])  # one cycle of three done
  lines = sweep_report.accuracy_markdown(sweep_report.collect(hand_built)).splitlines()
  assert lines[0] == "| labeled | disal (n=2) | random (n=2) |"
  # 10 labeled: disal over 3 seeds (0.5, 0.6, 0.2) -> 43.33; random is best
  assert lines[2] == (
    f"| 10 (10%) | 43.33 ± {100 * np.std([0.5, 0.6, 0.2]):.2f} (n=3) | **60.00 ± 10.00** |"
  )
  assert lines[3] == "| 20 (20%) | **70.00 ± 0.00** | 60.00 ± 0.00 |"
  assert lines[5] == complete.splitlines()[5]  # the AULC of the two finished runs
  assert lines[-1] == (
    "In progress (in the rows they reached, marked with their n; not in "
    "the AULC): disal seed 2 (1 of 3 cycles)."
  )


def test_a_run_linked_in_under_another_name_is_its_own_line(hand_built, tmp_path_factory):
  other = tmp_path_factory.mktemp("ablation")
  write_results(other, "disal", 0, [0.1, 0.2, 0.3], [10, 20, 30])
  (hand_built / "disal_lambda0").symlink_to(other / "disal")
  lines = sweep_report.accuracy_markdown(sweep_report.collect(hand_built)).splitlines()
  assert lines[0] == "| labeled | disal (n=2) | disal_lambda0 (n=1) | random (n=2) |"
  assert lines[2] == "| 10 (10%) | 55.00 ± 5.00 | 10.00 ± 0.00 | **60.00 ± 10.00** |"


def test_report_writes_csv_tables_and_a_plot(hand_built):
  out = sweep_report.write_report(hand_built)
  with open(out / "results.csv", encoding="utf-8") as f:
    records = list(csv.DictReader(f))
  assert len(records) == 14 and records[0]["labeled_percent"] == "10.0"
  times = (out / "times.md").read_text()
  assert "| disal | 1 | 20 | 4.0 | 0.5 | 0.5 |" in times  # scoring seconds = mean of seeds 0, 1
  image = Image.open(out / "accuracy.png")
  assert image.size[0] > 400 and len(np.unique(np.asarray(image.convert("L")))) > 10


def test_a_segmentation_sweep_is_reported_in_miou(tmp_path):
  # pixel accuracy and mIoU rank the strategies differently: the table must follow mIoU
  write_results(tmp_path, "disal", 0, [0.90, 0.92], [10, 20], mious=[0.40, 0.50])
  write_results(tmp_path, "random", 0, [0.95, 0.96], [10, 20], mious=[0.30, 0.45])
  rows = sweep_report.collect(tmp_path)
  assert sweep_report.metric_name(rows) == "mIoU"
  table = sweep_report.accuracy_markdown(rows)
  assert "| 10 (10%) | **40.00 ± 0.00** | 30.00 ± 0.00 |" in table
  assert "Test mIoU (%)" in table
  out = sweep_report.write_report(tmp_path)
  with open(out / "results.csv", encoding="utf-8") as f:
    first = next(csv.DictReader(f))
  assert float(first["test_miou"]) == 0.40 and float(first["test_accuracy"]) == 0.90


def test_report_cli_explains_an_empty_folder(tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "disal_jax.report", str(tmp_path)],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert out.returncode == 2 and "no <strategy>/seed_<s>/results.json" in out.stderr


@pytest.mark.slow
def test_a_sweep_runs_every_pair_once_and_resumes(tmp_path):
  config = tiny_config(**{"data.max_train": 300, "full_training": False})
  sweep.run_sweep(config, ["random", "coreset"], [0, 1], str(tmp_path))
  for strategy in ("random", "coreset"):
    for seed in (0, 1):
      payload = json.loads((tmp_path / strategy / f"seed_{seed}" / "results.json").read_text())
      assert payload["seed"] == seed and len(payload["cycles"]) == 2
  # the seeds differ in their initial labeled set, hence in what they select
  a, b = (np.load(tmp_path / "random" / f"seed_{s}" / "selected_cycle0.npy") for s in (0, 1))
  assert not np.array_equal(np.sort(a), np.sort(b))
  before = (tmp_path / "random/seed_1/metrics.jsonl").read_text()
  sweep.run_sweep(config, ["random", "coreset"], [0, 1], str(tmp_path))  # all finished
  assert (tmp_path / "random/seed_1/metrics.jsonl").read_text() == before
  rows = sweep_report.collect(tmp_path)
  assert {(r.strategy, r.seed) for r in rows} == {
    (s, n) for s in ("random", "coreset") for n in (0, 1)
  }


def test_seeds_flag_is_checked():
  with pytest.raises(Exception, match="integers"):
    sweep.parse_seeds(["0", "x"])
  with pytest.raises(Exception, match="twice"):
    sweep.parse_seeds(["1", "1"])


def test_validation_table_is_written_from_the_runs_validation_accuracy(tmp_path):
  counts = [10, 20]
  for seed, (val, test) in enumerate([([0.4, 0.6], [0.5, 0.7]), ([0.6, 0.8], [0.3, 0.9])]):
    write_results(tmp_path, "disal", seed, test, counts)
    path = tmp_path / "disal" / f"seed_{seed}" / "results.json"
    payload = json.loads(path.read_text())
    for cycle, v in zip(payload["cycles"], val):
      cycle["val_accuracy"] = v
    path.write_text(json.dumps(payload))
  out = sweep_report.write_report(tmp_path)
  val_table = (out / "val_accuracy.md").read_text().splitlines()
  assert val_table[2].startswith("| 10 (10%) | **50.00 ± 10.00** |")
  assert val_table[3].startswith("| 20 (20%) | **70.00 ± 10.00** |")
  assert "Validation accuracy" in (out / "val_accuracy.md").read_text()
  first_row = (out / "accuracy.md").read_text().splitlines()[2]
  assert first_row.startswith("| 10 (10%) | **40.00 ± 10.00**")


def test_no_validation_table_without_validation_accuracy(hand_built):
  out = sweep_report.write_report(hand_built)
  assert not (out / "val_accuracy.md").exists()


def test_paired_markdown_subtracts_in_the_stated_direction():
  """Each strategy minus the baseline by default; the baseline minus each with
  baseline_first (a sign slip would read a lead as a loss); seeds paired, unshared left out."""
  areas = {"base": {0: 0.50, 1: 0.60, 2: 0.70}, "other": {0: 0.40, 1: 0.30}, "none": {5: 0.1}}
  rows = sweep_report.paired_markdown(areas, "base", ["other", "none"])
  assert rows[2:] == ["| other | 0,1 | −10.00, −30.00 | −20.00 ± 10.00 (behind) |"]
  rows = sweep_report.paired_markdown(areas, "base", ["other"], baseline_first=True)
  assert rows[2:] == ["| other | 0,1 | +10.00, +30.00 | +20.00 ± 10.00 (ahead) |"]

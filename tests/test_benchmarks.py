"""The benchmark scripts still run (tiny sizes, no PyTorch) and write their JSON record."""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow  # whole runs or subprocesses: not in the quick tier


@pytest.mark.parametrize(
  "name,args",
  [
    (
      "scoring",
      [
        "--pool=32",
        "--labeled=16",
        "--width=4",
        "--eval_batch_size=16",
        "--strategies=disal,gradnorm_entropy,coreset",
        "--torch=false",
      ],
    ),
    (
      "training",
      ["--labeled=64", "--pool=32", "--width=4", "--batch_size=32", "--rounds=1", "--torch=false"],
    ),
    (
      "cycle_cost",
      [
        "--strategies=random",
        "--labeled=40",
        "--pool=40",
        "--width=4",
        "--epochs=1",
        "--min_steps=0",
      ],
    ),
    (
      "per_sample_norms",
      [
        "--images=8",
        "--width=4",
        "--batch=4",
        "--vmap_chunk=4",
        "--gram_images=2",
        "--torch=false",
      ],
    ),
    ("xla_cpu", ["--width=4", "--batch=4", "--rounds=1", "--programs=forward"]),
  ],
)
def test_benchmark_runs_and_writes_its_figures(tmp_path, cache_dir, image_folder_root, name, args):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      f"benchmarks.{name}",
      *args,
      f"--cache_dir={cache_dir}",
      f"--data_dir={image_folder_root}",
      f"--out={tmp_path}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  payload = json.loads((tmp_path / f"{name}.json").read_text())
  assert payload["machine"]["versions"]["jax"]
  rates = [
    f.get("samples_per_second", f.get("train_images_per_second", f.get("cycle_seconds")))
    for f in payload["figures"].values()
  ]
  assert rates and all(r > 0 for r in rates)
  if name == "per_sample_norms":  # the two engines computed the same norms
    assert payload["one_pass_vs_vmap_max_rel_diff"] < 1e-4
    assert payload["gram_max_diff_over_max"] < 1e-4
    # ... and each is within float32 rounding of a float64 per-sample loop
    assert set(payload["max_rel_diff_to_float64"]) == {"one_pass", "vmap"}
    assert all(d < 1e-4 for d in payload["max_rel_diff_to_float64"].values())


def test_scaling_benchmark_measures_pools_and_memory(tmp_path, cache_dir, image_folder_root):
  # The devices section (child processes with forced host devices) is left to manual runs:
  # XLA:CPU's forced devices deadlocked intermittently under load (docs/performance.md).
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.scaling",
      "--sections=pool,memory",
      "--pools=32,64",
      "--labeled=16",
      "--width=4",
      "--eval_batch_size=16",
      "--scorers=coreset",
      "--engines=one_pass",
      "--chunks=2,8",
      "--memory_images=8",
      "--budgets_mb=1000",
      f"--cache_dir={cache_dir}",
      f"--data_dir={image_folder_root}",
      f"--out={tmp_path}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  payload = json.loads((tmp_path / "scaling.json").read_text())
  assert set(payload["pool"]) == {"32", "64"}
  assert all(
    set(row) == {"forward", "coreset"} and all(s > 0 for s in row.values())
    for row in payload["pool"].values()
  )
  chunks = {
    (r["engine"], r["chunk"]): r["compiled_mib"] for r in payload["memory"]["rows"] if "chunk" in r
  }
  assert chunks[("one_pass", 8)] > chunks[("one_pass", 2)]
  chosen = [r["chosen_chunk"] for r in payload["memory"]["rows"] if "budget_mib" in r]
  assert chosen == [8]  # a generous budget takes the whole (8-image) pool in one call


def test_badge_benchmark_holds_far_less_than_the_materialised_embeddings(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.badge",
      "--pool=2000",
      "--classes=20",
      "--dim=63",
      "--picks=20",
      f"--out={tmp_path}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  figures = json.loads((tmp_path / "badge.json").read_text())["figures"]["kmeans_pp"]
  assert figures["materialised_bytes"] == 2000 * 20 * 64 * 4
  assert figures["factor_bytes"] == 2000 * (20 + 64) * 4
  assert figures["selection_temp_bytes"] < figures["factor_bytes"] and figures["seconds"] > 0


def test_input_scaling_benchmark_streams_with_flat_device_bytes(tmp_path):
  out = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.input_scaling",
      "--num_train=512",
      "--labeled=128",
      "--epochs=2",
      "--width=4",
      "--rounds=1",
      f"--out={tmp_path}",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.strip().splitlines()[-1].startswith("device_bytes_ratio=")
  payload = json.loads((tmp_path / "input_scaling.json").read_text())
  figures = payload["figures"]
  # device-resident holds the split (4N is 4 x 1.5 MiB more); streaming holds the model only
  grown = figures["device N=2048"]["device_bytes"] - figures["device N=512"]["device_bytes"]
  assert grown >= 3 * 512 * 32 * 32 * 3
  assert payload["device_bytes_ratio"] < 1.05
  assert figures["stream N=2048"]["device_bytes"] < figures["device N=2048"]["device_bytes"]


def _finite_positive(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_device_check_smoke_measures_every_section(tmp_path, cache_dir):
  # the JSON's default place: $OUT/device_check.json, as on the device machine
  out = subprocess.run(
    [sys.executable, "-m", "benchmarks.device_check", "--smoke", f"--cache_dir={cache_dir}"],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=900,
    env={**os.environ, "OUT": str(tmp_path)},
  )
  assert out.returncode == 0, out.stderr[-3000:]
  payload = json.loads((tmp_path / "device_check.json").read_text())
  assert payload["complete"] and set(payload["sections"]) == {"train", "cycle", "scoring"}

  train = payload["sections"]["train"]["figures"]
  assert set(train) == {"plain float32", "plain bfloat16", "disal branch float32"}
  for dtype in ("float32", "bfloat16"):
    row = train[f"plain {dtype}"]
    for key in (
      "loop_images_per_second",
      "device_images_per_second",
      "loop_seconds_per_step",
      "device_seconds_per_step",
      "dispatch_seconds_per_step",
      "flops_per_step",
      "flops_per_step_lowered",
    ):
      assert _finite_positive(row[key]), (dtype, key, row[key])
    assert row["mfu"] is None  # no peak is known for a CPU: omitted, and said so below
  assert _finite_positive(train["disal branch float32"]["step_time_vs_plain"])

  scoring = payload["sections"]["scoring"]["figures"]
  assert set(scoring) == {"forward", "entropy", "disal", "mc_dropout", "gradnorm_entropy", "badge"}
  assert all(_finite_positive(f["samples_per_second"]) for f in scoring.values())

  cycle = payload["sections"]["cycle"]["figures"]
  assert set(cycle) == {"random", "disal"}
  for name, f in cycle.items():
    assert len(f["cycles"]) == 3 and f["labeled"][1] > f["labeled"][0]
    for key in ("cycle1_seconds", "run_seconds", "peak_rss_mib", "cycle1_x_random"):
      assert _finite_positive(f[key]), (name, key, f[key])
    assert f["peak_device_bytes"] is None  # a CPU device reports no memory stats
    assert f["compiles_through_first_cycle"] > 0
    # the later cycles' larger labeled sets and smaller pools reuse cycle 0's programs
    assert f["compiles_after_first_cycle"] == 0, f["compiled_after_first_cycle"]

  for first_column in ("train step", "scorer", "strategy"):  # each section's table
    assert re.search(rf"^\|\s*{first_column} \|", out.stdout, re.MULTILINE), first_column
  assert "MFU omitted for plain float32, plain bfloat16" in out.stdout
  assert out.stdout.strip().endswith(f"wrote {tmp_path / 'device_check.json'}")


def test_device_check_peaks_match_the_device_kinds_jax_reports():
  from benchmarks import device_check  # pylint: disable=import-outside-toplevel

  assert device_check.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.0
  assert device_check.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
  assert device_check.peak_tflops("NVIDIA H200", "float32") == 67.0
  assert device_check.peak_tflops("NVIDIA A100-SXM4-80GB", "float32") == 19.5
  assert device_check.peak_tflops("TPU v5 lite", "bfloat16") == 197.0  # v5e, not v5p
  assert device_check.peak_tflops("TPU v5", "bfloat16") == 459.0  # v5p
  assert device_check.peak_tflops("TPU v4 lite", "bfloat16") is None
  assert device_check.peak_tflops("TPU v4", "float32") is None
  assert device_check.peak_tflops("cpu", "float32") is None

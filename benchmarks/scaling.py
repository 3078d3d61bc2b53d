"""How scoring scales: with the pool's size, with the device count, and per-sample scoring's
memory with its chunk size (and the chunk chosen for a memory budget).

  python -m benchmarks.scaling [--pools=10000,20000,50000] [--devices=1,2,4,8] [--width=16]
                               [--sections=pool,devices,memory] [--out=DIR]

Real CIFAR-10 images (../shared/data), CIFAR ResNet-18 at random weights. Sections:
- pool: each scorer's real path (strategy.score + select, K = 5% of the pool) per pool size,
  compiled beforehand; time should grow linearly (CoreSet's greedy k-center as P x K).
  Reported: seconds, samples/s, and time / (linear extrapolation from the smallest pool).
- devices: the pool section at one size (the first of --pools) in child processes with
  1, 2, 4, 8 forced host devices (XLA_FLAGS); the ratio to one device. On a CPU the forced
  devices share the same cores: it measures the sharding's overhead, not a speed-up.
- memory: per-sample gradient scoring (entropy gradnorm) per chunk size and engine: XLA's
  compiled bytes per call (temporaries + outputs: what a device must hold) and samples/s;
  then the chunk `per_sample.memory_budget_mb` picks for a few budgets.
Prints tables; writes <out>/scaling.json.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import numpy as np
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings
from disal_jax.data.registry import load_dataset
from disal_jax.strategies import base, gradnorm, per_sample, registry
from disal_jax.training import sharding

_POOLS = flags.DEFINE_list("pools", ["10000", "20000", "50000"], "Pool sizes.")
_DEVICES = flags.DEFINE_list("devices", ["1", "2", "4", "8"], "Forced host device counts.")
_SECTIONS = flags.DEFINE_list("sections", ["pool", "devices", "memory"], "What to measure.")
_SCORERS = flags.DEFINE_list(
  "scorers",
  ["disal", "coreset", "gradnorm_entropy"],
  "Strategies timed per pool size (beside one forward pass).",
)
_LABELED = flags.DEFINE_integer("labeled", 1000, "Labeled images (CoreSet's centres).")
_WIDTH = flags.DEFINE_integer("width", 16, "ResNet-18 width.")
_BATCH = flags.DEFINE_integer("eval_batch_size", 256, "Scoring batch size.")
_ENGINES = flags.DEFINE_list("engines", list(per_sample.ENGINES), "Per-sample engines.")
_CHUNKS = flags.DEFINE_list("chunks", ["1", "4", "16", "64"], "Per-sample chunk sizes.")
_MEMORY_IMAGES = flags.DEFINE_integer("memory_images", 128, "Images per chunk-size timing.")
_BUDGETS = flags.DEFINE_list("budgets_mb", ["64", "256", "1024"], "Memory budgets (MiB).")
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write scaling.json.")


def _pool_section(dataset, config, pools: list[int]) -> dict:
  mesh = sharding.make_mesh()
  labeled = np.arange(_LABELED.value)
  workdir = tempfile.mkdtemp()
  figures = {}
  for pool in pools:
    candidates = np.arange(_LABELED.value, _LABELED.value + pool)
    k = max(1, pool // 20)
    row = {}
    trainer, ctx = common.scoring_context(
      config,
      dataset,
      mesh,
      registry.get_strategy("random"),
      labeled,
      candidates,
      jax.random.key(1),
      workdir,
    )
    length = trainer.padded_pool_length(pool, 0)
    trainer.pool_probs(ctx.result.state, candidates[: _BATCH.value], length)  # compile
    row["forward"] = common.best_time(
      lambda: trainer.pool_probs(ctx.result.state, candidates, length)
    )
    for name in _SCORERS.value:
      strategy = registry.get_strategy(name)
      _, ctx = common.scoring_context(
        config, dataset, mesh, strategy, labeled, candidates, jax.random.key(1), workdir
      )
      small = dataclasses.replace(ctx, candidates=candidates[: _BATCH.value])
      strategy.select(strategy.score(small), small, 1)  # compile on one batch
      row[name] = common.best_time(lambda: strategy.select(strategy.score(ctx), ctx, k))
    figures[str(pool)] = row
    print(f"pool {pool}: " + ", ".join(f"{n} {s:.2f} s" for n, s in row.items()), flush=True)
  return figures


def _devices_section(pool: int) -> dict:
  figures = {}
  for count in map(int, _DEVICES.value):
    out = tempfile.mkdtemp()
    # Forced host devices run their programs asynchronously on the same cores and may drift
    # apart by more than XLA:CPU's 40 s collective rendezvous timeout (seen here: an abort
    # at 2 devices); the timeout is raised for these runs.
    env = dict(
      os.environ,
      XLA_FLAGS=f"--xla_force_host_platform_device_count={count} "
      "--xla_cpu_collective_call_terminate_timeout_seconds=3600",
    )
    args = [
      sys.executable,
      "-m",
      "benchmarks.scaling",
      "--sections=pool",
      f"--pools={pool}",
      f"--scorers={','.join(_SCORERS.value)}",
      f"--labeled={_LABELED.value}",
      f"--width={_WIDTH.value}",
      f"--eval_batch_size={_BATCH.value}",
      f"--cache_dir={_CACHE.value}",
      f"--out={out}",
    ]
    done = subprocess.run(
      args, env=env, capture_output=True, text=True, cwd=pathlib.Path(__file__).resolve().parents[1]
    )
    if done.returncode:
      raise RuntimeError(f"{count}-device run failed:\n{done.stderr[-3000:]}")
    payload = json.loads((pathlib.Path(out) / "scaling.json").read_text())
    assert payload["machine"]["device_count"] == count, payload["machine"]
    figures[str(count)] = payload["pool"][str(pool)]
    print(f"{count} device(s): {figures[str(count)]}", flush=True)
  return figures


def _memory_section(dataset, config) -> dict:
  mesh = sharding.make_mesh()
  n = _MEMORY_IMAGES.value
  candidates = np.arange(_LABELED.value, _LABELED.value + n)
  strategy = registry.get_strategy("gradnorm_entropy")
  workdir = tempfile.mkdtemp()
  rows = []
  for engine_name in _ENGINES.value:
    config.per_sample.engine = engine_name
    _, ctx = common.scoring_context(
      config,
      dataset,
      mesh,
      strategy,
      np.arange(_LABELED.value),
      candidates,
      jax.random.key(1),
      workdir,
    )
    engine = per_sample.engine_from_config(config, config.gradnorm.chunk_size)
    fn = functools.partial(
      gradnorm.entropy_gradnorm_scores, preprocess=ctx.data.preprocess, engine=engine
    )
    state = ctx.result.state
    for chunk in map(int, _CHUNKS.value):
      mib = base.compiled_bytes(fn, state, ctx, chunk) / 2**20
      run = lambda c=chunk: base.batched_pool_scores(ctx, fn, state, batch_size=c)
      seconds = common.best_time(run)
      rows.append(
        {
          "engine": engine_name,
          "chunk": chunk,
          "compiled_mib": mib,
          "samples_per_second": n / seconds,
        }
      )
      print(f"{engine_name} chunk {chunk}: {mib:.1f} MiB, {n / seconds:.1f} samples/s", flush=True)
    for budget in map(float, _BUDGETS.value):
      config.per_sample.memory_budget_mb = budget
      try:
        chosen = base.per_sample_batch_size(ctx, fn, state, fixed=0)
        mib = base.compiled_bytes(fn, state, ctx, chosen) / 2**20
      except MemoryError:
        chosen, mib = 0, float("nan")
      rows.append(
        {"engine": engine_name, "budget_mib": budget, "chosen_chunk": chosen, "compiled_mib": mib}
      )
      print(f"{engine_name} budget {budget:g} MiB: chunk {chosen} ({mib:.1f} MiB)", flush=True)
    config.per_sample.memory_budget_mb = 0.0
  return {"rows": rows}


def main(argv):
  del argv
  pools = sorted(map(int, _POOLS.value))
  sections = set(_SECTIONS.value)
  need = _LABELED.value + max(pools + [_MEMORY_IMAGES.value])
  config = common.cifar_config(need, _WIDTH.value, _CACHE.value)
  config.train.eval_batch_size = _BATCH.value
  payload = {"width": _WIDTH.value, "labeled": _LABELED.value, "pools": pools}
  dataset = load_dataset(config.data) if sections & {"pool", "memory"} else None
  header = (
    f"CIFAR ResNet-18 width {_WIDTH.value}, {jax.device_count()} "
    f"{jax.default_backend()} device(s), {os.cpu_count()} cores"
  )

  if "pool" in sections:
    figures = payload["pool"] = _pool_section(dataset, config, pools)
    smallest = figures[str(pools[0])]
    rows = [
      [f"{name} @ {pool}", s, pool / s, s / (smallest[name] * pool / pools[0])]
      for pool in pools
      for name, s in figures[str(pool)].items()
    ]
    print(f"\nScoring time per pool size, {header}\n")
    print(common.table(["scorer @ pool", "seconds", "samples/s", "x linear"], rows))
  if "devices" in sections:
    figures = payload["devices"] = _devices_section(pools[0])
    one = figures[min(figures, key=int)]
    rows = [
      [f"{name} @ {count} dev", s, s / one[name]]
      for count, row in figures.items()
      for name, s in row.items()
    ]
    print(f"\nScoring {pools[0]} samples per device count (forced host devices)\n")
    print(common.table(["scorer @ devices", "seconds", "x 1 device"], rows))
  if "memory" in sections:
    payload["memory"] = _memory_section(dataset, config)
    print(f"\nEntropy gradnorm memory per call, {header}\n")
    print(
      common.table(
        ["engine", "chunk", "compiled MiB", "samples/s"],
        [
          [r["engine"], r["chunk"], r["compiled_mib"], r["samples_per_second"]]
          for r in payload["memory"]["rows"]
          if "chunk" in r
        ],
      )
    )
    print()
    print(
      common.table(
        ["engine", "budget MiB", "chosen chunk", "its MiB"],
        [
          [r["engine"], r["budget_mib"], r["chosen_chunk"], r["compiled_mib"]]
          for r in payload["memory"]["rows"]
          if "budget_mib" in r
        ],
      )
    )
  path = common.write_json("scaling", payload, _OUT.value)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

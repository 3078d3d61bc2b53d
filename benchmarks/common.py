"""What every benchmark shares: machine facts, timing, peak memory, the JSON record."""

from __future__ import annotations

import json
import os
import pathlib
import platform
import resource
import time
from importlib import metadata
from typing import Any, Callable

import jax

from disal_jax.config import base_config

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR10_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def cifar_config(num_train: int, width: int, cache_dir: str):
  """The paper's config on the first-drawn `num_train` real CIFAR-10 training images."""
  config = base_config()
  config.data.name = "image_folder"
  config.data.data_dir = str(CIFAR10_ARCHIVE)
  config.data.cache_dir = cache_dir
  config.data.max_train = num_train
  config.data.max_test = 100
  config.model.width = width
  return config


def machine() -> dict[str, Any]:
  versions = {}
  for package in ("jax", "jaxlib", "flax", "optax", "numpy", "torch"):
    try:
      versions[package] = metadata.version(package)
    except metadata.PackageNotFoundError:
      versions[package] = None
  return {"platform": platform.platform(), "python": platform.python_version(),
          "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "device_count": jax.device_count(),
          "versions": versions, "time": time.strftime("%Y-%m-%d %H:%M:%S")}


def timed(fn: Callable[[], Any]) -> float:
  """Wall seconds of fn(), waiting for JAX's asynchronous work to finish."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - t0


def best_time(fn: Callable[[], Any], rerun_below: float = 30.0) -> float:
  """timed(fn), and the faster of two runs when the first takes under `rerun_below` seconds
  (a first full-size call also compiles the small eager ops around the jitted ones)."""
  first = timed(fn)
  return min(first, timed(fn)) if first < rerun_below else first


def peak_rss_mib() -> float:
  """Peak resident memory of this process so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_json(name: str, payload: dict[str, Any], out_dir: str) -> pathlib.Path:
  path = pathlib.Path(out_dir) / f"{name}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps({"machine": machine(), **payload}, indent=1))
  return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
  def fmt(v):
    return f"{v:.3g}" if isinstance(v, float) else str(v)
  cells = [[fmt(v) for v in row] for row in rows]
  widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
  line = lambda r: "| " + " | ".join(v.rjust(w) for v, w in zip(r, widths)) + " |"
  return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                    *map(line, cells)])

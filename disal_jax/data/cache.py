"""Where decoded arrays and extracted archives live, outside the repository."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tarfile

import numpy as np

_COMPLETE = ".complete"


def cache_root(cache_dir: str) -> pathlib.Path:
  """The cache folder (`cache_dir`, else $DISAL_JAX_CACHE, else ~/.cache/disal_jax),
  created if missing."""
  root = pathlib.Path(cache_dir or os.environ.get("DISAL_JAX_CACHE", "~/.cache/disal_jax"))
  root = root.expanduser()
  root.mkdir(parents=True, exist_ok=True)
  return root


def key_of(*parts) -> str:
  """A 16-hex-digit key naming the cache entry of `parts` (their repr hashed)."""
  return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def extract_archive(archive: str, cache_dir: str) -> pathlib.Path:
  """Extracts a .tar/.tar.gz once into the cache and returns the extracted folder.

  The folder is keyed by the archive's path, size and modification time, and only used once a
  marker file says the extraction completed (an interrupted extraction is redone).
  """
  path = pathlib.Path(archive).expanduser().resolve()
  stat = path.stat()
  key = key_of(str(path), stat.st_size, stat.st_mtime_ns)
  target = cache_root(cache_dir) / "extracted" / f"{path.name}-{key}"
  if (target / _COMPLETE).exists():
    return target
  target.mkdir(parents=True, exist_ok=True)
  with tarfile.open(path) as tar:
    tar.extractall(target, filter="data")
  (target / _COMPLETE).touch()
  return target


def load_arrays(path: pathlib.Path) -> dict[str, np.ndarray] | None:
  """The arrays of the .npz at `path`, by name; None where it is missing or unreadable."""
  if not path.exists():
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except (OSError, ValueError):  # a truncated cache file is rebuilt, not trusted
    return None


def save_arrays(path: pathlib.Path, arrays: dict[str, np.ndarray]) -> None:
  """Writes atomically: a reader never sees a half-written cache file."""
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp.npz")
  np.savez(tmp, **arrays)
  os.replace(tmp, path)

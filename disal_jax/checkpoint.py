"""Orbax checkpoints of one run (one strategy, one seed), and the checks made before resuming.

A checkpoint holds arrays (a pytree flattened to numbered leaves, PRNG keys as their key data)
and a JSON document (counters, results so far, a CRC-32 of every leaf). Writes are atomic
(orbax writes to a temporary folder and renames it) and synchronous; the last
`checkpoint.keep` are kept. Restoring walks from the newest checkpoint back and takes the
first one whose leaves are all readable and match their checksums and the expected
structure, reporting every one it skips.
"""

from __future__ import annotations

import errno
import json
import logging
import pathlib
import shutil
import zlib
from typing import Any, Callable, Collection, Optional

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from disal_jax import experiment
from disal_jax.errors import CheckpointError, ConfigMismatchError
from disal_jax.strategies import registry as strategy_registry
from disal_jax.training import sharding

log = logging.getLogger(__name__)

ARRAYS, META = "arrays", "meta"

# Experiment-wide keys that may change between a run and its resumption: they do not change
# what is computed (which runs to do, logging, where files live, how often to checkpoint).
# A strategy declares its own in its section (ConfigSection.resume_safe; resumable_keys()).
RESUMABLE_KEYS = (
  "strategies",
  "full_training",
  "train.log_every_epochs",
  "checkpoint.every_epochs",
  "checkpoint.keep",
  "data.data_dir",
  "data.manual_dir",
  "data.cache_dir",
  "data.placement",
  "data.device_budget_mb",
)


def resumable_keys() -> set[str]:
  """Every dotted key that may change on resumption: RESUMABLE_KEYS and the registered
  strategy sections' `resume_safe` keys."""
  return set(RESUMABLE_KEYS) | strategy_registry.resume_safe_keys()


def moved_keys() -> dict[str, str]:
  """{a key an earlier version had: the dotted key that holds its setting now}, as the
  registered strategy sections declare them (ConfigSection.moved_keys). A saved run config is
  compared as if it held the new key (config_differences), so resuming an earlier run with
  the same settings finds no difference, and one whose setting changed names the new key."""
  return strategy_registry.moved_keys()


def quiet_orbax_info_logs() -> None:
  """orbax logs every checkpoint's internals at INFO through absl; keep its warnings only."""
  logging.getLogger("absl").addFilter(
    lambda r: r.levelno >= logging.WARNING or "/orbax/" not in r.pathname
  )


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _crc(array: np.ndarray) -> int:
  return zlib.crc32(np.ascontiguousarray(array).tobytes())


class RunCheckpointer:
  """Saves and restores the checkpoints under `directory` (one run's)."""

  def __init__(self, directory: pathlib.Path, keep: int):
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=False, create=True
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=(ARRAYS, META))

  def steps(self) -> list[int]:
    """The saved steps, oldest first."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, tree: Any, meta: dict[str, Any]) -> None:
    """Writes checkpoint `step`: the pytree's leaves and `meta` (JSON-serialisable)."""
    leaves = [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(tree)]
    host = sharding.fetch(leaves)  # gathered from every host when split over them
    arrays = {f"{i:05d}": x for i, x in enumerate(host)}
    meta = dict(meta, num_leaves=len(host), crc32=[_crc(x) for x in host])
    try:
      self.manager.save(
        step,
        args=ocp.args.Composite(
          **{ARRAYS: ocp.args.StandardSave(arrays), META: ocp.args.JsonSave(meta)}
        ),
        force=True,
      )
    except OSError as e:
      previous = [s for s in self.steps() if s != step]
      full = "the disk is full; " if e.errno == errno.ENOSPC else ""
      raise CheckpointError(
        f"could not write checkpoint {step} in {self.directory}: {full}{e}. Free space or "
        f"choose another --workdir. The earlier checkpoints "
        f"{previous or '(none)'} are intact: the same command resumes from the newest."
      ) from e

  def restore_newest(
    self, template_for: Callable[[dict[str, Any]], Any]
  ) -> Optional[tuple[int, Any, dict[str, Any]]]:
    """(step, pytree, meta) of the newest valid checkpoint, or None if there is none.

    `template_for(meta)` returns a pytree (arrays or ShapeDtypeStructs) with the structure,
    shapes and dtypes the checkpoint must have. Invalid checkpoints are reported and skipped;
    if checkpoints exist but none is valid, raises CheckpointError rather than start over.
    """
    steps = self.steps()
    for step in reversed(steps):
      try:
        return (step, *self._restore(step, template_for))
      except Exception as e:  # pylint: disable=broad-except  # any corruption: try older
        log.warning(
          "checkpoint %d in %s is unreadable or corrupt (%s: %s); trying the one before it",
          step,
          self.directory,
          type(e).__name__,
          e,
        )
        self._set_aside(step)
    if steps:
      raise CheckpointError(
        f"none of the checkpoints {steps} in {self.directory} is readable (moved to "
        f"{self.corrupt_directory}). Rerun with --force to start this run over (its "
        "results so far stay in results.json)."
      )
    return None

  def restore(
    self, step: int, template_for: Callable[[dict[str, Any]], Any]
  ) -> tuple[Any, dict[str, Any]]:
    """(pytree, meta) of checkpoint `step`, checked as `restore_newest` checks it; raises
    CheckpointError naming the step when it is missing or invalid."""
    try:
      return self._restore(step, template_for)
    except Exception as e:  # pylint: disable=broad-except  # any corruption
      raise CheckpointError(
        f"checkpoint {step} in {self.directory} is missing, unreadable or "
        f"corrupt ({type(e).__name__}: {e})"
      ) from e

  @property
  def corrupt_directory(self) -> pathlib.Path:
    """Where checkpoints that failed to restore are moved: <directory>_corrupt."""
    return self.directory.parent / f"{self.directory.name}_corrupt"

  def _set_aside(self, step: int) -> None:
    """Moves a bad checkpoint out of the manager's folder (kept for inspection), so the run
    can write that step again."""
    target = self.corrupt_directory / str(step)
    if target.exists():
      shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(self.directory / str(step)), str(target))
    self.manager.reload()

  def _restore(self, step: int, template_for) -> tuple[Any, dict[str, Any]]:
    # The metadata first: it says which structure the arrays have.
    meta = self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[
      META
    ]
    restored = self.manager.restore(
      step, args=ocp.args.Composite(**{ARRAYS: ocp.args.StandardRestore()})
    )[ARRAYS]
    leaves = [np.asarray(restored[k]) for k in sorted(restored)]
    if len(leaves) != meta["num_leaves"]:
      raise ValueError(f"{len(leaves)} arrays, the metadata lists {meta['num_leaves']}")
    for i, (leaf, crc) in enumerate(zip(leaves, meta["crc32"])):
      if _crc(leaf) != crc:
        raise ValueError(f"array {i} fails its checksum")
    expected, treedef = jax.tree.flatten(template_for(meta))
    if len(expected) != len(leaves):
      raise ValueError(f"{len(leaves)} arrays where this config has {len(expected)}")
    out = []
    for i, (leaf, want) in enumerate(zip(leaves, expected)):
      if _is_key(want):
        leaf = jax.random.wrap_key_data(leaf)
        ok = leaf.shape == tuple(want.shape)
      else:
        ok = leaf.shape == tuple(want.shape) and leaf.dtype == want.dtype
      if not ok:
        raise ValueError(
          f"array {i} is {leaf.dtype}{list(leaf.shape)}, this config expects "
          f"{want.dtype}{list(want.shape)}"
        )
      out.append(leaf)
    return jax.tree.unflatten(treedef, out), meta

  def close(self) -> None:
    """Waits for pending saves and closes the manager."""
    self.manager.close()


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in d.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "."))
    else:
      out[name] = value
  return out


def config_differences(
  saved: dict[str, Any],
  current: dict[str, Any],
  defaults: Optional[dict[str, Any]] = None,
  ignored_sections: Collection[str] = (),
) -> list[str]:
  """'key: saved -> current' for every key (dotted) that differs, the resumable keys
  (resumable_keys()) and the keys of `ignored_sections` (other strategies' sections, which
  the run never reads) aside.

  A key absent from `saved` but holding its value in `defaults` is a key the library added
  after the run was saved; a new key's default keeps the earlier behaviour, so it is no
  difference. A saved key of moved_keys() counts as its new key (when its old section is not
  ignored); two that disagree leave the new key holding both values, a difference.
  """
  a, b = (
    {
      key: value
      for key, value in _flatten(d).items()
      if key.split(".", 1)[0] not in ignored_sections
    }
    for d in (saved, current)
  )
  renamed, resumable = moved_keys(), resumable_keys()
  moved: dict[str, list[Any]] = {}
  for old in sorted(set(a) & set(renamed)):
    value, values = a.pop(old), moved.setdefault(renamed[old], [])
    if value not in values:
      values.append(value)
  for key, values in moved.items():
    if key.split(".", 1)[0] not in ignored_sections:
      a.setdefault(key, values[0] if len(values) == 1 else tuple(values))
  added_at_default = {
    key for key, value in _flatten(defaults or {}).items() if key not in a and b.get(key) == value
  }
  diffs = []
  for key in sorted(set(a) | set(b)):
    if key in resumable or key in added_at_default or a.get(key) == b.get(key):
      continue
    diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
  return diffs


def check_resumable(
  run_config_path: pathlib.Path,
  config: ml_collections.ConfigDict,
  run_name: str,
  ignored_sections: Collection[str] = (),
) -> None:
  """Raises ConfigMismatchError if the run's saved config differs in result-changing keys
  (`ignored_sections`: the strategy sections the run does not read)."""
  if not run_config_path.exists():
    return
  saved = json.loads(run_config_path.read_text())
  current = json.loads(config.to_json_best_effort())
  defaults = json.loads(experiment.base_config().to_json_best_effort())
  diffs = config_differences(saved, current, defaults, ignored_sections)
  if diffs:
    raise ConfigMismatchError(
      f"{run_config_path.parent} holds a {run_name} run made with another config; these "
      "keys differ (saved -> now):\n  " + "\n  ".join(diffs) + "\nRerun with the saved "
      "values to resume it, choose another --workdir, or pass --force to discard that run "
      "and start over."
    )

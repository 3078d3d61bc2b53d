"""Starting weights from a user's checkpoint (config.model.init_from); nothing is downloaded.

The file is Flax msgpack of {'params': ..., 'batch_stats': ...} for the same model (write one
with `flax.serialization.to_bytes(jax.device_get(state.variables()))`, or convert a
published checkpoint to this layout). Every array whose path and shape match the model's is
taken from it; the rest keep their fresh initialisation and are named in the log: typically
the classifier head of a model pretrained on another number of classes.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import flax
import numpy as np

from disal_jax.errors import ConfigError

log = logging.getLogger(__name__)


def read_variables(path: str) -> dict[str, Any]:
  """The checkpoint at `path` as a nested dict of numpy arrays; ConfigError naming the file
  when it is missing or not Flax msgpack."""
  file = pathlib.Path(path).expanduser()
  try:
    tree = flax.serialization.msgpack_restore(file.read_bytes())
  except OSError as e:
    raise ConfigError(
      f"config.model.init_from: cannot read {file} ({e.strerror}); give the "
      "path of a Flax msgpack checkpoint, or '' to train from scratch"
    ) from e
  except Exception as e:  # msgpack raises several unrelated types on a corrupt file
    raise ConfigError(
      f"config.model.init_from: {file} is not a Flax msgpack checkpoint "
      f"({type(e).__name__}); see disal_jax/models/pretrained.py for the "
      "layout"
    ) from e
  if not isinstance(tree, dict) or "params" not in tree:
    raise ConfigError(
      f"config.model.init_from: {file} holds no 'params' collection; see "
      "disal_jax/models/pretrained.py for the layout"
    )
  return tree


def merge(
  fresh: dict[str, Any], pretrained: dict[str, Any], source: str = "checkpoint"
) -> tuple[dict[str, Any], list[str]]:
  """`fresh` (the model's collections) with every leaf that `pretrained` holds at the same
  path and shape replaced by it; returns the merged tree and the paths kept fresh."""
  kept: list[str] = []

  def walk(node, other, prefix):
    if isinstance(node, dict):
      other = other if isinstance(other, dict) else {}
      return {k: walk(v, other.get(k), f"{prefix}/{k}") for k, v in node.items()}
    if other is not None and np.shape(other) == np.shape(node):
      return np.asarray(other, dtype=node.dtype)
    kept.append(prefix.lstrip("/"))
    return node

  merged = walk(fresh, pretrained, "")
  total = sum(1 for _ in _leaves(fresh))
  if len(kept) == total:
    raise ConfigError(
      f"config.model.init_from: no array of {source} matches this model "
      f"(config.model: name, width, stem); it holds "
      f"{sorted(pretrained)[:4]} at the top level"
    )
  return merged, kept


def _leaves(node):
  if isinstance(node, dict):
    for v in node.values():
      yield from _leaves(v)
  else:
    yield node


def initialise(params, batch_stats, path: str, cache: dict[str, Any]):
  """(params, batch_stats) started from the checkpoint at `path` (read once into `cache`)."""
  if path not in cache:
    cache[path] = read_variables(path)
    first = True
  else:
    first = False
  merged, kept = merge(
    {"params": flax.core.unfreeze(params), "batch_stats": flax.core.unfreeze(batch_stats)},
    cache[path],
    path,
  )
  if first:
    log.info(
      "model.init_from %s: %s",
      path,
      "every array loaded" if not kept else f"kept fresh (no match): {', '.join(kept)}",
    )
  return merged["params"], merged["batch_stats"]

"""Named config variants: 'name:key=value,...' -> a config with those dotted overrides, and
whether a variant's runs have finished.

Shared by disal_jax.ablation and benchmarks.cycle_cost (no flags defined here).
"""

from __future__ import annotations

import ast
import pathlib

import ml_collections

from disal_jax import loop


def parse_variant(text: str) -> tuple[str, dict[str, object]]:
  """'name:a.b=1,c=x' -> ('name', {'a.b': 1, 'c': 'x'}); a bare 'name' has no overrides."""
  name, _, body = text.partition(":")
  if not name or "/" in name:
    raise ValueError(f"--variant={text!r}: give name:key=value,... (a name without '/')")
  overrides = {}
  for item in filter(None, body.split(",")):
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--variant={text!r}: {item!r} is not key=value")
    try:
      overrides[key] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      overrides[key] = value
  return name, overrides


def variant_config(
  base: ml_collections.ConfigDict, overrides: dict[str, object]
) -> ml_collections.ConfigDict:
  """A copy of `base` with dotted overrides; an unknown key is an error naming it."""
  config = base.copy_and_resolve_references()
  for key, value in overrides.items():
    node = config
    *path, last = key.split(".")
    for part in path:
      node = node[part]
    if last not in node:
      raise ValueError(f"variant key {key!r} is not a config key")
    node[last] = type(node[last])(value) if isinstance(node[last], float) else value
  return config


def finished(config: ml_collections.ConfigDict, variant_dir: pathlib.Path) -> bool:
  """Whether every run of `config` (its strategies, Full Training, config.seed) under
  variant_dir has a results.json with all its cycles: such a run is skipped, so results
  copied in from elsewhere (without their checkpoints) need not run again."""
  return all(loop.run_finished(config, variant_dir, name) for name in loop.run_names(config))

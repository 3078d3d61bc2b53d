"""Strategy registry: an explicit name -> Strategy table (nothing registers on import)."""

from __future__ import annotations

from disal_jax.strategies import (badge, batchbald, coregcn, coreset, disal, gradnorm,
                                  learning_loss, mc_dropout, probcover, random, random_dynamic,
                                  tidal, tod, tracin, typiclust, uncertainty, vaal)
from disal_jax.strategies.base import ConfigSection, Strategy

_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    disal.STRATEGY, random.STRATEGY, mc_dropout.STRATEGY, coreset.STRATEGY, gradnorm.ENTROPY,
    gradnorm.EXPECTED, tracin.FULL, tracin.LAST, learning_loss.STRATEGY, tidal.STRATEGY,
    coregcn.CORE, coregcn.UNCERTAIN, tod.STRATEGY, vaal.STRATEGY, uncertainty.ENTROPY,
    uncertainty.MARGIN, uncertainty.LEAST_CONFIDENCE, badge.STRATEGY, typiclust.STRATEGY,
    probcover.STRATEGY, batchbald.STRATEGY, random_dynamic.STRATEGY)}


def names(segmentation: bool = False) -> list[str]:
  """Every strategy's name, or with segmentation=True those that score segmentation pools."""
  return sorted(n for n, s in _STRATEGIES.items() if s.segmentation or not segmentation)


def get_strategy(name: str) -> Strategy:
  if name not in _STRATEGIES:
    raise KeyError(f"Unknown strategy {name!r}; known strategies: {names()}")
  return _STRATEGIES[name]


def sections() -> dict[str, ConfigSection]:
  """The registered strategies' own config sections by name (shared ones once)."""
  out: dict[str, ConfigSection] = {}
  for strategy in _STRATEGIES.values():
    section = strategy.config_section
    if section is None:
      continue
    if out.setdefault(section.name, section) is not section:
      raise ValueError(f"two config sections named {section.name!r}")
  return out


def sections_read(name: str) -> set[str]:
  """The config sections strategy `name`'s runs read: its own and its `reads_sections`; none
  for a name that is not a strategy (the Full Training run)."""
  strategy = _STRATEGIES.get(name)
  if strategy is None:
    return set()
  own = {strategy.config_section.name} if strategy.config_section else set()
  return own | set(strategy.reads_sections)

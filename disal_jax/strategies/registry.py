"""Strategy registry: an explicit name -> Strategy table (nothing registers on import)."""

from __future__ import annotations

from disal_jax.strategies import (badge, batchbald, coregcn, coreset, disal, embedding,
                                  gradnorm, learning_loss, mc_dropout, probcover, random,
                                  random_dynamic, tidal, tod, tracin, typiclust, uncertainty,
                                  vaal)
from disal_jax.strategies.base import ConfigSection, Strategy

_STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    disal.STRATEGY, random.STRATEGY, mc_dropout.STRATEGY, coreset.STRATEGY, gradnorm.ENTROPY,
    gradnorm.EXPECTED, tracin.FULL, tracin.LAST, learning_loss.STRATEGY, tidal.STRATEGY,
    coregcn.CORE, coregcn.UNCERTAIN, tod.STRATEGY, vaal.STRATEGY, uncertainty.ENTROPY,
    uncertainty.MARGIN, uncertainty.LEAST_CONFIDENCE, badge.STRATEGY, typiclust.STRATEGY,
    probcover.STRATEGY, batchbald.STRATEGY, random_dynamic.STRATEGY)}

# Sections that no strategy owns, each read by the strategies that name it in reads_sections.
_SHARED_SECTIONS: tuple[ConfigSection, ...] = (embedding.SECTION,)


def names(segmentation: bool = False) -> list[str]:
  """Every strategy's name, or with segmentation=True those that score segmentation pools."""
  return sorted(n for n, s in _STRATEGIES.items() if s.segmentation or not segmentation)


def get_strategy(name: str) -> Strategy:
  if name not in _STRATEGIES:
    raise KeyError(f"Unknown strategy {name!r}; known strategies: {names()}")
  return _STRATEGIES[name]


def sections() -> dict[str, ConfigSection]:
  """The registered strategies' config sections by name: their own (shared ones once) and
  those no strategy owns (the `embedding` section)."""
  out: dict[str, ConfigSection] = {}
  owned = [s.config_section for s in _STRATEGIES.values() if s.config_section is not None]
  for section in owned + list(_SHARED_SECTIONS):
    if out.setdefault(section.name, section) is not section:
      raise ValueError(f"two config sections named {section.name!r}")
  return out


def dataset_checks(name: str) -> list[ConfigSection]:
  """The sections whose `check_for_dataset` a run of strategy `name` needs: its own and every
  one it reads (random_dynamic trains with DISAL's hook, so DISAL's checks of the dataset
  hold for it too)."""
  strategy = get_strategy(name)
  every = sections()
  own = [strategy.config_section] if strategy.config_section is not None else []
  return own + [every[s] for s in strategy.reads_sections if s in every]


def sections_read(name: str) -> set[str]:
  """The config sections strategy `name`'s runs read: its own and its `reads_sections`; none
  for a name that is not a strategy (the Full Training run)."""
  strategy = _STRATEGIES.get(name)
  if strategy is None:
    return set()
  own = {strategy.config_section.name} if strategy.config_section else set()
  return own | set(strategy.reads_sections)

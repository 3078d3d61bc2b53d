"""Strategy registry: an explicit name -> Strategy table (nothing registers on import).

The built-in strategies are the modules named in BUILT_IN, one line each: a module of
`disal_jax/strategies/` that defines `STRATEGY` (or `STRATEGIES`, a tuple, for a module with
several). Adding a strategy is its module and its line here; the config sections, the resume
checks (ConfigSection.resume_safe, .moved_keys), the loop, sweeps, reports and the annotation
rounds read what it declares. `registered(...)` adds strategies for a with-block (a test, a
notebook's own strategy) and takes them out again.
"""

from __future__ import annotations

import contextlib
import importlib
import types
from typing import Iterator

from disal_jax.strategies import embedding
from disal_jax.strategies.base import ConfigSection, Strategy

# The built-in strategy modules, in table order (the order of the config's sections).
BUILT_IN = (
  "disal",
  "random",
  "mc_dropout",
  "coreset",
  "gradnorm",
  "tracin",
  "learning_loss",
  "tidal",
  "coregcn",
  "tod",
  "vaal",
  "uncertainty",
  "badge",
  "typiclust",
  "probcover",
  "batchbald",
  "random_dynamic",
)

# Sections that no strategy owns, each read by the strategies that name it in reads_sections.
_SHARED_SECTIONS: tuple[ConfigSection, ...] = (embedding.SECTION,)


def module_strategies(module: types.ModuleType) -> tuple[Strategy, ...]:
  """The strategies a module defines: its `STRATEGIES` tuple, or its one `STRATEGY`."""
  found = getattr(module, "STRATEGIES", None)
  if found is None:
    found = (module.STRATEGY,) if hasattr(module, "STRATEGY") else ()
  if not found or not all(isinstance(s, Strategy) for s in found):
    raise TypeError(
      f"{module.__name__} defines no STRATEGY (a Strategy) or STRATEGIES (a tuple of them)"
    )
  return tuple(found)


def _table(module_names: tuple[str, ...]) -> dict[str, Strategy]:
  table: dict[str, Strategy] = {}
  for module_name in module_names:
    module = importlib.import_module(f"{__package__}.{module_name}")
    for strategy in module_strategies(module):
      if table.setdefault(strategy.name, strategy) is not strategy:
        raise ValueError(f"two strategies named {strategy.name!r} ({module.__name__})")
  return table


_STRATEGIES: dict[str, Strategy] = _table(BUILT_IN)


def names(segmentation: bool = False) -> list[str]:
  """Every strategy's name, or with segmentation=True those that score segmentation pools."""
  return sorted(n for n, s in _STRATEGIES.items() if s.segmentation or not segmentation)


def get_strategy(name: str) -> Strategy:
  """The registered Strategy `name`; KeyError naming the known ones otherwise."""
  if name not in _STRATEGIES:
    raise KeyError(f"Unknown strategy {name!r}; known strategies: {names()}")
  return _STRATEGIES[name]


@contextlib.contextmanager
def registered(*strategies: Strategy) -> Iterator[None]:
  """The registry with `strategies` added (and their config sections, `sections()`) inside
  the with-block, as it was after it. A name already registered raises ValueError: a built-in
  is never shadowed."""
  given = [s.name for s in strategies]
  clashes = sorted({n for n in given if n in _STRATEGIES or given.count(n) > 1})
  if clashes:
    raise ValueError(f"strategy names already registered or given twice: {clashes}")
  _STRATEGIES.update((s.name, s) for s in strategies)
  try:
    sections()  # a section named like another is refused before anything runs
    yield
  finally:
    for strategy in strategies:
      _STRATEGIES.pop(strategy.name, None)


def sections() -> dict[str, ConfigSection]:
  """The registered strategies' config sections by name: their own (shared ones once) and
  those no strategy owns (the `embedding` section)."""
  out: dict[str, ConfigSection] = {}
  owned = [s.config_section for s in _STRATEGIES.values() if s.config_section is not None]
  for section in owned + list(_SHARED_SECTIONS):
    if out.setdefault(section.name, section) is not section:
      raise ValueError(f"two config sections named {section.name!r}")
  return out


def _dotted_keys(tree: dict, prefix: str = "") -> set[str]:
  out = set()
  for key, value in tree.items():
    out |= _dotted_keys(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key}
  return out


def resume_safe_keys() -> set[str]:
  """Dotted keys ('vaal.max_loss') the registered sections declare resume-safe: a run
  resumes with them changed (ConfigSection.resume_safe). Raises ValueError for a declared key
  its section does not have (a misspelt one would silently not be resume-safe)."""
  out = set()
  for name, section in sections().items():
    unknown = set(section.resume_safe) - _dotted_keys(section.defaults().to_dict())
    if unknown:
      raise ValueError(
        f"config section {name!r} declares resume-safe keys it does not have: {sorted(unknown)}"
      )
    out |= {f"{name}.{key}" for key in section.resume_safe}
  return out


def moved_keys() -> dict[str, str]:
  """{earlier dotted key: the dotted key that holds its setting now} the registered sections
  declare (ConfigSection.moved_keys), e.g. 'typiclust.embedding' -> 'embedding.source'."""
  return {
    f"{name}.{old}": new
    for name, section in sections().items()
    for old, new in section.moved_keys.items()
  }


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

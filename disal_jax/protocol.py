"""Which AL protocol a run follows: 'unified' (every strategy alike) or 'reference' (each
strategy as its published code runs it).

The unified protocol (the default) scores the whole pool (or config.al.subset_size rows) with
a fresh model each cycle (or config.train.warm_start), the same for every strategy of a
comparison. Under config.al.protocol='reference', a strategy that declares a
`ReferenceProtocol` runs with its own scored subset and warm start instead; the run's saved
config holds the values it ran with (docs/strategies.md lists them with their sources).
"""

from __future__ import annotations

import logging

import ml_collections

from disal_jax.strategies.base import Strategy

log = logging.getLogger(__name__)


def run_config(config: ml_collections.ConfigDict, strategy: Strategy) -> ml_collections.ConfigDict:
  """The config a run of `strategy` follows: `config` itself under the unified protocol (or
  for a strategy without a reference protocol), else a copy with al.subset_size and
  train.warm_start set to the strategy's reference values."""
  reference = strategy.reference
  if config.al.protocol != "reference" or reference is None:
    return config
  changed = config.copy_and_resolve_references()
  changed.al.subset_size = reference.subset_size
  changed.train.warm_start = reference.warm_start
  log.info(
    "%s under al.protocol='reference': al.subset_size=%d, train.warm_start=%s (%s)",
    strategy.name,
    reference.subset_size,
    reference.warm_start,
    reference.source,
  )
  return changed

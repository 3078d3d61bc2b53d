"""al.protocol: 'unified' runs every strategy alike; 'reference' runs each with its published
code's scored subset and warm start (disal_jax.protocol)."""

import dataclasses
import json
import pathlib

import jax
import numpy as np
import pytest

from disal_jax import loop, protocol
from disal_jax.strategies import registry
from disal_jax.strategies.base import ReferenceProtocol
from tests.helpers import tiny_config

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "strategies.md"
WITH_REFERENCE = [n for n in registry.names() if registry.get_strategy(n).reference is not None]


@pytest.mark.parametrize("name", registry.names())
def test_each_strategy_runs_with_its_reference_values_only_when_asked(name):
  strategy = registry.get_strategy(name)
  unified = tiny_config(**{"al.subset_size": 7, "train.warm_start": False})
  assert protocol.run_config(unified, strategy) is unified
  asked = tiny_config(
    **{"al.protocol": "reference", "al.subset_size": 7, "train.warm_start": False}
  )
  run = protocol.run_config(asked, strategy)
  reference = strategy.reference
  if reference is None:  # the unified protocol is its reference's
    assert run is asked
    return
  assert (run.al.subset_size, run.train.warm_start) == (reference.subset_size, reference.warm_start)
  assert (asked.al.subset_size, asked.train.warm_start) == (7, False)  # a copy was changed
  assert reference.source, name


def test_docs_list_every_reference_protocol_with_its_source():
  text = DOCS.read_text()
  for name in WITH_REFERENCE:
    reference = registry.get_strategy(name).reference
    warm = "yes" if reference.warm_start else "no"
    subset = f"{reference.subset_size:,}" if reference.subset_size else "whole pool"
    assert f"| `{name}` | {subset} | {warm} |" in text, name


@pytest.mark.slow
def test_the_loop_scores_the_reference_subset_and_warm_starts(tmp_path, monkeypatch):
  """A strategy with a reference protocol scores its subset and trains on from the previous
  cycle's weights; one without keeps the whole pool and a fresh model; the run folder saves
  what the run followed, so a rerun resumes (here: finds it complete)."""
  from disal_jax.training.trainer import Trainer

  toy = dataclasses.replace(
    registry.get_strategy("random"), name="toy", reference=ReferenceProtocol(100, True, "a test")
  )
  monkeypatch.setitem(registry._STRATEGIES, "toy", toy)
  seen = []
  original = Trainer.train_cycle

  def spy(self, state, labeled, pool_rows, cycle_seed, **kw):
    start = jax.device_get(state.params)
    result = original(self, state, labeled, pool_rows, cycle_seed, **kw)
    seen.append((len(pool_rows), start, jax.device_get(result.state.params)))
    return result

  monkeypatch.setattr(Trainer, "train_cycle", spy)
  config = tiny_config(
    **{"strategies": "toy,margin", "data.max_train": 300, "al.protocol": "reference"}
  )
  results = loop.run_experiment(config, str(tmp_path))
  (toy0, toy1, margin0, margin1) = seen
  assert (toy0[0], toy1[0]) == (100, 100)  # 270 then 255 unlabeled rows
  assert (margin0[0], margin1[0]) == (270, 255)
  same = lambda a, b: all(
    np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )
  assert same(toy1[1], toy0[2]) and not same(margin1[1], margin0[2])
  saved = json.loads((tmp_path / "toy/seed_0" / loop.RUN_CONFIG).read_text())
  assert (saved["al"]["subset_size"], saved["train"]["warm_start"]) == (100, True)
  assert len(results["toy"]) == 2
  assert loop.run_experiment(config, str(tmp_path))["toy"] == results["toy"]

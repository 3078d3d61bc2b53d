"""Adding a strategy is its module and one line in registry.BUILT_IN: the registry reads the
module's declarations, `registry.registered` adds one for a with-block without leaking, and
docs/adding-a-strategy.md's worked example (strategies/examples/tempered_confidence.py) is
registered and meets the contract in seconds (`testing.check_contract`)."""

import ast
import dataclasses
import pathlib
import re
import types

import jax
import numpy as np
import pytest

from disal_jax import experiment
from disal_jax.errors import ConfigError
from disal_jax.strategies import base, registry, testing, uncertainty
from disal_jax.strategies.examples import tempered_confidence
from tests.helpers import REPO

STRATEGIES_DIR = pathlib.Path(registry.__file__).parent
DOC = REPO / "docs" / "adding-a-strategy.md"
EXAMPLE = pathlib.Path(tempered_confidence.__file__)


def _defines_a_strategy(path: pathlib.Path) -> bool:
  """Whether the module assigns STRATEGY or STRATEGIES at its top level (read with ast)."""
  for node in ast.parse(path.read_text(), str(path)).body:
    targets = (
      node.targets
      if isinstance(node, ast.Assign)
      else ([node.target] if isinstance(node, ast.AnnAssign) else [])
    )
    if any(isinstance(t, ast.Name) and t.id in ("STRATEGY", "STRATEGIES") for t in targets):
      return True
  return False


def test_every_strategy_module_has_its_one_line_in_the_registry():
  """A module that defines a strategy but is not in BUILT_IN was never registered (its line
  forgotten); one listed twice would be refused at import."""
  modules = {p.stem for p in STRATEGIES_DIR.glob("*.py") if _defines_a_strategy(p)}
  assert modules == set(registry.BUILT_IN)
  assert len(registry.BUILT_IN) == len(set(registry.BUILT_IN))


def test_the_table_holds_every_strategy_of_the_built_in_modules_in_their_order():
  expected = [
    s.name
    for m in registry.BUILT_IN
    for s in registry.module_strategies(__import__(f"disal_jax.strategies.{m}", fromlist=["_"]))
  ]
  assert list(registry._STRATEGIES) == expected and sorted(expected) == registry.names()
  assert registry.module_strategies(uncertainty) == (
    uncertainty.ENTROPY,
    uncertainty.MARGIN,
    uncertainty.LEAST_CONFIDENCE,
  )
  with pytest.raises(TypeError, match="defines no STRATEGY"):
    registry.module_strategies(types.ModuleType("nothing_here"))


def test_registered_adds_a_strategy_and_its_section_for_the_block_only():
  name = tempered_confidence.STRATEGY.name
  with registry.registered(tempered_confidence.STRATEGY):
    assert registry.get_strategy(name) is tempered_confidence.STRATEGY
    assert name in registry.names() and name in registry.sections()
    config = experiment.base_config()
    assert config.tempered_confidence.temperature == 2.0
    config.strategies = name
    experiment.validate(config)  # the name and its section's check, as the CLI runs them
    config.tempered_confidence.temperature = 0.0
    with pytest.raises(ConfigError, match="tempered_confidence.temperature"):
      experiment.validate(config)
  assert name not in registry.names() and name not in registry.sections()
  assert "tempered_confidence" not in experiment.base_config()


def test_registered_never_shadows_a_strategy_or_a_section_and_leaves_nothing_behind():
  before = dict(registry._STRATEGIES)
  with pytest.raises(ValueError, match="already registered"):
    with registry.registered(dataclasses.replace(registry.get_strategy("random"))):
      pass
  clash = dataclasses.replace(
    tempered_confidence.STRATEGY,
    name="clash",
    config_section=dataclasses.replace(tempered_confidence.STRATEGY.config_section, name="vaal"),
  )
  with pytest.raises(ValueError, match="two config sections named 'vaal'"):
    with registry.registered(clash):
      pass
  assert registry._STRATEGIES == before


def test_the_example_meets_the_contract_in_the_fast_tier():
  with registry.registered(tempered_confidence.STRATEGY):
    picks = testing.check_contract("tempered_confidence")
  assert picks.shape == (testing.CONTRACT_K,)


def test_the_example_at_temperature_one_scores_as_least_confidence():
  """An independent reference of its score: the built-in least_confidence is T = 1."""
  config = testing.tiny_config(
    tempered_confidence.STRATEGY, **{"tempered_confidence.temperature": 1.0}
  )
  ctx = testing.tiny_context(config, tempered_confidence.STRATEGY)
  reference = testing.tiny_context(config, "least_confidence")
  at_one = tempered_confidence.score(ctx)
  np.testing.assert_allclose(at_one, uncertainty.LEAST_CONFIDENCE.score(reference), rtol=1e-6)
  at_two = tempered_confidence.score(
    dataclasses.replace(ctx, config=testing.tiny_config(tempered_confidence.STRATEGY))
  )  # the default, T = 2
  assert np.all(at_two > at_one)  # a flatter softmax: every top probability lower


_NEGATE = jax.jit(lambda x: -x)


def test_check_contract_names_the_clause_a_strategy_breaks():
  def labeled_rows(evidence, ctx, k):
    del evidence
    return ctx.labeled[:k]

  def count_shaped(ctx):  # a shape that follows the candidates' count: compiles every cycle
    return np.asarray(_NEGATE(np.arange(len(ctx.candidates), dtype=np.float32)))

  bad = base.Strategy(
    name="bad", record="none", score=lambda ctx: np.zeros(len(ctx.candidates)), select=labeled_rows
  )
  with pytest.raises(AssertionError, match="'bad': picks .* are not all candidates"):
    testing.check_contract(bad)
  recompiles = base.Strategy(name="recompiles", record="none", score=count_shaped)
  with pytest.raises(AssertionError, match=r"'recompiles': compiled [1-9]\d* program"):
    testing.check_contract(recompiles)


def _python_blocks(text: str) -> list[str]:
  return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_doc_quotes_the_example_file_whole():
  assert _python_blocks(DOC.read_text())[0] == EXAMPLE.read_text()


def test_the_doc_and_contributing_state_the_steps_and_contributing_links_to_the_doc():
  doc = DOC.read_text()
  assert "disal_jax/strategies/examples/tempered_confidence.py" in doc
  assert "BUILT_IN" in doc and "check_contract" in doc
  contributing = (REPO / "CONTRIBUTING.md").read_text()
  section = contributing.split("## Adding a strategy", 1)[1].split("\n## ", 1)[0]
  assert "(docs/adding-a-strategy.md)" in section
  assert len(section.strip().splitlines()) <= 6  # a pointer, not a second copy of the steps


@pytest.mark.slow
def test_a_registered_strategy_runs_through_the_loop_and_resumes(tmp_path):
  """Nothing but its module and its registration: the loop trains, scores, labels, saves and
  finds the run complete when it is run again."""
  from disal_jax import loop
  from tests.helpers import tiny_config

  with registry.registered(tempered_confidence.STRATEGY):
    config = tiny_config(**{"strategies": "tempered_confidence", "data.max_train": 120})
    results = loop.run_experiment(config, str(tmp_path))
    rows = results["tempered_confidence"]
    assert [r.labeled for r in rows] == [12, 18]
    selected = np.load(tmp_path / "tempered_confidence" / "seed_0" / "selected_cycle0.npy")
    assert selected.shape == (6,) and len(set(selected.tolist())) == 6
    assert loop.run_experiment(config, str(tmp_path))["tempered_confidence"] == rows

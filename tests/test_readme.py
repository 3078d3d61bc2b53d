"""README's library example runs as written, and the README stays short."""

import re

import numpy as np

from tests.helpers import REPO


def test_the_library_example_runs_and_picks_distinct_pool_rows():
  text = (REPO / "README.md").read_text(encoding="utf-8")
  blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
  assert len(blocks) == 1
  namespace = {}
  exec(compile(blocks[0], "README.md", "exec"), namespace)  # pylint: disable=exec-used
  for picks in (namespace["query"], np.asarray(namespace["picks"])):
    assert len(picks) == 100 and len(set(picks.tolist())) == 100
    assert picks.min() >= 0 and picks.max() < 5000
  assert len(text.splitlines()) <= 160

"""Fixtures shared by the tests; helpers live in tests/helpers.py."""

from __future__ import annotations

import pytest

from tests.helpers import SHARED_DATA


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  """A cache folder for the whole session (extracted archives, decoded arrays)."""
  return str(tmp_path_factory.mktemp("disal_cache"))


@pytest.fixture(scope="session")
def cifar10_archive():
  if not SHARED_DATA.exists():
    pytest.fail(f"{SHARED_DATA} is missing: the tests need ../shared/data beside the repo")
  return str(SHARED_DATA)

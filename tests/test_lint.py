"""The repository passes its own linter and formatter (pyproject.toml [tool.ruff]), as
pre-commit checks."""

import pathlib
import subprocess
import sys

from tests.helpers import REPO


def test_ruff_finds_nothing():
  # the ruff that the test extra installed beside this interpreter
  ruff = pathlib.Path(sys.executable).with_name("ruff")
  out = subprocess.run(
    [str(ruff), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, check=False
  )
  assert out.returncode == 0, out.stdout + out.stderr


def test_ruff_format_changes_nothing():
  ruff = pathlib.Path(sys.executable).with_name("ruff")
  out = subprocess.run(
    [str(ruff), "format", "--check", "--no-cache", "."],
    cwd=REPO,
    capture_output=True,
    text=True,
    check=False,
  )
  assert out.returncode == 0, out.stdout + out.stderr

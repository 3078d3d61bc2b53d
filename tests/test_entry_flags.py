"""Flags belong to the entry modules and are defined when an entry runs: the library and every
entry module import into one process without defining a flag (two entries defining --config
at import once raised DuplicateFlagError), and each command's --help still lists its flags."""

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO, subprocess_env

# python -m <module>: the flags its --help lists (those it defines itself).
ENTRY_FLAGS = {
  "disal_jax.main": {"config", "workdir", "force"},
  "disal_jax.sweep": {
    "config",
    "strategies",
    "seeds",
    "workdir",
    "force",
    "workers",
    "devices_per_worker",
  },
  "disal_jax.ablation": {"config", "variant", "seeds", "workdir", "table_only", "baseline"},
  "disal_jax.annotate": {"config", "workdir", "images", "budget", "strategy", "replace", "labels"},
  "disal_jax.config_keys": {"prefix"},
  "disal_jax.data.prepare": {"dataset", "data_dir", "manual_dir", "probe_timeout_s"},
}

# Imports every module of the package, the entry modules first, and prints what it found.
# absl.app and orbax define flags of their own on import: imported before the snapshot.
_IMPORT_EVERYTHING = """
import importlib, json, pkgutil
from absl import app, flags
import orbax.checkpoint
before = set(flags.FLAGS)
import disal_jax.main, disal_jax.sweep, disal_jax.ablation, disal_jax.annotate.__main__
import disal_jax.config_keys, disal_jax.data.prepare
modules = [m.name for m in pkgutil.walk_packages(disal_jax.__path__, "disal_jax.")]
for name in modules:
  importlib.import_module(name)
print(json.dumps({
    "modules": modules, "new_flags": sorted(set(flags.FLAGS) - before),
    "defined_by": sorted(m for m in flags.FLAGS.flags_by_module_dict()
                         if m.startswith("disal_jax"))}))
"""

_FLAG_LINE = re.compile(r"^\s+(?:-\w,)?--(?:\[no\])?(\w+):", re.MULTILINE)


def test_the_library_and_every_entry_module_import_in_one_process_defining_no_flag():
  done = subprocess.run(
    [sys.executable, "-c", _IMPORT_EVERYTHING],
    cwd=REPO,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  found = json.loads(done.stdout.splitlines()[-1])
  entries = {m + ".__main__" if m == "disal_jax.annotate" else m for m in ENTRY_FLAGS}
  assert entries <= set(found["modules"])  # the walk reached them all
  assert "disal_jax.training.trainer" in found["modules"]
  assert found["new_flags"] == [] and found["defined_by"] == [], found


# One interpreter per command; those that import JAX take ~5 s each.
_LIGHT = ("disal_jax.config_keys", "disal_jax.data.prepare")


@pytest.mark.parametrize(
  "module",
  [pytest.param(m, marks=() if m in _LIGHT else pytest.mark.slow) for m in sorted(ENTRY_FLAGS)],
)
def test_each_commands_help_lists_its_flags(module):
  done = subprocess.run(
    [sys.executable, "-m", module, "--help"],
    cwd=REPO,
    env=subprocess_env(),
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert "Traceback" not in done.stderr, done.stderr[-3000:]
  assert set(_FLAG_LINE.findall(done.stdout)) == ENTRY_FLAGS[module], done.stdout

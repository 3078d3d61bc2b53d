"""disal_jax/xla_cpu.py: a stand-alone convolution leaves YNNPACK for XLA's own kernels, YNNPACK
fuses dots with elementwise ops; a user's flag stands."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
from jax import lax

from disal_jax import xla_cpu
from tests.helpers import REPO, subprocess_env

_USER = f"{xla_cpu.FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"


def _conv_program(compiler_options=None) -> str:
  x, w = jnp.ones((4, 16, 16, 64)), jnp.ones((3, 3, 64, 64))
  conv = lambda x, w: lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
  )
  return jax.jit(conv, compiler_options=compiler_options).lower(x, w).compile().as_text()


def test_setting_is_appended_once_and_a_users_own_flag_stands():
  ours = f"{xla_cpu.FLAG}={','.join(xla_cpu.FUSIONS)}"
  assert xla_cpu.with_setting("") == ours
  forced = "--xla_force_host_platform_device_count=8"
  assert xla_cpu.with_setting(forced) == f"{forced} {ours}"
  assert xla_cpu.with_setting(xla_cpu.with_setting(forced)) == f"{forced} {ours}"
  assert xla_cpu.with_setting(f"{forced} {_USER}") == f"{forced} {_USER}"
  assert "INDIVIDUAL_CONVOLUTION" not in ours and "INDIVIDUAL_DOT" in ours


def test_this_process_compiles_convolutions_without_ynnpack():
  # conftest applies the platform settings before any backend starts, as every entry point.
  assert "__ynn_fusion" not in _conv_program()
  # ...and XLA's own setting, per program, still gives them to YNNPACK (what the benchmark
  # compares against), so the check above can fail.
  assert "__ynn_fusion" in _conv_program(xla_cpu.compiler_options(xla_cpu.XLA_DEFAULT_FUSIONS))


def test_this_process_fuses_elementwise_ops_into_ynnpack_dots():
  def root_is_ynnpack(compiler_options=None) -> bool:
    fn = lambda x, w: jnp.tanh(x @ w) * 2.0 + 1.0
    hlo = (
      jax.jit(fn, compiler_options=compiler_options)
      .lower(jnp.ones((64, 128)), jnp.ones((128, 128)))
      .compile()
      .as_text()
    )
    return any(
      line.strip().startswith("ROOT") and "__ynn_fusion" in line for line in hlo.splitlines()
    )

  # one YNNPACK fusion computes the product and what follows it ...
  assert root_is_ynnpack()
  # ... where XLA's own list (minus convolutions) leaves the elementwise ops to XLA
  assert not root_is_ynnpack(xla_cpu.compiler_options(xla_cpu.WITHOUT_CONVOLUTIONS))


def test_import_changes_nothing_and_the_entry_points_setting_keeps_the_users():
  """Importing the package (every entry module included) leaves XLA_FLAGS and JAX's backends
  alone; platform_settings.apply() then appends the setting, keeps a user's own flag, and is
  inert once a backend has started."""
  script = (
    "import os, sys\n"
    "if sys.argv[1] == 'started':\n"
    "  import jax; jax.devices()\n"
    "import disal_jax, disal_jax.main, disal_jax.loop, disal_jax.annotate.rounds\n"
    "import disal_jax.strategies.registry, disal_jax.report.sweep_report\n"
    "from jax._src import xla_bridge\n"
    "print(os.environ.get('XLA_FLAGS', ''))\n"
    "print(xla_bridge.backends_are_initialized())\n"
    "from disal_jax import platform_settings\n"
    "platform_settings.apply()\n"
    "print(os.environ.get('XLA_FLAGS', ''))\n"
  )

  def flags(xla_flags: str, mode: str) -> list[str]:
    done = subprocess.run(
      [sys.executable, "-c", script, mode],
      capture_output=True,
      text=True,
      cwd=REPO,
      env=subprocess_env(XLA_FLAGS=xla_flags),
      check=True,
    )
    return done.stdout.strip().splitlines()[-3:]

  forced = "--xla_force_host_platform_device_count=2"
  assert flags(forced, "fresh") == [forced, "False", xla_cpu.with_setting(forced)]
  assert flags(f"{forced} {_USER}", "fresh")[2] == f"{forced} {_USER}"
  assert flags(forced, "started") == [forced, "True", forced]

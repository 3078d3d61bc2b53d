"""pyproject.toml states compatible ranges; requirements/lock.txt (what CI installs) pins one
tested version of each, inside its range."""

import tomllib

from packaging.requirements import Requirement

from tests.helpers import REPO


def _declared() -> list[Requirement]:
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  return [Requirement(r) for r in project["dependencies"] + extras["test"]]


def _locked() -> dict[str, str]:
  pins = {}
  for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
    if line.strip() and not line.startswith("#"):
      name, _, version = line.partition("==")
      pins[name.lower().replace("_", "-")] = version.strip()
  return pins


def test_every_dependency_is_a_range_the_lock_satisfies():
  pins = _locked()
  for requirement in _declared():
    name = requirement.name.lower().replace("_", "-")
    operators = {spec.operator for spec in requirement.specifier}
    if name != "ruff":  # the linter stays exact: a new release changes what it reports
      assert ">=" in operators and "<" in operators, f"{requirement} is not a range"
    assert name in pins, f"{name} is not in requirements/lock.txt"
    assert requirement.specifier.contains(pins[name]), (
      f"lock {name}=={pins[name]} outside {requirement}"
    )


# jax releases the project must install beside: the lent GPU image's (jax 0.11 with CUDA 13)
# and the newest minor published when the ranges were set (0.12).
JAX_RELEASES_BESIDE = ("0.11.0", "0.11.4", "0.12.0", "0.12.2")


def test_the_jax_ranges_admit_the_accelerator_images_jax():
  """jax, jaxlib and the cuda12/cuda13/tpu extras admit jax 0.11.x and 0.12.x, so that
  `pip install -e .` keeps a machine's own jax (an exact pin would replace it or fail)."""
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  extras = project["optional-dependencies"]
  jax_family = [
    Requirement(r)
    for r in project["dependencies"] + extras["cuda12"] + extras["cuda13"] + extras["tpu"]
    if Requirement(r).name in ("jax", "jaxlib")
  ]
  assert len(jax_family) == 5
  for requirement in jax_family:
    for version in JAX_RELEASES_BESIDE:
      assert requirement.specifier.contains(version), f"{requirement} refuses jax {version}"


def test_no_locked_dependency_caps_jax_below_the_ranges():
  """The locked libraries that require jax or jaxlib (their installed metadata: CI installs
  the lock) admit 0.11.x and 0.12.x as well: a cap in flax, optax, orbax or clu would make pip
  replace a machine's jax."""
  from importlib.metadata import distributions

  locked = _locked()
  checked = set()
  for dist in distributions():
    name = dist.metadata["Name"].lower().replace("_", "-")
    if name in ("jax", "jaxlib") or name not in locked:
      continue
    for line in dist.requires or []:
      requirement = Requirement(line)
      if requirement.name not in ("jax", "jaxlib") or (
        requirement.marker is not None and "extra" in str(requirement.marker)
      ):
        continue
      checked.add(name)
      for version in JAX_RELEASES_BESIDE:
        assert requirement.specifier.contains(version), f"{name} {dist.version}: {line}"
  assert {"flax", "optax", "orbax-checkpoint"} <= checked

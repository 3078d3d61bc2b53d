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

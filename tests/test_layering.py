"""The package's layers, read from its source: no import cycle, no import of a higher layer,
errors.py imports nothing of disal_jax, and every exception class the user sees lives there.

The imports are read with `ast` (nothing is imported), imports inside functions included: a
deferred import still ties the two modules together.
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

import disal_jax

PACKAGE = pathlib.Path(disal_jax.__file__).parent

# Bottom to top: a top-level module or subpackage of disal_jax imports only its own layer or
# the ones below (imports within a layer are free, the cycle test keeps them acyclic).
LAYERS = (
  ("errors",),  # user-facing errors and check_value
  (
    "config",
    "faults",
    "xla_cpu",
    "host_memory",
    "platform_settings",
    "distributed",
    "run_lock",
    "pool",
  ),  # config values and process utilities
  ("data", "models"),
  ("training",),
  ("strategies",),
  ("experiment", "protocol", "checkpoint", "config_keys", "report"),  # read the registries
  ("cycle",),  # one AL cycle: the loop's and the annotation rounds' path
  ("loop",),
  ("variants", "cli", "annotate", "main", "sweep", "ablation"),  # the command line
)
LAYER = {unit: level for level, units in enumerate(LAYERS) for unit in units}
LAYER[""] = 0  # disal_jax/__init__.py: a docstring, no code


def _modules() -> dict[str, pathlib.Path]:
  """{dotted module name: its file} for every module of the package."""
  modules = {}
  for path in PACKAGE.rglob("*.py"):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts = parts[:-1]
    modules[".".join(parts)] = path
  return modules


def import_graph() -> dict[str, set[str]]:
  """{module: the package's modules it imports}, at any depth of its code; `from a.b import c`
  counts as importing a.b.c if that is a module, else a.b."""
  modules = _modules()

  def resolve(name: str):
    while name and name not in modules:
      name = name.rpartition(".")[0]
    return name or None

  graph = {}
  for module, path in modules.items():
    graph[module] = set(_imported_by_name(module, path))
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative: anchored at the module's package
          anchor = module.split(".")[: None if path.name == "__init__.py" else -1]
          anchor = anchor[: len(anchor) - node.level + 1]
          base = ".".join(anchor + ([base] if base else []))
        names = [f"{base}.{alias.name}" for alias in node.names]
      else:
        continue
      for name in names:
        target = resolve(name) if name.split(".")[0] == PACKAGE.name else None
        if target is not None and target != module:
          graph[module].add(target)
  return graph


# The strategy registry imports its built-in modules by name (registry.BUILT_IN, so that adding
# one is one line): each counts as an import of the registry.
REGISTRY = "disal_jax.strategies.registry"


def _imported_by_name(module: str, path: pathlib.Path) -> list[str]:
  """The modules `module` imports by name: the registry's BUILT_IN, read with `ast`."""
  if module != REGISTRY:
    return []
  for node in ast.parse(path.read_text(), str(path)).body:
    if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["BUILT_IN"]:
      return [f"disal_jax.strategies.{name}" for name in ast.literal_eval(node.value)]
  raise AssertionError(f"{path} has no BUILT_IN tuple")


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
  """One cycle of `graph` as [a, b, ..., a], or [] if it has none."""
  done, path = set(), []
  on_path = {}

  def visit(node):
    on_path[node] = len(path)
    path.append(node)
    for target in sorted(graph.get(node, ())):
      if target in on_path:
        return path[on_path[target] :] + [target]
      if target not in done:
        cycle = visit(target)
        if cycle:
          return cycle
    path.pop()
    del on_path[node]
    done.add(node)
    return []

  for node in sorted(graph):
    if node not in done:
      cycle = visit(node)
      if cycle:
        return cycle
  return []


def unit(module: str) -> str:
  """The top-level module or subpackage of disal_jax that `module` is or lies in."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else ""


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"b", "c"}}) == []
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_sees_imports_at_the_top_and_inside_functions():
  graph = import_graph()
  assert "disal_jax.strategies.registry" in graph["disal_jax.experiment"]  # inside base_config
  assert "disal_jax.strategies.base" in graph["disal_jax.strategies.random"]
  assert "disal_jax.errors" in graph["disal_jax.cli"]
  assert "disal_jax.strategies.disal" in graph[REGISTRY]  # by name, registry.BUILT_IN


def test_no_module_imports_itself_back():
  assert find_cycle(import_graph()) == []


def test_no_subpackage_imports_itself_back():
  graph = {}
  for module, targets in import_graph().items():
    graph.setdefault(unit(module), set()).update(
      unit(t) for t in targets if unit(t) != unit(module)
    )
  assert find_cycle(graph) == []


def test_every_module_sits_in_a_layer_and_imports_none_above_it():
  graph = import_graph()
  assert sorted({unit(m) for m in graph} - set(LAYER)) == [], "place new modules in LAYERS"
  assert graph["disal_jax"] == set()
  upward = sorted(
    f"{m} -> {t}"
    for m, targets in graph.items()
    for t in targets
    if LAYER[unit(t)] > LAYER[unit(m)]
  )
  assert upward == []


def test_errors_imports_nothing_of_disal_jax():
  assert import_graph()["disal_jax.errors"] == set()


def _exception_classes() -> dict[str, str]:
  """{class name: module} of the classes the package defines whose bases name an Exception,
  an ...Error or one of disal_jax.errors' classes (read from the source)."""
  from disal_jax import errors

  ours = {name for name, value in vars(errors).items() if isinstance(value, type)}
  found = {}
  for module, path in _modules().items():
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.ClassDef):
        bases = {ast.unparse(b).rpartition(".")[2] for b in node.bases}
        if any(
          b.endswith("Error") or b in ("Exception", "BaseException") or b in ours for b in bases
        ):
          found[node.name] = module
  return found


def test_every_error_the_package_defines_is_a_user_error_in_errors_py():
  """cli.run prints a UserError as one line with exit status 2; an error class defined
  elsewhere, or not derived from UserError, would reach the user as a traceback. (An
  exception that never reaches the user would need an exemption here.)"""
  from disal_jax import errors

  classes = _exception_classes()
  assert {"ConfigError", "CheckpointError", "RunLocked", "TrainingDiverged"} <= set(classes)
  assert {name: module for name, module in classes.items() if module != "disal_jax.errors"} == {}
  for name in classes:
    assert issubclass(getattr(errors, name), errors.UserError), name


@pytest.mark.parametrize(
  "module, name",
  [
    ("disal_jax.config", "ConfigError"),
    ("disal_jax.checkpoint", "CheckpointError"),
    ("disal_jax.checkpoint", "ConfigMismatchError"),
    ("disal_jax.run_lock", "RunLocked"),
    ("disal_jax.data.image_folder", "ImageFolderError"),
    ("disal_jax.data.tfds_source", "DatasetNotPreparedError"),
    ("disal_jax.annotate.project", "ProjectError"),
    ("disal_jax.annotate.labels_file", "LabelFileError"),
    ("disal_jax.training.trainer", "TrainingDiverged"),
    ("disal_jax.strategies.vaal", "VaalDiverged"),
  ],
)
def test_each_error_is_still_importable_where_it_was_defined(module, name):
  from disal_jax import errors

  assert getattr(importlib.import_module(module), name) is getattr(errors, name)

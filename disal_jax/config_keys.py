"""Every config key with its default and the comment that defines it (experiment.base_config).

  python -m disal_jax.config_keys [--prefix=disal.]

The comments in disal_jax/config.py (experiment-wide keys) and in each strategy module's
`defaults()` (its section) are the one documentation of the keys (docs/configs.md points
here): a key's text is the comment block above its assignment and the comment at its
end, so this listing cannot drift from the code.
"""

from __future__ import annotations

import functools
import inspect
import re

from absl import app, flags

from disal_jax import config as config_lib
from disal_jax import experiment

_SECTION = re.compile(
  r"^\s*(?P<parent>\w+)\.(?P<name>\w+) = (?P<alias>\w+) = "
  r"ml_collections\.ConfigDict\(\)"
)
_ASSIGN = re.compile(r"^\s*(?P<owner>\w+)\.(?P<name>\w+) = (?P<value>.*?)\s*(#\s*(?P<note>.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(?P<text>.*)$")


def key_comments() -> dict[str, str]:
  """{dotted key: its comment text} for every key experiment.base_config assigns: the
  experiment-wide ones in disal_jax/config.py, then each strategy section's, in its module's
  `defaults`."""
  from disal_jax.strategies import registry  # pylint: disable=import-outside-toplevel

  comments = _comments(inspect.getsource(config_lib.common_config), {"c": ""})
  for name, section in registry.sections().items():
    comments.update(_comments(inspect.getsource(section.defaults), {"s": f"{name}."}))
  return comments


def _comments(source: str, paths: dict[str, str]) -> dict[str, str]:
  """{dotted key: comment} of the assignments in `source` to the ConfigDicts named in `paths`
  ({variable: key prefix}; sections created in the source join it).

  A comment block describes the assignments right below it up to a blank line or the first
  one with its own end-of-line comment, which describes that one (after the block, when the
  block sits directly above it).
  """
  paths = dict(paths)
  comments: dict[str, str] = {}
  block: list[str] = []
  fresh = False  # the block sits directly above the current line
  for line in source.splitlines():
    if (match := _COMMENT.match(line)) is not None:
      block = block + [match["text"].strip()] if fresh else [match["text"].strip()]
      fresh = True
      continue
    if (match := _SECTION.match(line)) is not None:
      path = paths.get(match["parent"], "") + match["name"]
      paths[match["alias"]] = path + "."
      block, fresh = [], False
      continue
    if (match := _ASSIGN.match(line)) is not None and match["owner"] in paths:
      key = paths[match["owner"]] + match["name"]
      if match["note"]:
        comments[key] = " ".join((block if fresh else []) + [match["note"].strip()])
        block = []
      else:
        comments[key] = " ".join(block)
      fresh = False
      continue
    block, fresh = [], False
  return comments


def describe(prefix: str = "") -> str:
  """One line per key: `key = default  # comment`, in definition order."""
  defaults = _flatten(experiment.base_config().to_dict())
  lines = []
  for key, note in key_comments().items():
    if key in defaults and key.startswith(prefix):
      lines.append(f"{key} = {defaults[key]!r}" + (f"  # {note}" if note else ""))
  return "\n".join(lines)


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def define_flags() -> flags.FlagHolder:
  """Defines --prefix on absl's FLAGS (when the command runs: importing this module, as the
  tests do, defines no flag)."""
  return flags.DEFINE_string("prefix", "", "Only keys starting with this (e.g. 'disal.').")


def main(argv: list[str], prefix: flags.FlagHolder) -> None:
  """Prints the config keys (those starting with --prefix) and what each means."""
  del argv
  print(describe(prefix.value))


if __name__ == "__main__":
  app.run(functools.partial(main, prefix=define_flags()))

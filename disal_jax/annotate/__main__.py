"""Active learning on your own images: python -m disal_jax.annotate <command> --workdir=W ...

init    --images=DIR --config=configs/annotate.py   register a folder (<class>/, unlabeled/,
                                                    optional test/<class>/)
next    --budget=500 --strategy=disal [--replace]   train, score, write the query (CSV, JSON,
                                                    contact sheet) under W/queries/round_<r>/
import  --labels=labels.csv                         validate and merge the answers (id,label)
undo                                                restore the state before the last import
status                                              rounds, labeled counts, test accuracy
"""

from __future__ import annotations

import dataclasses
import functools
import logging

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli
from disal_jax.annotate import project as project_lib
from disal_jax.annotate import rounds

COMMANDS = ("init", "next", "import", "undo", "status")


@dataclasses.dataclass(frozen=True)
class Flags:
  """This command's flags (`define_flags`)."""

  config: flags.FlagHolder
  workdir: flags.FlagHolder
  images: flags.FlagHolder
  budget: flags.FlagHolder
  strategy: flags.FlagHolder
  replace: flags.FlagHolder
  labels: flags.FlagHolder


def define_flags() -> Flags:
  """Defines this command's flags on absl's FLAGS. Called when the command runs, never at
  import: importing this module defines no flag."""
  return Flags(
    config_flags.DEFINE_config_file("config", None, "Config file (init only).", lock_config=True),
    flags.DEFINE_string("workdir", None, "The project's folder."),
    flags.DEFINE_string("images", None, "init: the image folder."),
    flags.DEFINE_integer("budget", None, "next: images to select."),
    flags.DEFINE_string("strategy", "disal", "next: a registered strategy name."),
    flags.DEFINE_bool("replace", False, "next: replace an open query."),
    flags.DEFINE_string("labels", None, "import: the answers, a CSV with id,label."),
  )


def run(command: str, args: Flags) -> str:
  """Runs one command with the parsed flags; returns what it prints."""
  if command == "init":
    if not args.images.value or args.config.value is None:
      raise app.UsageError("init needs --images=DIR and --config=FILE")
    project = project_lib.init_project(args.images.value, args.workdir.value, args.config.value)
    return (
      f"registered {project.num_images} images ({int((project.initial_labels >= 0).sum())}"
      f" labeled, classes {list(project.class_names)}) in {project.workdir}"
    )
  project = project_lib.load_project(args.workdir.value)
  if command == "next":
    if args.budget.value is None:
      raise app.UsageError("next needs --budget=N")
    out = rounds.next_query(project, args.strategy.value, args.budget.value, args.replace.value)
    return f"query written to {out} (query.csv, query.json, contact_sheet.png)"
  if command == "import":
    if not args.labels.value:
      raise app.UsageError("import needs --labels=FILE")
    done = rounds.import_answers(project, args.labels.value)
    return (
      f"merged {done['merged']} labels ({done['unanswered']} unanswered stay unlabeled);"
      f" now at round {done['round']}"
    )
  if command == "undo":
    done = rounds.undo(project)
    return f"undid the import (state {done['undone_step']}); back at round {done['round']}"
  return rounds.status(project)


def main(argv: list[str], args: Flags) -> None:
  """Runs one annotation command, argv[1] (one of COMMANDS), and prints its summary."""
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(
      f"usage: python -m disal_jax.annotate {{{'|'.join(COMMANDS)}}} --workdir=W [flags]"
    )
  if not args.workdir.value:
    raise app.UsageError("--workdir is required")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  print(run(argv[1], args), flush=True)


if __name__ == "__main__":
  cli.run(functools.partial(main, args=define_flags()))

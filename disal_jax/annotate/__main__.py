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

import logging

from absl import app, flags
from ml_collections import config_flags

from disal_jax import checkpoint, cli
from disal_jax.annotate import project as project_lib
from disal_jax.annotate import rounds

COMMANDS = ("init", "next", "import", "undo", "status")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (init only).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The project's folder.")
_IMAGES = flags.DEFINE_string("images", None, "init: the image folder.")
_BUDGET = flags.DEFINE_integer("budget", None, "next: images to select.")
_STRATEGY = flags.DEFINE_string("strategy", "disal", "next: a registered strategy name.")
_REPLACE = flags.DEFINE_bool("replace", False, "next: replace an open query.")
_LABELS = flags.DEFINE_string("labels", None, "import: the answers, a CSV with id,label.")


def run(command: str) -> str:
  """Runs one command with the parsed flags; returns what it prints."""
  if command == "init":
    if not _IMAGES.value or _CONFIG.value is None:
      raise app.UsageError("init needs --images=DIR and --config=FILE")
    project = project_lib.init_project(_IMAGES.value, _WORKDIR.value, _CONFIG.value)
    return (f"registered {project.num_images} images ({int((project.initial_labels >= 0).sum())}"
            f" labeled, classes {list(project.class_names)}) in {project.workdir}")
  project = project_lib.load_project(_WORKDIR.value)
  if command == "next":
    if _BUDGET.value is None:
      raise app.UsageError("next needs --budget=N")
    out = rounds.next_query(project, _STRATEGY.value, _BUDGET.value, _REPLACE.value)
    return f"query written to {out} (query.csv, query.json, contact_sheet.png)"
  if command == "import":
    if not _LABELS.value:
      raise app.UsageError("import needs --labels=FILE")
    done = rounds.import_answers(project, _LABELS.value)
    return (f"merged {done['merged']} labels ({done['unanswered']} unanswered stay unlabeled);"
            f" now at round {done['round']}")
  if command == "undo":
    done = rounds.undo(project)
    return f"undid the import (state {done['undone_step']}); back at round {done['round']}"
  return rounds.status(project)


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise app.UsageError(f"usage: python -m disal_jax.annotate {{{'|'.join(COMMANDS)}}} "
                         "--workdir=W [flags]")
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  logging.getLogger().setLevel(logging.INFO)
  checkpoint.quiet_orbax_info_logs()
  print(run(argv[1]), flush=True)


if __name__ == "__main__":
  cli.run(main)

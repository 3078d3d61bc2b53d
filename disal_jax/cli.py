"""What every command-line entry point shares: a bad flag, config key or input is one message.

The project's own errors (`disal_jax.errors.UserError`) name the problem and the fix; a
Python traceback in front of them only hides that line. `run(main)` parses the flags (a
mistyped `--config.train.epoch=3` included) and prints such errors as `error: ...` with exit
status 2 (DISAL_JAX_DEBUG=1 shows their traceback); any other exception keeps its traceback
(it is a bug to report).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Callable, NoReturn

from absl import app, flags

from disal_jax import platform_settings
from disal_jax.checkpoint import moved_keys
from disal_jax.errors import UserError

USAGE_STATUS = 2
DEBUG_ENV = "DISAL_JAX_DEBUG"  # set to 1 for the traceback behind such an error


def fail(message: str) -> NoReturn:
  """Prints `message` to stderr and exits with the usage status; never returns."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USAGE_STATUS)


def _unknown_key(error: Exception) -> str:
  """ml_collections' unknown-key error arrives as the repr of "'key'\nDid you mean ...?"."""
  text = str(error.args[0]) if error.args else str(error)
  text = text.replace("\\n", "\n").replace("\\'", "'").strip("'\"")
  key, _, hint = text.partition("\n")
  return f"no config key {key.strip(chr(39))!r}" + (f"; {hint.strip()}" if hint else "")


def moved_key_hint(argv: list[str]) -> str:
  """'; config.<old> is now config.<new>' for the first override in argv of a key that has
  moved (checkpoint.moved_keys()), else ''."""
  moved = moved_keys()
  for arg in argv:
    key = arg.split("=", 1)[0].removeprefix("--config.")
    if key in moved:
      return f"; config.{key} is now config.{moved[key]}"
  return ""


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; a config override naming no key, or of the wrong type, fails
  with one line (ml_collections raises them as plain Python errors)."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    fail(f"{e} (see --helpfull)")
  except (AttributeError, KeyError) as e:
    fail(f"bad config override: {_unknown_key(e)}{moved_key_hint(argv)}")
  except (TypeError, ValueError) as e:
    fail(f"bad config override: {e}")


def run(main: Callable[[list[str]], object]) -> None:
  """app.run(main) with the project's errors printed as one message each, after the
  platform settings (disal_jax/platform_settings.py)."""
  platform_settings.apply()
  # JAX logs a line for every platform it probes and does not find (TPU on a CPU machine).
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

  @functools.wraps(main)
  def guarded(argv):
    try:
      return main(argv)
    except UserError as e:  # its message says what is wrong and what to do
      if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        raise
      fail(str(e))

  app.run(guarded, flags_parser=parse_flags)

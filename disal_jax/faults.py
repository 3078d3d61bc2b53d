"""Fault injection for the interruption tests: the process kills itself at a named point.

Set DISAL_JAX_KILL_AT to a point name, e.g. 'train:disal seed 0:1:2:3' (strategy and seed
tag, cycle, epoch, step) or 'select:disal seed 0:1' (before cycle 1's selection), and the
process sends itself SIGKILL when it reaches that point, as a pre-emption would. Unset (the
normal case), `point` costs one truth test and does nothing.
"""

from __future__ import annotations

import os
import signal

_KILL_AT = os.environ.get("DISAL_JAX_KILL_AT", "")


def point(name: str) -> None:
  """Kills the process with SIGKILL if DISAL_JAX_KILL_AT names this point; else nothing."""
  if _KILL_AT and name == _KILL_AT:
    os.kill(os.getpid(), signal.SIGKILL)

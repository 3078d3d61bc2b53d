"""One process per run folder: an OS file lock beside it, with a record of who holds it.

`<workdir>/<strategy>/seed_<s>.lock` sits beside the run folder (so `--force`, which removes
the folder, never removes a lock another process holds). A process takes it with
flock(LOCK_EX | LOCK_NB) before any work on the run and keeps it until the run ends; the OS
releases it when the process dies, however it dies. The file also holds a JSON record of the
holder (host, pid, start time): a second process names that holder in its error, and a
process that finds a record left by a holder that ended without clearing it (a kill, a
crash) says that it takes the run over.

flock works on local filesystems and on NFS (Linux maps it to NFS byte-range locks, served
by the server's lock manager). Where a filesystem refuses locks, `hold` logs a warning and
runs unlocked: two processes on one run folder are then the user's to avoid.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket
from typing import Iterator, Optional

from disal_jax.errors import RunLocked

log = logging.getLogger(__name__)

SUFFIX = ".lock"


def lock_path(run_dir: pathlib.Path) -> pathlib.Path:
  """The lock file beside `run_dir`: <run_dir>.lock."""
  return run_dir.with_name(run_dir.name + SUFFIX)


def _holder_text(record: Optional[dict]) -> str:
  if not record:
    return "another process (no record of it)"
  return f"process {record.get('pid')} on host {record.get('host')} (since {record.get('started')})"


def _read_record(fd: int) -> Optional[dict]:
  os.lseek(fd, 0, os.SEEK_SET)
  raw = b""
  while chunk := os.read(fd, 4096):
    raw += chunk
  try:
    return json.loads(raw) if raw.strip() else None
  except ValueError:
    return {"pid": "?", "host": "?", "started": "? (unreadable record)"}


def try_acquire(run_dir: pathlib.Path) -> Optional[int]:
  """The lock's file descriptor, held; None when another live process holds it, or -1 where
  the filesystem does not support locks (the run then proceeds unlocked)."""
  path = lock_path(run_dir)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(fd)
    return None
  except OSError as e:
    os.close(fd)
    if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
      log.warning(
        "%s: this filesystem does not support file locks (%s); running without "
        "one, so start only one process on this run",
        path,
        e.strerror,
      )
      return -1
    raise
  stale = _read_record(fd)
  if stale:
    log.warning(
      "%s: %s ended without releasing the run (killed or crashed); taking it over",
      run_dir,
      _holder_text(stale),
    )
  record = {
    "host": socket.gethostname(),
    "pid": os.getpid(),
    "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
  }
  os.ftruncate(fd, 0)
  os.lseek(fd, 0, os.SEEK_SET)
  os.write(fd, json.dumps(record).encode())
  os.fsync(fd)
  return fd


def holder(run_dir: pathlib.Path) -> str:
  """Who holds the run, as words (for messages)."""
  try:
    fd = os.open(lock_path(run_dir), os.O_RDONLY)
  except OSError:
    return _holder_text(None)
  try:
    return _holder_text(_read_record(fd))
  finally:
    os.close(fd)


def release(fd: int) -> None:
  """Clears the record (a clean end leaves nothing to take over) and unlocks."""
  if fd < 0:
    return
  try:
    os.ftruncate(fd, 0)
  finally:
    os.close(fd)  # closing the last descriptor releases the flock


@contextlib.contextmanager
def hold(run_dirs: list[pathlib.Path]) -> Iterator[None]:
  """Holds every run in `run_dirs` for the body, or raises RunLocked (holding none) when
  another process holds one of them."""
  held: list[int] = []
  try:
    for run_dir in run_dirs:
      fd = try_acquire(run_dir)
      if fd is None:
        raise RunLocked(
          f"{run_dir} is in use by {holder(run_dir)}. Two processes on one run would "
          "overwrite each other's checkpoints: wait for it to finish (a rerun then resumes "
          "or skips the finished run), stop it, or give this one another --workdir."
        )
      held.append(fd)
    yield
  finally:
    for fd in reversed(held):
      release(fd)

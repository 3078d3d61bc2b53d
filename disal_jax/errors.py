"""The errors a user fixes (a config value, a workdir, a dataset, a labels file), and check_value.

Every one derives from `UserError`: its message names what is wrong and what to do, so the
command-line entry points (`disal_jax.cli.run`) print it as one line, `error: ...`, with exit
status 2, instead of a traceback. Any other exception is a bug and keeps its traceback. Each
class also keeps the built-in base that callers catch (`ValueError`, `RuntimeError`,
`FloatingPointError`).

This module is the bottom layer: it imports nothing of disal_jax, so that every other module
(models, data, training, strategies) can raise these without importing the config or the
command line. The modules that raise them re-export their own (`disal_jax.checkpoint.
CheckpointError`, ...), where users and tests have imported them from.
"""

from __future__ import annotations


class UserError(Exception):
  """Something the user must change; the message says what and how (no traceback needed)."""


class ConfigError(UserError, ValueError):
  """A config value is out of range; the message names the key and the allowed values."""


class ConfigMismatchError(UserError, ValueError):
  """The workdir holds a run made with another config; the message lists the keys."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint cannot be written, or no valid one can be read; the message says what to do."""


class RunLocked(UserError):
  """Another live process holds the run; the message names it and what to do."""


class ImageFolderError(UserError, ValueError):
  """The folder does not have the expected layout, or an image cannot be read."""


class DatasetNotPreparedError(UserError, RuntimeError):
  """The tfds dataset is not in data_dir; the message says how to prepare it."""


class ProjectError(UserError, ValueError):
  """The folder or workdir is not a valid project; the message names the path and the fix."""


class LabelFileError(UserError, ValueError):
  """The labels file is invalid; the message lists every problem with its line number."""


class TrainingDiverged(UserError, FloatingPointError):
  """A non-finite training loss; the message names where."""


class VaalDiverged(UserError, FloatingPointError):
  """VAAL's VAE or discriminator diverged; the message names where and what to change."""


def check_value(ok: bool, key: str, value, allowed: str) -> None:
  """Raises ConfigError naming config.<key>, its value and what is allowed, unless ok.

  Args:
    ok: whether the value is allowed.
    key: the dotted key under `config.` (e.g. 'train.epochs').
    value: its value, shown with repr.
    allowed: what the key accepts, ending the message (e.g. 'an integer >= 1').

  Raises:
    ConfigError: `config.<key>=<value!r> is invalid: <allowed>.` when not ok.
  """
  if not ok:
    raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}.")

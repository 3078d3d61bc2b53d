"""Prepares a tfds dataset once: `python -m disal_jax.data.prepare --dataset=cifar10`.

Writes array_record files (read later without TensorFlow). The download itself goes through
tfds, whose image encoders may need TensorFlow: `pip install tensorflow-cpu` on the machine
that prepares (docs/data.md: 'Preparing the real datasets'). Checks the network first, so an
offline machine fails in seconds instead of after tfds' minutes of retries.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import urllib.parse

from absl import app, flags

from disal_jax.data import tfds_source


@dataclasses.dataclass(frozen=True)
class Flags:
  """This command's flags (`define_flags`)."""

  dataset: flags.FlagHolder
  data_dir: flags.FlagHolder
  manual_dir: flags.FlagHolder
  probe_timeout_s: flags.FlagHolder


def define_flags() -> Flags:
  """Defines this command's flags on absl's FLAGS. Called when the command runs, never at
  import: importing this module defines no flag."""
  defined = Flags(
    flags.DEFINE_enum("dataset", None, sorted(tfds_source.SPECS), "Dataset to prepare."),
    flags.DEFINE_string("data_dir", "", "tfds data_dir ('' = ~/tensorflow_datasets)."),
    flags.DEFINE_string("manual_dir", "", "Folder with manually downloaded archives."),
    flags.DEFINE_float("probe_timeout_s", 5.0, "Network check timeout."),
  )
  flags.mark_flag_as_required("dataset")
  return defined


def network_reachable(url: str, timeout_s: float) -> bool:
  """Whether `url`'s host accepts a TCP connection within `timeout_s` (True where
  `url` names no host)."""
  parsed = urllib.parse.urlparse(url)
  if not parsed.hostname:
    return True  # nothing to probe; let tfds try
  try:
    with socket.create_connection((parsed.hostname, parsed.port or 443), timeout=timeout_s):
      return True
  except OSError:
    return False


def main(argv: list[str], args: Flags) -> None:
  """Downloads and prepares --dataset with tfds (array_record files) in --data_dir."""
  del argv
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  name = args.dataset.value
  builder = tfds_source.builder_for(name, args.data_dir.value)
  if not tfds_source.SPECS[name].manual and not network_reachable(
    builder.info.homepage, args.probe_timeout_s.value
  ):
    raise SystemExit(
      f"No network: cannot reach {builder.info.homepage} to download {name!r}. "
      "Prepare it on a machine with network access and copy the data_dir here."
    )
  builder.download_and_prepare(
    file_format="array_record",
    download_config=tfds.download.DownloadConfig(manual_dir=args.manual_dir.value or None),
  )
  print(f"Prepared {name!r} in {builder.data_dir}")


if __name__ == "__main__":
  app.run(functools.partial(main, args=define_flags()))

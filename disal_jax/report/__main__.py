"""Writes a sweep folder's report: python -m disal_jax.report <sweep folder> [--out DIR].

See disal_jax.report.sweep_report for what it writes.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

from disal_jax.report import sweep_report


def main(argv: list[str] | None = None) -> int:
  """Writes the tables and learning curves of a sweep folder; returns the exit status."""
  parser = argparse.ArgumentParser(
    prog="python -m disal_jax.report", description="Tables and learning curves of a sweep folder."
  )
  parser.add_argument("sweep", type=pathlib.Path, help="the sweep folder (--workdir of the runs)")
  parser.add_argument(
    "--out", type=pathlib.Path, default=None, help="where to write (default: <sweep>/report)"
  )
  args = parser.parse_args(argv)
  try:
    out = sweep_report.write_report(args.sweep, args.out)
  except FileNotFoundError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print((out / "accuracy.md").read_text())
  print(f"Report written to {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

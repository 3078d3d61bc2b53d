"""What one AL cycle costs per strategy: DISAL against Random (the paper claims no extra
overhead) and TracInCP-full against DISAL (the paper says much more).

  python -m benchmarks.cycle_cost [--strategies=random,disal,tracincp_full] [--labeled=1000]
      [--pool=4000] [--width=32] [--epochs=4] [--min_steps=150]
      [--variant=disal_joint:strategies=disal,disal.branch=joint ...]

Each strategy runs in its own process (so peak memory is its own): three cycles of the real
loop on real CIFAR-10 images; the figures are cycle 1's (compiled in cycle 0, and scored)
training, recording and scoring wall time, TracInCP's checkpoint bytes and seconds, and the
process's peak resident memory.
A cycle trains at least --min_steps SGD steps (config.train.min_steps): 150 steps of 128
images train 4.8 images per pool image scored, fewer than the paper's protocol (CIFAR-10 at
10%: 200 epochs x 5,000 images for a 45,000-image pool, 22 per pool image), so the fixed
cost of scoring weighs more here than there. --min_steps=0 gives the bare 4 epochs.
Prints a table; writes <out>/cycle_cost.json.
"""

from __future__ import annotations

import sys
import tempfile

from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings

_STRATEGIES = flags.DEFINE_list(
  "strategies", ["random", "disal", "tracincp_full"], "Strategies to compare."
)
_VARIANTS = flags.DEFINE_multi_string(
  "variant",
  [],
  "name:key=value,... one more run with config overrides, as in "
  "disal_jax.ablation (strategies=<strategy> when the name is not one); repeatable.",
)
_LABELED = flags.DEFINE_integer(
  "labeled", 1000, "Labeled images in cycle 0 (cycle 1 has 5% of the pool more)."
)
_POOL = flags.DEFINE_integer("pool", 4000, "Unlabeled pool images.")
_WIDTH = flags.DEFINE_integer("width", 32, "ResNet-18 width.")
_EPOCHS = flags.DEFINE_integer("epochs", 4, "Epochs per cycle.")
_MIN_STEPS = flags.DEFINE_integer("min_steps", 150, "At least this many SGD steps per cycle.")
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_CHILD = flags.DEFINE_string("child", "", "Internal: run this strategy and print its figures.")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write cycle_cost.json.")


def _child(entry: str) -> dict:
  # pylint: disable=import-outside-toplevel
  from disal_jax import loop, variants

  name, overrides = variants.parse_variant(entry)
  strategy = str(overrides.pop("strategies", name))
  num_train = _LABELED.value + _POOL.value
  config = common.cifar_config(num_train, _WIDTH.value, _CACHE.value)
  config = variants.variant_config(config, overrides)
  config.strategies = strategy
  config.full_training = False
  config.train.epochs = _EPOCHS.value
  config.train.min_steps = _MIN_STEPS.value
  config.checkpoint.every_epochs = 0
  config.al.initial_count = _LABELED.value
  config.al.step_count = max(1, _POOL.value // 20)
  config.al.final_count = _LABELED.value + 2 * config.al.step_count
  with tempfile.TemporaryDirectory() as workdir:
    row = loop.run_experiment(config, workdir)[strategy][1]
  return {
    "train_seconds": row.train_seconds,
    "record_seconds": row.record_seconds,
    "scoring_seconds": row.scoring_seconds,
    "cycle_seconds": row.train_seconds + row.record_seconds + row.scoring_seconds,
    "peak_rss_mib": common.peak_rss_mib(),
    **row.strategy_metrics,
  }


def main(argv):
  del argv
  if _CHILD.value:
    common.print_figures(_child(_CHILD.value))
    return
  figures = {}
  for entry in [*_STRATEGIES.value, *_VARIANTS.value]:
    strategy = entry.partition(":")[0]
    args = [a for a in sys.argv[1:] if not a.startswith(("--child", "--variant"))]
    figures[strategy] = common.run_child("benchmarks.cycle_cost", [*args, f"--child={entry}"])
    print(f"{strategy}: {figures[strategy]['cycle_seconds']:.1f} s", flush=True)
  base = figures.get("random", next(iter(figures.values())))
  rows = [
    [
      s,
      f["train_seconds"],
      f["record_seconds"],
      f["scoring_seconds"],
      f["cycle_seconds"],
      f["cycle_seconds"] / base["cycle_seconds"],
      f["peak_rss_mib"],
      f.get("snapshot_bytes", 0.0) / 2**20,
    ]
    for s, f in figures.items()
  ]
  print(
    f"\nCycle 1 of 3: {_LABELED.value}+ labeled, {_POOL.value} pool, {_EPOCHS.value} epochs "
    f"(at least {_MIN_STEPS.value} steps), ResNet-18 width {_WIDTH.value}\n"
  )
  print(
    common.table(
      [
        "strategy",
        "train s",
        "record s",
        "scoring s",
        "cycle s",
        "x random",
        "peak RSS MiB",
        "checkpoints MiB",
      ],
      rows,
    )
  )
  path = common.write_json(
    "cycle_cost",
    {
      "labeled": _LABELED.value,
      "pool": _POOL.value,
      "width": _WIDTH.value,
      "epochs": _EPOCHS.value,
      "min_steps": _MIN_STEPS.value,
      "figures": figures,
    },
    _OUT.value,
  )
  print(f"\nwrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

"""XLA:CPU's YNNPACK library fusions, side by side: which kernels should run the convolutions.

  python -m benchmarks.xla_cpu [--width=64] [--batch=64] [--rounds=3] [--programs=...]
                               [--out=DIR]

Times, in one process, CIFAR ResNet-18 programs compiled with each YNNPACK setting
(`--xla_cpu_experimental_ynn_fusion_type`, passed per program as a compiler option): one
forward pass (eval), one training step (forward + backward + SGD, train mode) and the one-pass
per-sample gradient-norm engine. The settings run in turn, `--rounds` times, each figure the
fastest of its rounds, so a slow spell of the machine hits all of them. Real CIFAR-10 images
(../shared/data). Prints samples/s and each setting's time relative to XLA's own choice;
writes <out>/xla_cpu.json. disal_jax/xla_cpu.py holds the setting this chose.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from benchmarks import common
from disal_jax import platform_settings, xla_cpu
from disal_jax.data.registry import load_dataset
from disal_jax.models import resnet
from disal_jax.strategies import one_pass
from disal_jax.strategies.base import entropy_of_logits

_WIDTH = flags.DEFINE_integer("width", 64, "ResNet-18 width (64 = the standard model).")
_BATCH = flags.DEFINE_integer("batch", 64, "Images per call.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Turns through all settings.")
_PROGRAMS = flags.DEFINE_list(
  "programs", ["forward", "train_step", "one_pass_gradnorm"], "Which programs to time."
)
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write the JSON.")

SETTINGS = {
  "xla_default": xla_cpu.XLA_DEFAULT_FUSIONS,
  "xla_default_without_convolutions": xla_cpu.WITHOUT_CONVOLUTIONS,
  "disal_jax (fusions, no stand-alone convolutions)": xla_cpu.FUSIONS,
  "ynnpack_dots_only": ("LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",),
  "no_ynnpack": (),
}


def main(argv):
  del argv
  batch = _BATCH.value
  config = common.cifar_config(batch, _WIDTH.value, _CACHE.value)
  dataset = load_dataset(config.data)
  mean, std = dataset.channel_stats()
  x = jnp.asarray((dataset.train_images[:batch].astype(np.float32) / 255.0 - mean) / std)
  labels = jnp.asarray(dataset.train_labels[:batch])
  net = resnet.ResNet18(num_classes=dataset.num_classes, width=_WIDTH.value)
  variables = jax.jit(functools.partial(net.init, train=False))(jax.random.key(0), x[:1])
  model = lambda v, inputs: net.apply(v, inputs, train=False)["logits"]
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(variables["params"])
  train_step = common.plain_train_step(net, tx)

  programs = {
    "forward": (lambda inputs: model(variables, inputs), (x,)),
    "train_step": (
      train_step,
      (variables["params"], variables["batch_stats"], opt_state, x, labels),
    ),
    "one_pass_gradnorm": (
      lambda inputs: one_pass.grad_sq_norms(model, variables, inputs, entropy_of_logits),
      (x,),
    ),
  }
  unknown = set(_PROGRAMS.value) - set(programs)
  if unknown:
    raise app.UsageError(f"--programs: unknown {sorted(unknown)}; known: {sorted(programs)}")
  programs = {name: programs[name] for name in _PROGRAMS.value}
  compiled = {}
  for setting, fusions in SETTINGS.items():
    for program, (fn, args) in programs.items():
      run = jax.jit(fn, compiler_options=xla_cpu.compiler_options(fusions))
      jax.block_until_ready(run(*args))  # compile
      compiled[setting, program] = (run, args)
  seconds: dict[tuple[str, str], float] = {}
  for _ in range(_ROUNDS.value):
    for key, (run, args) in compiled.items():
      elapsed = common.timed(lambda run=run, args=args: run(*args))
      seconds[key] = min(seconds.get(key, elapsed), elapsed)

  figures, rows = {}, []
  for program in programs:
    for setting in SETTINGS:
      rate = batch / seconds[setting, program]
      ratio = seconds[setting, program] / seconds["xla_default", program]
      figures[f"{program} @ {setting}"] = {
        "program": program,
        "setting": setting,
        "samples_per_second": rate,
        "time_x_xla_default": ratio,
      }
      rows.append([f"{program} @ {setting}", rate, ratio])
  print(
    f"\nYNNPACK fusion settings, CIFAR ResNet-18 width {_WIDTH.value}, batch {batch}, "
    f"{jax.device_count()} {jax.default_backend()} device(s), {os.cpu_count()} cores, "
    f"fastest of {_ROUNDS.value} rounds\n"
  )
  print(common.table(["program @ setting", "samples/s", "time x xla_default"], rows))
  path = common.write_json(
    "xla_cpu",
    {
      "width": _WIDTH.value,
      "batch": batch,
      "rounds": _ROUNDS.value,
      "settings": {k: list(v) for k, v in SETTINGS.items()},
      "figures": figures,
    },
    _OUT.value,
  )
  print(f"\nwrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

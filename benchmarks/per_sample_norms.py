"""Per-sample gradient norms: the one-pass engine against jax.vmap, PyTorch's per-sample loop and
torch.func, side by side in one run.

  python -m benchmarks.per_sample_norms [--images=256] [--width=64] [--batch=64] [--rounds=3]
                                        [--out=DIR]

Same real CIFAR-10 images (../shared/data), CIFAR ResNet-18 at random weights (throughput does
not depend on the values), BatchNorm in eval mode, entropy of the prediction as the loss (the
gradnorm scheme), same thread count. Also timed: one plain forward pass and one training step
(forward + backward + SGD update, train mode) per sample, the goals' yardsticks; and the C x C
Jacobian Gram (expected gradnorm, TracInCP) by both JAX engines. On the --reference_images
images where the engines' norms differ most, both are checked against float64 (a per-sample
loop of jax.grad): which one is off, or whether float32 itself is. Each JAX figure is
the faster of two timed runs after a compiling one; the one-pass engine and the PyTorch loop
(the goal's ratio) are then timed in turn for --rounds more rounds, and each takes its best.
Prints a table of samples/s and ratios; writes <out>/per_sample_norms.json.

Host malloc: glibc's defaults unless DISAL_JAX_HOST_MEMORY=keep is in the environment
(disal_jax/host_memory.py), for both JAX and PyTorch (one process); the table's title says which.
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
from disal_jax import host_memory, platform_settings
from disal_jax.data.registry import load_dataset
from disal_jax.models import resnet
from disal_jax.strategies import per_sample
from disal_jax.strategies.base import entropy_of_logits

_IMAGES = flags.DEFINE_integer("images", 256, "Images scored by each JAX engine.")
_WIDTH = flags.DEFINE_integer("width", 64, "ResNet-18 width (64 = the standard model).")
_BATCH = flags.DEFINE_integer(
  "batch", 64, "Samples per jitted call (one-pass engine, forward, train step)."
)
_VMAP_CHUNK = flags.DEFINE_integer("vmap_chunk", 32, "Samples per call, vmap engine.")
_GRAM_IMAGES = flags.DEFINE_integer(
  "gram_images", 20, "Images for the C x C Gram (the vmap Gram runs about 1 image/s on 2 cores)."
)
_REFERENCE_IMAGES = flags.DEFINE_integer(
  "reference_images",
  16,
  "Images whose norms are also computed in float64 (a per-sample "
  "loop of jax.grad): the ones where the two engines differ most; 0: none.",
)
_TORCH = flags.DEFINE_bool("torch", True, "Also time the PyTorch references.")
_TORCH_IMAGES = flags.DEFINE_integer("torch_images", 128, "Images for the PyTorch loops.")
_ROUNDS = flags.DEFINE_integer(
  "rounds",
  3,
  "Paired rounds of the one-pass engine and the PyTorch loop, taken in turn (the goal's ratio).",
)
_CACHE = flags.DEFINE_string("cache_dir", "", "Decoded-image cache (config.data.cache_dir).")
_OUT = flags.DEFINE_string("out", "benchmarks/results", "Where to write the JSON.")
_MALLOC = {True: "kept (DISAL_JAX_HOST_MEMORY=keep)", False: "glibc's default"}


def _in_batches(fn, x: jax.Array, batch: int) -> jax.Array:
  """fn over `x` in whole batches (the last one padded by repeating rows), concatenated."""
  n = x.shape[0]
  pad = (-n) % batch
  if pad:
    x = jnp.concatenate([x, x[:pad]])
  return jnp.concatenate([fn(x[i : i + batch]) for i in range(0, x.shape[0], batch)])[:n]


def _float64_sq_norms(model, variables, x: np.ndarray) -> np.ndarray:
  """(N,) ||grad_params entropy||^2 per image, everything in float64, one image at a time."""
  with jax.enable_x64(True):
    variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)

    def one(image):
      grads = jax.grad(
        lambda params: jnp.sum(
          entropy_of_logits(model({**variables, "params": params}, image[None]))
        )
      )(variables["params"])
      return sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))

    return np.asarray(jax.jit(lambda xs: jax.lax.map(one, xs))(jnp.asarray(x, jnp.float64)))


def _rate(fn, x: jax.Array) -> float:
  """samples/s of fn(x): one compiling call, then the faster of two timed ones."""
  jax.block_until_ready(fn(x))
  return x.shape[0] / min(common.timed(lambda: fn(x)), common.timed(lambda: fn(x)))


def main(argv):
  del argv
  config = common.cifar_config(max(_IMAGES.value, _TORCH_IMAGES.value), _WIDTH.value, _CACHE.value)
  dataset = load_dataset(config.data)
  mean, std = dataset.channel_stats()
  x_np = (dataset.train_images[: _IMAGES.value].astype(np.float32) / 255.0 - mean) / std
  x = jnp.asarray(x_np)
  labels = jnp.asarray(dataset.train_labels[: _IMAGES.value])
  net = resnet.ResNet18(num_classes=dataset.num_classes, width=_WIDTH.value)
  variables = jax.jit(functools.partial(net.init, train=False))(jax.random.key(0), x[:1])
  model = lambda v, inputs: net.apply(v, inputs, train=False)["logits"]
  loss = lambda logits, aux: entropy_of_logits(logits)
  one_pass = per_sample.Engine("one_pass")
  vmap = per_sample.Engine("vmap")
  batch = _BATCH.value
  figures, rows = {}, []

  def add(name, rate, samples):
    figures[name] = {"samples_per_second": rate, "samples": samples}
    print(f"{name}: {rate:.1f} samples/s", flush=True)

  forward = jax.jit(lambda inputs: model(variables, inputs))
  add("jax_forward", _rate(lambda v: _in_batches(forward, v, batch), x), _IMAGES.value)
  tx = optax.sgd(0.1, momentum=0.9)

  train_step = jax.jit(common.plain_train_step(net, tx))

  params, stats = variables["params"], variables["batch_stats"]
  opt_state = tx.init(params)
  n_steps = _IMAGES.value // batch

  def train(_):
    p, s, o = params, stats, opt_state
    for i in range(n_steps):
      p, s, o = train_step(
        p, s, o, x[i * batch : (i + 1) * batch], labels[i * batch : (i + 1) * batch]
      )
    return p

  add("jax_train_step", _rate(train, x[: n_steps * batch]), n_steps * batch)

  norms, scorers = {}, {}
  for engine, size in ((one_pass, batch), (vmap, _VMAP_CHUNK.value)):
    fn = jax.jit(lambda inputs, e=engine: e.grad_sq_norms(model, variables, inputs, loss))
    norms[engine.name] = np.asarray(_in_batches(fn, x, size))
    scorers[engine.name] = lambda v, fn=fn, size=size: _in_batches(fn, v, size)
    add(f"jax_{engine.name}_gradnorm", _rate(scorers[engine.name], x), _IMAGES.value)
  differ = np.abs(norms["one_pass"] - norms["vmap"]) / np.abs(norms["vmap"])
  agree = float(np.max(differ))
  print(f"one-pass vs vmap gradnorm, max relative difference: {agree:.2e}")
  to_float64 = {}
  if _REFERENCE_IMAGES.value:
    # the images where the two engines disagree most: which one is off there?
    picked = np.sort(np.argsort(-differ)[: _REFERENCE_IMAGES.value])
    exact = _float64_sq_norms(model, variables, x_np[picked])
    for name, values in norms.items():
      to_float64[name] = float(np.max(np.abs(values[picked] - exact) / exact))
    print(
      f"float32 against float64 on the {len(picked)} images where the engines differ most, "
      "max relative difference: " + ", ".join(f"{name} {d:.2e}" for name, d in to_float64.items())
    )

  gram_x = x[: _GRAM_IMAGES.value]
  grams = {}
  for engine in (one_pass, vmap):
    fn = jax.jit(lambda inputs, e=engine: e.logit_gram(model, variables, inputs)[0])
    size = engine.samples_per_call(dataset.num_classes)
    grams[engine.name] = np.asarray(_in_batches(fn, gram_x, size))
    add(
      f"jax_{engine.name}_gram",
      _rate(lambda v: _in_batches(fn, v, size), gram_x),
      _GRAM_IMAGES.value,
    )
  gram_agree = float(
    np.max(np.abs(grams["one_pass"] - grams["vmap"])) / np.max(np.abs(grams["vmap"]))
  )
  print(f"one-pass vs vmap Gram, max difference / max entry: {gram_agree:.2e}")

  if _TORCH.value:
    import torch  # pylint: disable=import-outside-toplevel

    from benchmarks import torch_reference  # pylint: disable=import-outside-toplevel

    torch.set_num_threads(os.cpu_count() or 1)
    n = _TORCH_IMAGES.value
    images = torch.from_numpy(
      np.ascontiguousarray(
        (dataset.train_images[:n].astype(np.float32) / 255.0 - mean).transpose(0, 3, 1, 2)
        / std.reshape(3, 1, 1)
      )
    )
    tmodel = torch_reference.ResNet18(dataset.num_classes, _WIDTH.value)
    torch_reference.gradnorm_loop(tmodel, images[:2])
    add(
      "torch_loop_gradnorm",
      n / common.timed(lambda: torch_reference.gradnorm_loop(tmodel, images)),
      n,
    )
    # The goal's ratio: the engine and the loop in turn, so a slow spell of the machine (this
    # one's speed swings 15-20% between runs) hits both; each figure is the best of its rounds.
    paired = []
    for _ in range(_ROUNDS.value):
      jax_rate = _IMAGES.value / common.timed(lambda: scorers["one_pass"](x))
      torch_rate = n / common.timed(lambda: torch_reference.gradnorm_loop(tmodel, images))
      paired.append(
        {
          "jax_one_pass_gradnorm": jax_rate,
          "torch_loop_gradnorm": torch_rate,
          "ratio": jax_rate / torch_rate,
        }
      )
      print(
        f"paired round: one-pass {jax_rate:.1f}/s, PyTorch loop {torch_rate:.1f}/s, "
        f"ratio {jax_rate / torch_rate:.2f}",
        flush=True,
      )
    for name in ("jax_one_pass_gradnorm", "torch_loop_gradnorm"):
      figures[name]["samples_per_second"] = max(
        [figures[name]["samples_per_second"]] + [r[name] for r in paired]
      )
    m = max(1, n // 2)
    torch_reference.gradnorm_vmap(tmodel, images[:2], 32)
    add(
      "torch_func_vmap_gradnorm",
      m / common.timed(lambda: torch_reference.gradnorm_vmap(tmodel, images[:m], 32)),
      m,
    )

  rate = lambda name: figures[name]["samples_per_second"] if name in figures else None
  base = rate("torch_loop_gradnorm")
  for name, row in figures.items():
    r = row["samples_per_second"]
    row["x_torch_loop"] = r / base if base else None
    row["x_jax_vmap_gradnorm"] = r / rate("jax_vmap_gradnorm")
    row["cost_x_train_step"] = rate("jax_train_step") / r
    rows.append(
      [
        name,
        r,
        row["x_torch_loop"] if base else "-",
        row["x_jax_vmap_gradnorm"],
        row["cost_x_train_step"],
      ]
    )
  print(
    f"\nPer-sample gradient norms, CIFAR ResNet-18 width {_WIDTH.value}, "
    f"{jax.device_count()} {jax.default_backend()} device(s), {os.cpu_count()} cores, "
    f"host malloc {_MALLOC[host_memory.is_kept()]}\n"
  )
  print(
    common.table(["scorer", "samples/s", "x torch loop", "x jax vmap", "cost / train step"], rows)
  )
  path = common.write_json(
    "per_sample_norms",
    {
      "images": _IMAGES.value,
      "width": _WIDTH.value,
      "batch": batch,
      "host_memory_kept": host_memory.is_kept(),
      "one_pass_vs_vmap_max_rel_diff": agree,
      "gram_max_diff_over_max": gram_agree,
      "max_rel_diff_to_float64": to_float64,
      "paired_rounds": paired if _TORCH.value else [],
      "figures": figures,
    },
    _OUT.value,
  )
  print(f"\nwrote {path}")


if __name__ == "__main__":
  platform_settings.apply()
  app.run(main)

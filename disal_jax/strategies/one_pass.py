"""Exact per-sample gradient norms and Gram matrices from ONE batched forward and backward pass.

`per_sample.py` gets per-sample gradients by jax.vmap(jax.grad): every convolution then runs
with a different weight gradient per sample, which XLA on CPU executes at about half the
speed of PyTorch's per-sample loop. This module never forms a per-sample gradient of the whole
model. It runs the batch forward once with every Conv, Dense and BatchNorm intercepted
(`flax.linen.intercept_methods`): the layer's input is kept and a zero perturbation is added to
its output. One backward pass with respect to those perturbations gives every layer's output
gradients delta_i (samples are independent: BatchNorm must use its running statistics), and
each layer's share of the per-sample squared norm follows from its input a_i and delta_i:

- Dense (and any layer applied at T positions):
  ||g_i||^2 = sum_{t,s} (a_{i,t} . a_{i,s}) (delta_{i,t} . delta_{i,s}); for T = 1 that is
  ||a_i||^2 ||delta_i||^2. Bias: ||sum_t delta_{i,t}||^2.
- Convolution: the same with a_{i,t} the input patch under the kernel at output position t
  (d_in = kh * kw * C_in values), either by that T x T "ghost" form or directly as
  g_i = A_i^T D_i (d_in x d_out), whichever needs fewer operations for the layer's sizes
  (`conv_method`): the direct form is cheap in early, wide-T layers, the ghost form in the
  deeper ones where T is small and d_in * d_out large. The ghost form never forms the patches:
  a_{i,t} . a_{i,s} is a sum over kernel offsets of entries of the input's own position Gram
  (x_{i,p} . x_{i,q} over channels, one per stride phase), shifted by each offset.
- BatchNorm (eval): scale gradient sum_t delta_{i,t} * xhat_{i,t}, shift sum_t delta_{i,t}.

Everything is a Gram matrix of K parameter-space vectors per sample, J_i^T v_{i,k}, where J_i is
the Jacobian of sample i's logits and v_{i,k} (K cotangents on the logits) come from the caller:
- `grad_sq_norms`: K = 1, v_i = d loss_i / d logits_i, any per-sample loss of the logits
  (entropy, DISAL's dynamic loss) -> ||grad_theta loss_i||^2 (B,).
- `logit_gram`: K = C, v = the one-hot vectors -> G_i = J_i J_i^T (B, C, C), from which every
  class's cross-entropy gradient norm follows (`per_sample.class_grad_sq_norms`).
Cost: one forward, K vector-Jacobian products (vmapped: one backward of width K), and per layer
the cheaper of the two forms above. Memory: the layers' inputs and output gradients (K of them).

Every parameter of the model must belong to an intercepted layer; a model with another kind of
parameterised layer, a layer called twice (shared weights) or BatchNorm with batch statistics
is refused with an error that names the layer (the vmap path in `per_sample` handles anything).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen import linear as flax_linear

# model(variables, inputs) -> (B, C) logits, eval mode.
ModelFn = Callable[[Any, jax.Array], jax.Array]
# cotangents(logits (B, C)) -> (B, K, C): the K vectors v_{i,k} whose J_i^T v_{i,k} are compared.
CotangentFn = Callable[[jax.Array], jax.Array]

CONV_METHODS = ("auto", "direct", "ghost")
# Measured on 2 CPU cores (ResNet-18 width 64): 2 samples per step of the per-layer loop ran
# 1.1-1.5x faster than 1, 4 or 8, and 3x faster than the whole batch at once.
SAMPLES_PER_STEP = 2


@dataclasses.dataclass(frozen=True)
class _Layer:
  """What the engine needs to know about one intercepted layer (static, from tracing)."""

  path: str
  kind: str  # 'dense' | 'conv' | 'batchnorm'
  has_bias: bool
  has_scale: bool = False
  kernel_size: tuple[int, ...] = ()
  strides: tuple[int, ...] = ()
  padding: Any = None  # canonical: a sequence of (low, high) pairs
  dilation: tuple[int, ...] = ()
  epsilon: float = 0.0


def _path(module: nn.Module) -> str:
  return "/".join(module.path)


def _describe(
  module: nn.Module, input_shape: tuple[int, ...], call_args: tuple, call_kwargs: dict
) -> _Layer:
  path = _path(module)
  if isinstance(module, nn.BatchNorm):
    running = call_kwargs.get("use_running_average", call_args[1] if len(call_args) > 1 else None)
    if not nn.merge_param("use_running_average", module.use_running_average, running):
      raise ValueError(
        f"one-pass per-sample norms: BatchNorm {path!r} uses batch statistics, "
        "which couple the samples; evaluate the model with train=False"
      )
    if module.axis not in (-1, len(input_shape) - 1):
      raise ValueError(
        f"one-pass per-sample norms: BatchNorm {path!r} normalises axis "
        f"{module.axis}; only the last (feature) axis is supported"
      )
    return _Layer(
      path,
      "batchnorm",
      has_bias=module.use_bias,
      has_scale=module.use_scale,
      epsilon=float(module.epsilon),
    )
  if isinstance(module, nn.Dense):
    return _Layer(path, "dense", has_bias=module.use_bias)
  if isinstance(module, nn.Conv):
    rank = len(input_shape) - 2
    if rank != 2:
      raise ValueError(
        f"one-pass per-sample norms: Conv {path!r} is {rank}-D; the engine "
        "handles 2-D convolutions (use the vmap engine)"
      )
    kernel_size = tuple(module.kernel_size)
    strides = _tuple(module.strides, rank)
    dilation = _tuple(module.kernel_dilation, rank)
    unsupported = []
    if module.feature_group_count != 1:
      unsupported.append(f"feature_group_count={module.feature_group_count}")
    if _tuple(module.input_dilation, rank) != (1,) * rank:
      unsupported.append(f"input_dilation={module.input_dilation}")
    if isinstance(module.padding, str) and module.padding.upper() in (
      "CIRCULAR",
      "CAUSAL",
      "REFLECT",
    ):
      unsupported.append(f"padding={module.padding!r}")
    if unsupported:
      raise ValueError(
        f"one-pass per-sample norms: Conv {path!r} has {', '.join(unsupported)}, "
        "which the engine does not handle; use the vmap engine"
      )
    padding = flax_linear.canonicalize_padding(module.padding, rank)
    if isinstance(padding, str):
      dilated = tuple((k - 1) * d + 1 for k, d in zip(kernel_size, dilation))
      padding = jax.lax.padtype_to_pads(input_shape[1:-1], dilated, strides, padding)
    return _Layer(
      path,
      "conv",
      has_bias=module.use_bias,
      kernel_size=kernel_size,
      strides=strides,
      padding=tuple(tuple(p) for p in padding),
      dilation=dilation,
    )
  raise AssertionError(type(module))


def _tuple(value, rank: int) -> tuple[int, ...]:
  if value is None:
    return (1,) * rank
  if isinstance(value, int):
    return (value,) * rank
  return tuple(value)


def _covered_params(layer: _Layer) -> set[str]:
  names = {"dense": ["kernel"], "conv": ["kernel"], "batchnorm": []}[layer.kind]
  if layer.has_bias:
    names.append("bias")
  if layer.has_scale:
    names.append("scale")
  return {f"{layer.path}/{n}" for n in names}


def _param_paths(params: Any) -> set[str]:
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  return {"/".join(str(k.key) for k in keys) for keys, _ in flat}


_TRACKED = (nn.Conv, nn.Dense, nn.BatchNorm)


def _forward(
  model: ModelFn,
  variables: Any,
  inputs: jax.Array,
  perturbations: Optional[dict[str, jax.Array]],
  layers: dict[str, _Layer],
  output_shapes: dict[str, jax.ShapeDtypeStruct],
):
  """The model's logits with each tracked layer's input recorded and, if given, its output
  perturbed. Fills `layers` (static descriptions) and `output_shapes` on the way.
  Returns (logits, {layer path: layer input})."""
  layer_inputs: dict[str, jax.Array] = {}

  def interceptor(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name != "__call__" or not isinstance(module, _TRACKED):
      return next_fun(*args, **kwargs)
    path = _path(module)
    if path in layer_inputs:
      raise ValueError(
        f"one-pass per-sample norms: layer {path!r} is called more than once "
        "(shared weights); use the vmap engine"
      )
    x = args[0] if args else kwargs["inputs"]
    layers.setdefault(path, _describe(module, x.shape, args, kwargs))
    layer_inputs[path] = x
    out = next_fun(*args, **kwargs)
    output_shapes[path] = jax.ShapeDtypeStruct(out.shape, jnp.float32)
    if perturbations is not None:
      out = out + perturbations[path].astype(out.dtype)
    return out

  with nn.intercept_methods(interceptor):
    logits = model(variables, inputs)
  return logits, layer_inputs


@dataclasses.dataclass(frozen=True)
class _Layout:
  """Where each kernel offset of a 2-D convolution reads its inputs, as contiguous windows.

  The padded input is split into its stride phases (x[ry::sy, rx::sx]), each flattened row-major
  with row length `row` (`rows` rows). Output position (h, w) under kernel offset o reads phase
  `phase[o]` at flat index start[o] + h * row + w, so offset o's inputs are the contiguous
  window [start[o], start[o] + length) of that phase. Columns with w >= the output width are
  padding whose output gradient is set to zero, so they add nothing (about (row - W_out) / W_out
  extra work).
  """

  residues: tuple[tuple[int, int], ...]  # per phase: (ry, rx)
  phase: tuple[int, ...]  # per kernel offset
  start: tuple[int, ...]  # per kernel offset
  rows: int
  row: int
  out_hw: tuple[int, int]

  @property
  def length(self) -> int:
    return self.out_hw[0] * self.row

  def span(self, p: int) -> tuple[int, int]:
    """The flat indices [lo, hi) of phase p that some kernel offset reads."""
    starts = [s for q, s in zip(self.phase, self.start) if q == p]
    return min(starts), max(starts) + self.length


def _layout(padded_hw: tuple[int, int], layer: _Layer) -> _Layout:
  (kh, kw), (sy, sx), (dy, dx) = layer.kernel_size, layer.strides, layer.dilation
  h_out = (padded_hw[0] - (kh - 1) * dy - 1) // sy + 1
  w_out = (padded_hw[1] - (kw - 1) * dx - 1) // sx + 1
  residues: list[tuple[int, int]] = []
  phase, start = [], []
  row = w_out + (kw - 1) * dx // sx
  for oy, ox in _offsets((kh, kw)):
    (qy, ry), (qx, rx) = divmod(oy * dy, sy), divmod(ox * dx, sx)
    if (ry, rx) not in residues:
      residues.append((ry, rx))
    phase.append(residues.index((ry, rx)))
    start.append(qy * row + qx)
  rows = h_out + (kh - 1) * dy // sy + 1  # one spare row: the padding columns run past the end
  return _Layout(tuple(residues), tuple(phase), tuple(start), rows, row, (h_out, w_out))


def _padded_hw(x_shape: tuple[int, ...], layer: _Layer) -> tuple[int, int]:
  return tuple(n + lo + hi for n, (lo, hi) in zip(x_shape[1:3], layer.padding))


def _phases(
  x: jax.Array, layer: _Layer, layout: _Layout, channels_first: bool
) -> tuple[jax.Array, ...]:
  """x: (B, H, W, C_in) layer input -> its stride phases (see _Layout), float32, each
  (B, rows * row, C_in), or channels first (B, C_in, rows * row): then each offset's window is
  a plain (C_in, L) matrix (the direct form's NN products); channels last it is (L, C_in), rows
  of the input as it is laid out (no transpose)."""
  x = jnp.pad(x.astype(jnp.float32), ((0, 0),) + tuple(layer.padding) + ((0, 0),))
  (sy, sx), rows, row = layer.strides, layout.rows, layout.row
  phases = []
  for ry, rx in layout.residues:
    part = x[:, ry::sy, rx::sx][:, :rows, :row]
    part = jnp.pad(part, ((0, 0), (0, rows - part.shape[1]), (0, row - part.shape[2]), (0, 0)))
    part = part.reshape(part.shape[0], rows * row, part.shape[-1])
    phases.append(jnp.swapaxes(part, 1, 2) if channels_first else part)
  return tuple(phases)


def _offsets(kernel_size: tuple[int, ...]):
  if not kernel_size:
    yield ()
    return
  for first in range(kernel_size[0]):
    for rest in _offsets(kernel_size[1:]):
      yield (first,) + rest


def conv_method(
  positions: int, channels_in: int, offsets: int, d_out: int, k: int, phase_spans: tuple[int, ...]
) -> str:
  """'direct' or 'ghost': the form with fewer multiply-adds for a convolution whose per-sample
  windows have L = `positions` columns, `offsets` kernel offsets over `channels_in` input
  channels (d_in = offsets * channels_in), d_out output channels and K cotangents per sample;
  `phase_spans`: how many positions of each stride phase the offsets read.

  direct: G_k = A D_k (d_in x d_out) for each k, then their inner products:
          K L d_in d_out + K^2 d_in d_out
  ghost:  the windows' overlap A^T A (L x L), summed over the offsets from shifted blocks of
          each phase's own Gram over the channels (n_p x n_p), then D_k^T (A^T A) D_l:
          sum_p n_p^2 C_in + offsets L^2 + K L^2 d_out + K^2 L d_out
  """
  d_in = offsets * channels_in
  direct = k * positions * d_in * d_out + k * k * d_in * d_out
  ghost = (
    sum(n * n for n in phase_spans) * channels_in
    + offsets * positions * positions
    + k * positions * positions * d_out
    + k * k * positions * d_out
  )
  return "direct" if direct <= ghost else "ghost"


def _conv_gram(
  x: jax.Array, delta: jax.Array, layer: _Layer, method: str, samples_per_step: int
) -> jax.Array:
  """(B, K, K) Gram of the per-sample kernel gradients of a 2-D convolution.

  x: (B, H, W, C_in) layer input; delta: (K, B, H_out, W_out, C_out) output gradients.
  Per sample: A = the stacked windows (kh * kw * C_in, L), D_k = delta_k laid out like the
  windows' columns (L, C_out); kernel gradient = A D_k. The samples go through lax.map in
  groups of `samples_per_step`: one group's windows stay in cache, where materialising the
  whole batch's patches (9x the activations) is bound by memory bandwidth (measured on CPU:
  2.5x slower). The ghost form never stacks the windows: the overlap of windows o and o' is a
  block of the input's own Gram (the same phase, shifted), so it costs one Gram per phase
  instead of one per offset.
  """
  k, batch, d_out = delta.shape[0], delta.shape[1], delta.shape[-1]
  channels_in = x.shape[-1]
  win = _layout(_padded_hw(x.shape, layer), layer)
  h_out, w_out = win.out_hw
  if delta.shape[2:4] != (h_out, w_out):
    raise AssertionError((delta.shape, win.out_hw))
  spans = [win.span(p) for p in range(len(win.residues))]
  if method == "auto":
    method = conv_method(
      win.length, channels_in, len(win.start), d_out, k, tuple(hi - lo for lo, hi in spans)
    )
  phases = _phases(x, layer, win, channels_first=(method == "direct"))
  d = jnp.pad(delta.astype(jnp.float32), ((0, 0),) * 3 + ((0, win.row - w_out), (0, 0)))
  d = jnp.transpose(d.reshape(k, batch, win.length, d_out), (1, 2, 0, 3))  # (B, L, K, C_out)
  d = d.reshape(batch, win.length, k * d_out)

  def direct(sample):
    phases, dk = sample  # phases: each (C_in, n_p); dk: (L, K * C_out)
    a = jnp.concatenate(
      [
        jax.lax.slice_in_dim(phases[p], s, s + win.length, axis=1)
        for p, s in zip(win.phase, win.start)
      ],
      axis=0,
    )  # (d_in, L)
    g = (a @ dk).reshape(len(win.start) * channels_in, k, d_out)
    return jnp.einsum("ikd,ild->kl", g, g)

  def ghost(sample):
    phases, dk = sample  # phases: each (n_p, C_in); dk: (L, K * C_out)
    grams = [part[lo:hi] @ part[lo:hi].T for part, (lo, hi) in zip(phases, spans)]
    overlap = sum(
      jax.lax.slice(grams[p], (s - spans[p][0],) * 2, (s - spans[p][0] + win.length,) * 2)
      for p, s in zip(win.phase, win.start)
    )  # (L, L)
    mixed = (overlap @ dk).reshape(win.length, k, d_out)
    return jnp.einsum("tkd,tld->kl", dk.reshape(win.length, k, d_out), mixed)

  return jax.lax.map(
    ghost if method == "ghost" else direct, (phases, d), batch_size=samples_per_step
  )


def _dense_gram(a: jax.Array, delta: jax.Array) -> jax.Array:
  """(B, K, K) Gram of the per-sample weight gradients sum_t a_t delta_{k,t}^T of a Dense layer.

  a: (B, T, d_in) float32 inputs; delta: (K, B, T, d_out) output gradients. T = 1 (the usual
  case) reduces to ||a||^2 (delta_k . delta_l); otherwise the T x T form.
  """
  if a.shape[1] == 1:
    return jnp.sum(a[:, 0] ** 2, axis=-1)[:, None, None] * jnp.einsum(
      "kbo,lbo->bkl", delta[:, :, 0], delta[:, :, 0]
    )
  overlap = jnp.einsum("btd,bsd->bts", a, a)
  mixed = jnp.einsum("bts,kbso->kbto", overlap, delta)
  return jnp.einsum("kbto,lbto->bkl", delta, mixed)


def _vector_gram(v: jax.Array) -> jax.Array:
  """(B, K, K) Gram of per-sample vectors v (K, B, d)."""
  return jnp.einsum("kbd,lbd->bkl", v, v)


def _layer_grams(
  layer: _Layer, x: jax.Array, delta: jax.Array, variables: Any, conv: str, samples_per_step: int
) -> list[jax.Array]:
  """This layer's parameters' shares of the per-sample Gram matrix: one (B, K, K) per
  parameter tensor (kernel, BatchNorm scale, bias), their sum the layer's share.

  x: the layer input (B, ..., d_in); delta: output gradients (K, B, ..., d_out).
  """
  k = delta.shape[0]
  grams = []
  if layer.kind == "conv":
    grams.append(_conv_gram(x, delta, layer, conv, samples_per_step))
  delta = delta.astype(jnp.float32)
  # Sums over the position axes as they are: the same as one einsum over flattened positions
  # ran 3-4x slower on XLA:CPU (BatchNorm, 64 x 32 x 32 x 64: 19.1 against 6.5 ms).
  positions = tuple(range(2, delta.ndim - 1))
  if layer.kind == "batchnorm":
    stats = variables["batch_stats"]
    for name in layer.path.split("/"):
      stats = stats[name]
    xhat = (x.astype(jnp.float32) - stats["mean"]) * jax.lax.rsqrt(
      stats["var"].astype(jnp.float32) + layer.epsilon
    )
    if layer.has_scale:
      grams.append(_vector_gram(jnp.sum(delta * xhat, axis=positions)))
  elif layer.kind == "dense":
    batch = delta.shape[1]
    grams.append(
      _dense_gram(
        x.astype(jnp.float32).reshape(batch, -1, x.shape[-1]),
        delta.reshape(k, batch, -1, delta.shape[-1]),
      )
    )
  if layer.has_bias:
    grams.append(_vector_gram(jnp.sum(delta, axis=positions)))
  return grams


def cotangent_gram(
  model: ModelFn,
  variables: Any,
  inputs: jax.Array,
  cotangents: CotangentFn,
  *,
  conv: str = "auto",
  samples_per_step: int = SAMPLES_PER_STEP,
  per_tensor: bool = False,
) -> tuple[jax.Array, jax.Array]:
  """Per-sample Gram matrices of J_i^T v_{i,k} over all parameters, and the logits.

  Args:
    model: model(variables, inputs) -> (B, C) logits, the model in eval mode.
    variables: {'params': ..., other collections (e.g. 'batch_stats')}.
    inputs: (B, ...) the batch, as `model` takes it.
    cotangents: logits (B, C) -> (B, K, C) float32, the vectors v_{i,k}.
    conv: 'auto' (per layer, the cheaper form), 'direct' or 'ghost' (for tests, benchmarks).
    samples_per_step: samples per step of the per-layer loop over the batch (see _conv_gram).
    per_tensor: keep one Gram per parameter tensor instead of their sum.
  Returns:
    gram: (B, K, K) float32, gram[i, k, l] = <J_i^T v_{i,k}, J_i^T v_{i,l}>; per_tensor:
      (B, T, K, K), one per parameter tensor (T of them, in no particular order).
    logits: (B, C) float32.
  """
  if conv not in CONV_METHODS:
    raise ValueError(f"conv={conv!r}: expected one of {CONV_METHODS}")
  layers: dict[str, _Layer] = {}
  output_shapes: dict[str, jax.ShapeDtypeStruct] = {}
  jax.eval_shape(lambda v, x: _forward(model, v, x, None, layers, output_shapes), variables, inputs)
  missing = _param_paths(variables["params"]) - set().union(
    *(_covered_params(layer) for layer in layers.values())
  )
  if missing:
    raise ValueError(
      "one-pass per-sample norms: parameters outside Conv/Dense/BatchNorm layers "
      f"({sorted(missing)[:5]}); use the vmap engine for this model"
    )
  zeros = {path: jnp.zeros(shape.shape, shape.dtype) for path, shape in output_shapes.items()}

  def perturbed(perturbations):
    logits, layer_inputs = _forward(model, variables, inputs, perturbations, layers, {})
    return logits.astype(jnp.float32), layer_inputs

  logits, vjp, layer_inputs = jax.vjp(perturbed, zeros, has_aux=True)
  v = cotangents(jax.lax.stop_gradient(logits))  # (B, K, C)
  deltas = jax.vmap(lambda c: vjp(c)[0], in_axes=1)(v)  # {path: (K, B, ...)}
  grams = [
    g
    for path in layers
    for g in _layer_grams(
      layers[path], layer_inputs[path], deltas[path], variables, conv, samples_per_step
    )
  ]
  if per_tensor:
    return jnp.stack(grams, axis=1), logits
  return sum(grams), logits


def grad_sq_norms(
  model: ModelFn,
  variables: Any,
  inputs: jax.Array,
  loss: Callable[[jax.Array], jax.Array],
  **options,
) -> jax.Array:
  """(B,) float32 ||grad_params loss_i||^2 over all parameters, loss: logits (B, C) -> (B,)
  per-sample losses (each row's loss may depend on that row's logits only); with
  per_tensor=True, (B, T): one squared norm per parameter tensor."""

  def cotangents(logits):
    return jax.grad(lambda z: jnp.sum(loss(z)))(logits)[:, None, :]

  gram, _ = cotangent_gram(model, variables, inputs, cotangents, **options)
  return gram[..., 0, 0]


def logit_gram(
  model: ModelFn, variables: Any, inputs: jax.Array, **options
) -> tuple[jax.Array, jax.Array]:
  """G_i = J_i J_i^T (B, C, C) float32 for every sample (per_tensor=True: (B, T, C, C)),
  and the logits (B, C)."""

  def cotangents(logits):
    eye = jnp.eye(logits.shape[-1], dtype=jnp.float32)
    return jnp.broadcast_to(eye, (logits.shape[0],) + eye.shape)

  return cotangent_gram(model, variables, inputs, cotangents, **options)

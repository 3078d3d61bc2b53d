"""The one-pass per-sample gradient engine against the vmap path and a per-sample grad loop."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.models import drn, resnet
from disal_jax.strategies import one_pass, per_sample
from disal_jax.strategies.base import entropy_of_logits

CLASSES = 6


class DilatedNet(nn.Module):
  """A small net with what DRN-D-22 uses and ResNet-18 does not: dilations 2 and 4, convs with
  bias, 'SAME' padding, a non-square kernel, a Dense applied at every position, and a conv
  stride that does not divide the input."""

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.Conv(8, (3, 3), strides=2, padding=1, use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.Conv(8, (3, 3), kernel_dilation=2, padding=2)(x)
    x = nn.relu(x)
    x = nn.Conv(12, (3, 3), kernel_dilation=4, padding="SAME", use_bias=False)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
    x = nn.Conv(12, (3, 1), strides=(2, 1), padding="VALID")(x)
    x = nn.relu(nn.Dense(10)(x))  # at every position (T > 1)
    x = nn.Conv(CLASSES, (1, 1))(x)
    return {"logits": jnp.mean(x, axis=(1, 2))}


def _perturbed(variables, scale=0.2):
  """Random weights and BatchNorm statistics far from their initial values (numpy, fast)."""
  rng = np.random.default_rng(0)

  def jitter(tree, fn):
    flat = flax.traverse_util.flatten_dict(jax.device_get(tree))
    return flax.traverse_util.unflatten_dict(
      {k: jnp.asarray(fn(k, np.asarray(v)), jnp.float32) for k, v in sorted(flat.items())}
    )

  params = jitter(
    variables["params"],
    lambda k, v: (
      v
      + scale * (v.std() + 1e-3) * rng.standard_normal(v.shape)
      + (0.05 * rng.standard_normal(v.shape) if k[-1] in ("bias", "scale") else 0)
    ),
  )
  stats = jitter(
    variables["batch_stats"],
    lambda k, v: (
      rng.uniform(0.5, 2.0, v.shape) if k[-1] == "var" else 0.2 * rng.standard_normal(v.shape)
    ),
  )
  return {"params": params, "batch_stats": stats}


_MODELS = {}


def _model_of(net):
  """One model function per net, so jitted callers that take it statically compile once."""
  if net not in _MODELS:
    _MODELS[net] = lambda v, inputs: net.apply(v, inputs, train=False)["logits"]
  return _MODELS[net]


@functools.lru_cache(maxsize=None)
def _variables(net, size):
  init = jax.jit(functools.partial(net.init, train=False))
  return _perturbed(init(jax.random.key(1), jnp.zeros((1, size, size, 3))))


def _setup(net, batch, size):
  x = jax.random.normal(jax.random.key(7), (batch, size, size, 3))
  return _model_of(net), _variables(net, size), x


@functools.lru_cache(maxsize=None)
def _sample_grad(model):
  """jax.grad of one sample's entropy, jitted once per model."""

  def one(variables, xi):
    return entropy_of_logits(model(variables, xi[None]))[0]

  return jax.jit(jax.grad(one))


def _loop_sq_norms(model, variables, x):
  """Slow reference: one jax.grad per sample in a Python loop (entropy loss)."""
  grad = _sample_grad(model)
  return np.array(
    [
      sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(grad(variables, x[i])["params"]))
      for i in range(x.shape[0])
    ]
  )


NETS = {
  "resnet18": (resnet.ResNet18(num_classes=CLASSES, width=8), 16),
  "drn_d_22": (drn.DRN_D_22(num_classes=CLASSES, width=2), 16),
  "dilated": (DilatedNet(), 19),
}


# ResNet-18 at batches 1, 7, 32 (the engine's step split and padding); DRN-D-22 and the small
# dilated net (conv bias, 'SAME', non-square kernels) at 7.
@pytest.mark.parametrize(
  "name,batch",
  [pytest.param("resnet18", b, marks=pytest.mark.slow) for b in (1, 7, 32)]
  + [pytest.param("drn_d_22", 7, marks=pytest.mark.slow), ("dilated", 7)],
)
def test_entropy_grad_norms_equal_vmap_and_a_per_sample_loop(name, batch):
  net, size = NETS[name]
  model, variables, x = _setup(net, batch, size)
  loss = lambda logits, aux: entropy_of_logits(logits)
  fast = jax.jit(per_sample.Engine("one_pass").grad_sq_norms, static_argnums=(0, 3))(
    model, variables, x, loss
  )
  vmap = jax.jit(per_sample.Engine("vmap").grad_sq_norms, static_argnums=(0, 3))(
    model, variables, x, loss
  )
  loop = _loop_sq_norms(model, variables, x)
  assert loop.min() > 1e-6 * loop.max() > 0  # no sample trivially zero
  np.testing.assert_allclose(fast, loop, rtol=1e-4)
  np.testing.assert_allclose(vmap, loop, rtol=1e-4)


@pytest.mark.parametrize("name", ["dilated", pytest.param("resnet18", marks=pytest.mark.slow)])
# (DRN-D-22 adds no new layer kind)
def test_both_conv_forms_and_any_step_size_agree(name):
  net, size = NETS[name]
  model, variables, x = _setup(net, 5, size)
  loss = lambda z: entropy_of_logits(z)
  norms = jax.jit(
    one_pass.grad_sq_norms, static_argnums=(0, 3), static_argnames=("conv", "samples_per_step")
  )
  results = [
    norms(model, variables, x, loss, conv=conv, samples_per_step=step)
    for conv, step in (("direct", 1), ("ghost", 2), ("auto", 3))
  ]
  for r in results[1:]:
    np.testing.assert_allclose(r, results[0], rtol=1e-4)


@pytest.mark.parametrize(
  "name", [n if n == "dilated" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(NETS)]
)
def test_logit_gram_equals_the_vmap_jacobian_gram(name):
  net, size = NETS[name]
  model, variables, x = _setup(net, 4, size)
  gram, logits = jax.jit(one_pass.logit_gram, static_argnums=0)(model, variables, x)
  ref, ref_logits = jax.jit(per_sample.Engine("vmap").logit_gram, static_argnums=0)(
    model, variables, x
  )
  assert gram.shape == (4, CLASSES, CLASSES)
  np.testing.assert_allclose(logits, ref_logits, rtol=1e-5, atol=1e-6)
  scale = np.abs(np.asarray(ref)).max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(gram / scale, ref / scale, atol=1e-5)
  np.testing.assert_allclose(gram, np.swapaxes(gram, 1, 2), rtol=1e-5, atol=1e-6 * scale.max())


@pytest.mark.slow
def test_per_sample_targets_reach_the_right_rows():
  """A loss reading per-row targets (DISAL's) is scored row by row in both engines."""
  net, size = NETS["resnet18"]
  model, variables, x = _setup(net, 5, size)
  target = jax.nn.softmax(jax.random.normal(jax.random.key(3), (5, CLASSES)))
  loss = lambda z, t: -jnp.sum(t * jax.nn.log_softmax(z), axis=-1)
  fast_fn = jax.jit(per_sample.Engine("one_pass").grad_sq_norms, static_argnums=(0, 3))
  fast = fast_fn(model, variables, x, loss, target)
  vmap = jax.jit(per_sample.Engine("vmap").grad_sq_norms, static_argnums=(0, 3))(
    model, variables, x, loss, target
  )
  np.testing.assert_allclose(fast, vmap, rtol=1e-4)
  flipped = fast_fn(model, variables, x, loss, target[::-1])
  assert not np.allclose(flipped, fast, rtol=1e-3)


def test_conv_method_picks_the_cheaper_form():
  # first stage of CIFAR ResNet-18 (32 x 32, 64 -> 64): long windows, few channels -> direct;
  # second (16 x 16, 128 -> 128): the phase Gram is cheaper; last (4 x 4, 512): ghost
  assert one_pass.conv_method(32 * 34, 64, 9, 64, 1, (34 * 34 + 2,)) == "direct"
  assert one_pass.conv_method(16 * 18, 128, 9, 128, 1, (18 * 18 + 2,)) == "ghost"
  assert one_pass.conv_method(4 * 6, 512, 9, 512, 1, (6 * 6 + 2,)) == "ghost"


class _SharedLayer(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    dense = nn.Dense(CLASSES)
    return {"logits": dense(x) + dense(x)}


class _OwnParam(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    w = self.param("w", nn.initializers.ones, (x.shape[-1], CLASSES))
    return {"logits": x @ w}


class _BatchStats(nn.Module):
  @nn.compact
  def __call__(self, x, train=False):
    x = nn.BatchNorm(use_running_average=False)(x)
    return {"logits": nn.Dense(CLASSES)(x)}


@pytest.mark.parametrize(
  "net, message",
  [
    (_SharedLayer(), "called more than once"),
    (_OwnParam(), "outside Conv/Dense/BatchNorm"),
    (_BatchStats(), "batch statistics"),
  ],
)
def test_models_the_engine_cannot_handle_are_refused_by_name(net, message):
  x = jnp.ones((3, 4))
  variables = net.init(jax.random.key(0), x)
  model = lambda v, inputs: (
    net.apply(v, inputs, mutable=["batch_stats"])[0]["logits"]
    if "batch_stats" in v
    else net.apply(v, inputs)["logits"]
  )
  with pytest.raises(ValueError, match=message):
    one_pass.grad_sq_norms(model, variables, x, lambda z: jnp.sum(z**2, axis=-1))


def test_tiny_resnet_grad_norms_equal_vmap_of_grad():
  """The default model's layers in the fast tier (the stem, identity and strided 1x1-shortcut
  blocks, BatchNorm, the pooled head): one block per stage, width 2, 8 x 8 inputs, against
  jax.vmap(jax.grad) written out here."""
  net = resnet.ResNet(stage_sizes=(1, 1, 1, 1), num_classes=CLASSES, width=2)
  model, variables, x = _setup(net, 3, 8)

  def one(params, xi):
    logits = model({"params": params, "batch_stats": variables["batch_stats"]}, xi[None])
    return entropy_of_logits(logits)[0]

  grads = jax.jit(jax.vmap(jax.grad(one), in_axes=(None, 0)))(variables["params"], x)
  brute = np.asarray(
    sum(jnp.sum(g.reshape(x.shape[0], -1) ** 2, axis=1) for g in jax.tree.leaves(grads))
  )
  fast = jax.jit(one_pass.grad_sq_norms, static_argnums=(0, 3))(
    model, variables, x, entropy_of_logits
  )
  assert brute.min() > 1e-6 * brute.max() > 0  # no sample trivially zero
  np.testing.assert_allclose(fast, brute, rtol=1e-4)

"""DRN-D-22: its parameter count against the reference constructor, counted layer by layer,
and its output shapes (classification and segmentation)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.models import drn


def _reference_count(num_classes: int) -> int:
  """Trainable parameters of fyu/drn's drn_d_22(num_classes), from its constructor:
  conv kernels (no bias), BatchNorm weight + bias, the 1x1 conv head with bias."""
  conv = lambda k, cin, cout: k * k * cin * cout
  bn = lambda c: 2 * c
  block = lambda cin, cout: (
    conv(3, cin, cout)
    + bn(cout)
    + conv(3, cout, cout)
    + bn(cout)
    + (conv(1, cin, cout) + bn(cout) if cin != cout else 0)
  )
  c = (16, 32, 64, 128, 256, 512, 512, 512)
  total = conv(7, 3, c[0]) + bn(c[0])  # layer0
  total += conv(3, c[0], c[0]) + bn(c[0])  # layer1
  total += conv(3, c[0], c[1]) + bn(c[1])  # layer2
  for cin, cout, blocks in (
    (c[1], c[2], 2),
    (c[2], c[3], 2),
    (c[3], c[4], 2),
    (c[4], c[5], 2),
  ):  # layers 3-6
    total += block(cin, cout) + (blocks - 1) * block(cout, cout)
  total += 2 * (conv(3, 512, 512) + bn(512))  # layers 7, 8
  return total + 512 * num_classes + num_classes  # fc


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_parameter_count_equals_the_reference_constructor():
  net = drn.DRN_D_22(num_classes=1000)
  shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 224, 224, 3))))
  assert _count(shapes["params"]) == _reference_count(1000) == 16_393_752


@pytest.mark.parametrize("size", [(32, 32), (40, 56)])
def test_outputs_have_the_expected_shapes(size):
  x = jnp.zeros((2, *size, 3))
  net = drn.DRN_D_22(num_classes=7, width=4)
  variables = net.init(jax.random.key(0), x)
  out = net.apply(variables, x)
  assert out["logits"].shape == (2, 7) and out["features"].shape == (2, 128)
  assert [s.shape[1:3] for s in out["stages"]] == [(size[0] // 4, size[1] // 4)] + [
    (size[0] // 8, size[1] // 8)
  ] * 3
  seg = drn.DRNSeg(num_classes=5, width=4)
  seg_out = seg.apply(seg.init(jax.random.key(0), x), x)
  assert seg_out["logits"].shape == (2, *size, 5)  # the input's size
  assert seg_out["feature_map"].shape == (2, size[0] // 8, size[1] // 8, 128)
  np.testing.assert_allclose(
    seg_out["features"], seg_out["feature_map"].mean(axis=(1, 2)), rtol=1e-5, atol=1e-6
  )

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from disal_jax.models import registry, resnet
from tests.helpers import tiny_config


def _param_count(model, shape):
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape)))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


def test_cifar_resnet18_has_the_known_parameter_count():
  # 11,173,962: the CIFAR ResNet-18 (3x3 stem, 10 classes) of the AL references.
  assert _param_count(resnet.ResNet18(num_classes=10), (1, 32, 32, 3)) == 11_173_962


def test_imagenet_resnet18_matches_torchvision_count():
  # torchvision.models.resnet18() has 11,689,512 parameters.
  assert (
    _param_count(resnet.ResNet18(num_classes=1000, stem="imagenet"), (1, 224, 224, 3)) == 11_689_512
  )


@pytest.mark.parametrize("stem,size,final", [("cifar", 32, 4), ("imagenet", 64, 2)])
def test_outputs_logits_features_and_stage_maps(stem, size, final):
  model = resnet.ResNet18(num_classes=7, width=8, stem=stem)
  x = jnp.ones((2, size, size, 3))
  variables = model.init(jax.random.key(0), x)
  out = model.apply(variables, x, train=False)
  assert out["logits"].shape == (2, 7)
  assert out["features"].shape == (2, 64)
  widths = [s.shape[-1] for s in out["stages"]]
  assert widths == [8, 16, 32, 64]
  assert out["stages"][-1].shape[1] == final


def test_registry_builds_by_name_and_rejects_unknown():
  cfg = ml_collections.ConfigDict(
    {
      "name": "resnet18",
      "width": 8,
      "stem": "cifar",
      "dtype": "float32",
      "dropout_rate": 0.0,
      "train_dropout": True,
    }
  )
  assert isinstance(registry.build_model(cfg, 10), resnet.ResNet)
  cfg.name = "vgg"
  with pytest.raises(KeyError, match="resnet18"):
    registry.build_model(cfg, 10)


@pytest.mark.parametrize("train_dropout", [True, False])
def test_dropout_acts_in_training_only_when_told_and_always_in_query_passes(train_dropout):
  model = resnet.ResNet18(num_classes=5, width=4, dropout_rate=0.5, train_dropout=train_dropout)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 3))
  variables = model.init(jax.random.key(1), x)

  def logits(train, key):
    out = model.apply(
      variables,
      x,
      train=train,
      dropout=True,
      rngs={"dropout": key},
      mutable=["batch_stats"] if train else False,
    )
    return np.asarray((out[0] if train else out)["logits"])

  for train in (True, False):
    differ = not np.allclose(logits(train, jax.random.key(2)), logits(train, jax.random.key(3)))
    assert differ == (train_dropout or not train)


def test_init_from_loads_matching_arrays_and_keeps_another_heads_fresh(tmp_path):
  """A checkpoint of the same backbone with a 3-class head: every backbone array (and its
  BatchNorm statistics) comes from the file, the 10-class head stays as initialised; a
  corrupt or unrelated file is a ConfigError naming the key."""
  import flax

  from disal_jax.config import ConfigError
  from disal_jax.data.registry import load_dataset
  from disal_jax.models.registry import build_model
  from disal_jax.training import sharding
  from disal_jax.training.trainer import Trainer

  config = tiny_config()
  dataset = load_dataset(config.data)
  other = build_model(config.model, 3).init(
    jax.random.key(5), jnp.zeros((1, *dataset.image_shape)), train=False
  )
  other = jax.tree.map(lambda x: x + 0.5, other)  # unlike any fresh initialisation
  path = tmp_path / "pretrained.msgpack"
  path.write_bytes(flax.serialization.to_bytes(other))
  config.model.init_from = str(path)
  trainer = Trainer(
    config, build_model(config.model, dataset.num_classes), dataset, sharding.make_mesh()
  )
  state = jax.device_get(trainer.init_state(jax.random.key(0)))
  fresh = jax.device_get(
    Trainer(tiny_config(), trainer.model, dataset, trainer.mesh).init_state(jax.random.key(0))
  )
  flat = flax.traverse_util.flatten_dict(
    {"params": state.params, "batch_stats": state.batch_stats}, sep="/"
  )
  source = flax.traverse_util.flatten_dict(flax.core.unfreeze(other), sep="/")
  fresh_flat = flax.traverse_util.flatten_dict(
    {"params": fresh.params, "batch_stats": fresh.batch_stats}, sep="/"
  )
  head = [k for k in flat if np.shape(flat[k]) != np.shape(source.get(k))]
  assert head and all("params/" in k for k in head) and len(head) == 2  # kernel and bias
  for key, value in flat.items():
    expected = fresh_flat[key] if key in head else source[key]
    np.testing.assert_array_equal(value, expected)
  # the next cycle starts from the checkpoint again (the arrays were read once)
  again = jax.device_get(trainer.init_state(jax.random.key(1)))
  np.testing.assert_array_equal(
    jax.tree.leaves(again.batch_stats)[0], jax.tree.leaves(state.batch_stats)[0]
  )

  path.write_bytes(b"\x00not msgpack")
  with pytest.raises(ConfigError, match="init_from"):
    Trainer(config, trainer.model, dataset, trainer.mesh).init_state(jax.random.key(0))
  config.model.init_from = str(tmp_path / "missing.msgpack")
  with pytest.raises(ConfigError, match="cannot read"):
    Trainer(config, trainer.model, dataset, trainer.mesh).init_state(jax.random.key(0))


def test_model_dtype_sets_the_compute_dtype_and_keeps_float32_parameters():
  """model.dtype='bfloat16' through the registry: the convolutions run in bfloat16 (their
  outputs round), the parameters and the returned logits stay float32."""
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  outputs = {}
  for dtype in ("float32", "bfloat16"):
    config = tiny_config(**{"model.dtype": dtype, "model.width": 4})
    model = registry.build_model(config.model, 5)
    # flax's BatchNorm mixes its float32 statistics with bfloat16 inputs: standard promotion,
    # as outside the tests
    with jax.numpy_dtype_promotion("standard"):
      variables = jax.jit(lambda v, m=model: m.init(jax.random.key(0), v))(x)
      out = jax.jit(lambda v, i, m=model: m.apply(v, i, train=False))(variables, x)
    assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    assert out["logits"].dtype == jnp.float32
    assert {s.dtype for s in out["stages"]} == {jnp.dtype(dtype)}
    outputs[dtype] = np.asarray(out["logits"])
  diff = np.abs(outputs["bfloat16"] - outputs["float32"])
  scale = np.abs(outputs["float32"]).max()
  assert 1e-4 * scale < diff.max() < 0.1 * scale  # bfloat16's rounding: close, not equal

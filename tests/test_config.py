import subprocess
import sys

import pytest

from disal_jax.data import registry as data_registry
from disal_jax.errors import ConfigError
from disal_jax.experiment import base_config, strategy_names, validate
from disal_jax.models import registry as model_registry
from disal_jax.strategies import registry as strategy_registry
from tests.helpers import CONFIGS, REPO, load_config, tiny_config

CONFIG_NAMES = sorted(p.stem for p in CONFIGS.glob("*.py"))


def test_the_paper_settings_all_have_configs():
  for name in (
    "default",
    "cifar10",
    "cifar100",
    "svhn",
    "caltech101",
    "imagenet100",
    "cifar100_ir10",
    "cifar10_ir100",
    "cityscapes",
    "segmentation_demo",
  ):
    assert name in CONFIG_NAMES


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_every_config_loads_validates_and_names_registered_things(name):
  config = load_config(name)
  validate(config)
  assert config.data.name in data_registry.names()
  assert config.model.name in model_registry.names()
  segmentation = config.data.name in ("shapes", "cityscapes")
  assert model_registry.is_segmentation(config.model.name) == segmentation
  for strategy in strategy_names(config):
    assert strategy in strategy_registry.names(segmentation=segmentation)


@pytest.mark.parametrize(
  "key,value,match",
  [
    ("strategies", "disal,nope", "strategies='nope' is invalid"),
    ("data.name", "mnist", "data.name='mnist' is invalid"),
    ("al.initial_fraction", 1.5, r"al.initial_fraction=1.5 is invalid: a fraction in \(0, 1\]"),
    ("train.optimizer", "rmsprop", "train.optimizer='rmsprop' is invalid"),
    ("disal.score", "magic", "disal.score='magic' is invalid"),
  ],
)
def test_bad_values_fail_with_the_key_and_allowed_values(key, value, match):
  with pytest.raises(ConfigError, match=match):
    validate(tiny_config(**{key: value}))


def test_batch_size_must_divide_over_devices():
  with pytest.raises(
    ConfigError,
    match=r"train.batch_size=12 is invalid: a positive multiple "
    r"of the device count \(8\)",
  ):
    validate(tiny_config(**{"train.batch_size": 12}), num_devices=8)


def _main(*args):
  return subprocess.run(
    [sys.executable, "-m", "disal_jax.main", *args],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )


def test_unknown_override_key_fails_at_once_naming_the_key(tmp_path):
  out = _main("--config=configs/default.py", "--config.train.epocs=3", f"--workdir={tmp_path}")
  assert out.returncode == 2
  assert out.stderr.strip() == (
    'error: bad config override: no config key \'epocs\'; Did you mean "epochs" instead of "epocs"?'
  )
  assert not (tmp_path / "config.json").exists()  # nothing ran


@pytest.mark.parametrize(
  "args, message",
  [
    (["--config.disal.branch=foo"], "error: config.disal.branch='foo' is invalid"),
    (
      ["--config.data.name=cifar10", "--config.data.data_dir={tmp}/none"],
      "error: Dataset 'cifar10' (tfds 'cifar10') is not prepared",
    ),
  ],
)
def test_a_bad_value_or_a_missing_dataset_is_one_message_without_traceback(tmp_path, args, message):
  out = _main(
    "--config=configs/default.py:quick",
    f"--workdir={tmp_path}",
    *[a.format(tmp=tmp_path) for a in args],
  )
  assert out.returncode == 2
  assert any(line.startswith(message) for line in out.stderr.splitlines())
  assert "Traceback" not in out.stderr
  assert "Unable to initialize backend" not in out.stderr


def test_the_entry_point_prints_any_user_error_as_one_line_with_status_2():
  """cli.run catches the base class: a UserError it has never heard of gets the same treatment
  as ConfigError above."""
  script = (
    "from disal_jax import cli, errors\n"
    "class NewError(errors.UserError): pass\n"
    "def main(argv): raise NewError('the input is wrong; do this instead')\n"
    "cli.run(main)\n"
  )
  out = subprocess.run(
    [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert out.returncode == 2
  assert out.stderr.strip().splitlines()[-1] == "error: the input is wrong; do this instead"
  assert "Traceback" not in out.stderr


def test_every_key_has_a_default_and_a_comment_where_it_is_defined():
  from disal_jax import config_keys

  defaults = config_keys._flatten(base_config().to_dict())
  comments = config_keys.key_comments()
  assert set(comments) == set(defaults)
  assert [k for k, text in comments.items() if not text] == []
  listing = config_keys.describe("disal.")
  assert "disal.dynamic_weight = 10.0  # " in listing
  assert all(line.startswith("disal.") for line in listing.splitlines())


def test_a_strategy_brings_its_own_config_section(monkeypatch):
  """A strategy module's section joins base_config, its checks join validate, its comments
  join config_keys; nothing in disal_jax/config.py names it."""
  import ml_collections

  from disal_jax import config_keys
  from disal_jax.errors import check_value
  from disal_jax.strategies import base, random, registry

  def defaults():
    s = ml_collections.ConfigDict()
    s.temperature = 2.0  # softmax temperature of the toy score
    return s

  def check(config, num_devices):
    del num_devices
    check_value(config.toy.temperature > 0, "toy.temperature", config.toy.temperature, "> 0")

  toy = base.Strategy(
    name="toy",
    record="none",
    score=random.random_scores,
    config_section=base.ConfigSection("toy", defaults, check),
  )
  monkeypatch.setitem(registry._STRATEGIES, "toy", toy)
  config = base_config()
  assert config.toy.temperature == 2.0
  config.strategies = "toy"
  validate(config)
  config.lock()  # as config_flags locks it: a mistyped override fails at once
  with pytest.raises(AttributeError):
    config.toy.temprature = 1.0
  config.toy.temperature = -1.0
  with pytest.raises(ConfigError, match="toy.temperature"):
    validate(config)
  assert config_keys.key_comments()["toy.temperature"] == "softmax temperature of the toy score"


@pytest.mark.parametrize("name", ["base_config", "validate", "validate_for_dataset"])
def test_a_name_that_moved_to_experiment_says_where_it_is_now(name):
  """disal_jax.config sits below the registries; a config file that still imports the whole
  config's builder from there learns the new import instead of a bare ImportError."""
  with pytest.raises(ImportError, match=rf"from disal_jax\.experiment import {name}`"):
    exec(f"from disal_jax.config import {name}", {})


def test_the_experiment_wide_keys_and_the_strategy_sections_make_the_whole_config():
  from disal_jax import config as config_lib

  whole, common = base_config(), config_lib.common_config()
  sections = set(strategy_registry.sections())
  assert sections and not sections & set(common)
  assert set(whole) == set(common) | sections
  assert whole.train.to_dict() == common.train.to_dict()

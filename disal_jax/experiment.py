"""An experiment's whole config: the experiment-wide keys and every strategy's section, checked.

Config files in `configs/` start from `base_config()` and override what their protocol says
(see docs/method.md):

  from disal_jax.experiment import base_config

Every key is documented once, where it is assigned: the experiment-wide ones in
disal_jax/config.py, each strategy's in its module (`python -m disal_jax.config_keys` lists
them all). This module sits above the data, model and strategy registries, which it reads;
config.py, below them, imports none of them, so a strategy can import the checks it needs
(disal_jax.errors) without a cycle.
"""

from __future__ import annotations

import ml_collections

from disal_jax import config as config_lib
from disal_jax.config import strategy_names
from disal_jax.errors import ConfigError, check_value

# ConfigError too: the loop and the annotation rounds take the whole config API from here.
__all__ = ["ConfigError", "base_config", "strategy_names", "validate", "validate_for_dataset"]


def base_config() -> ml_collections.ConfigDict:
  """Defaults: the paper's CIFAR protocol on ResNet-18 (docs/method.md), DISAL vs Random,
  with every registered strategy's section (`config.disal`, `config.embedding`, ...)."""
  # Imported when called: the registry imports every strategy and with them jax, and a config
  # file imports this module before it calls base_config.
  from disal_jax.strategies import registry as strategy_registry

  c = config_lib.common_config()
  for name, section in strategy_registry.sections().items():  # the strategies' own keys
    c[name] = section.defaults()
  return c


def validate(config: ml_collections.ConfigDict, num_devices: int = 1) -> None:
  """Checks values before any work; raises ConfigError naming the key and what is allowed.

  Args:
    config: a config from `base_config()`, overrides applied.
    num_devices: the devices the batches are split over (batch sizes must divide by it).

  Raises:
    ConfigError: the first bad value: the names the registries resolve (data, model,
      strategies), then the experiment-wide keys (`config.validate_common`), then each
      strategy's section.
  """
  # Imported when called: the registries import models and strategies, which import jax.
  from disal_jax.data import registry as data_registry
  from disal_jax.models import registry as model_registry
  from disal_jax.strategies import registry as strategy_registry

  check_value(
    config.data.name in data_registry.names(),
    "data.name",
    config.data.name,
    f"one of {data_registry.names()}",
  )
  check_value(
    config.model.name in model_registry.names(),
    "model.name",
    config.model.name,
    f"one of {model_registry.names()}",
  )
  names = strategy_names(config)
  check_value(bool(names), "strategies", config.strategies, "at least one strategy name")
  for name in names:
    check_value(
      name in strategy_registry.names(),
      "strategies",
      name,
      f"comma-separated names from {strategy_registry.names()}",
    )
  check_value(len(set(names)) == len(names), "strategies", config.strategies, "no name twice")
  config_lib.validate_common(config, num_devices)
  for section in strategy_registry.sections().values():  # the strategies' own checks
    if section.check is not None:
      section.check(config, num_devices)


def validate_for_dataset(config: ml_collections.ConfigDict, dataset) -> None:
  """The checks that need the loaded dataset (task, image size); ConfigError names the key."""
  from disal_jax.models import registry as model_registry
  from disal_jax.strategies import registry as strategy_registry

  segmentation = dataset.is_segmentation
  task = "segmentation" if segmentation else "classification"
  checked = set()  # a section several strategies read (`embedding`) is checked once
  for name in strategy_names(config):  # the checks of the dataset by the sections they read
    for section in strategy_registry.dataset_checks(name):
      if section.check_for_dataset is not None and section.name not in checked:
        section.check_for_dataset(config, dataset)
        checked.add(section.name)
  check_value(
    model_registry.is_segmentation(config.model.name) == segmentation,
    "model.name",
    config.model.name,
    f"a {task} model for the {task} dataset {dataset.name!r} (one "
    f"of {model_registry.names(segmentation=segmentation)})",
  )
  if not segmentation:
    return
  height, width = dataset.image_shape[:2]
  crop = tuple(config.augment.crop_size)
  check_value(
    crop == (0, 0) or (crop[0] <= height and crop[1] <= width),
    "augment.crop_size",
    crop,
    f"at most the image size ({height}, {width})",
  )
  check_value(
    config.record.pixel_stride <= min(height, width),
    "record.pixel_stride",
    config.record.pixel_stride,
    f"at most the image side ({min(height, width)})",
  )
  for name in strategy_names(config):
    check_value(
      strategy_registry.get_strategy(name).segmentation,
      "strategies",
      name,
      f"one of the segmentation strategies {strategy_registry.names(segmentation=True)}",
    )

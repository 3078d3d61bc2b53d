"""Trains 2 epochs on digits on all visible devices and prints losses and the record as JSON.

Run by tests/test_training.py under XLA_FLAGS=--xla_force_host_platform_device_count=N. It pins
the sharded train step (BatchNorm statistics over the split batch, augmentation drawn per
sample), the sharded pool record and the sharded evaluation.

Each epoch is one step of 128 labeled images (16 per device on 8 devices). Why so short:
training this small ResNet on 8x8 digits is chaotic. Measured on one device, a 1e-6 relative
perturbation of the initial weights grows to a 1e-3..1e-1 loss difference within 3-10 steps,
at any learning rate from 1e-4 to 1e-2, while with lr = 0 it stays at 5e-6. One and eight
devices differ only by float rounding (the first step's gradients agree to 3e-6 relative),
which that chaos amplifies in the same way; a longer trajectory would test the chaos, not
the sharding.
"""

import dataclasses
import json

import jax
import numpy as np

from disal_jax import platform_settings
from disal_jax.data.registry import load_dataset
from disal_jax.models.registry import build_model
from disal_jax.training import sharding
from disal_jax.training.trainer import Recording, Trainer
from tests.helpers import tiny_config


def main():
  config = tiny_config(
    **{
      "train.batch_size": 128,
      "train.eval_batch_size": 64,
      "model.width": 16,
      "train.learning_rate": 0.01,
      "augment.crop_padding": 1,
      "augment.flip": True,
    }
  )
  dataset = load_dataset(config.data)
  mesh = sharding.make_mesh()
  trainer = Trainer(config, build_model(config.model, dataset.num_classes), dataset, mesh)
  labeled = np.arange(0, 128 * 10, 10)
  pool = np.setdiff1d(np.arange(dataset.num_train), labeled)
  result = trainer.train_cycle(
    trainer.init_state(jax.random.key(0)),
    labeled,
    pool,
    (0, 0),
    cycle=0,
    recording=Recording("mean"),
  )
  assert result.record.mean.sharding.spec[0] == sharding.DATA_AXIS
  augment = dataclasses.replace(trainer.preprocess, crop_padding=2, flip=True)
  index = jax.device_put(np.arange(64, dtype=np.int32), sharding.along_data(mesh))
  augmented = jax.jit(augment.augment)(trainer.train_data.images[index], jax.random.key(5))
  print(
    json.dumps(
      {
        "devices": mesh.size,
        "losses": [e["loss"] for e in result.epochs],
        "record_mean": np.asarray(result.record.mean[: len(pool)]).ravel().tolist(),
        "test_accuracy": result.test["accuracy"],
        "augmented": np.asarray(augmented).ravel().tolist(),
      }
    )
  )


if __name__ == "__main__":
  platform_settings.apply()
  main()

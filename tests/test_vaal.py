"""VAAL: its losses against closed forms, its networks learning on a tiny problem, and its
divergence guard (alone and inside the loop, where nothing trained is lost)."""

import json
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax import loop
from disal_jax.strategies import vaal
from disal_jax.training import sharding, steps
from disal_jax.training.augment import Preprocess

from tests.helpers import tiny_config


def test_kl_divergence_equals_the_gaussian_closed_form():
  rng = np.random.default_rng(0)
  mu = rng.normal(size=(5, 3))
  sigma = rng.uniform(0.2, 2.0, size=(5, 3))
  # KL(N(mu, s^2) || N(0, 1)) per dimension: log(1/s) + (s^2 + mu^2) / 2 - 1/2
  expected = np.sum(np.log(1 / sigma) + (sigma ** 2 + mu ** 2) / 2 - 0.5, axis=1)
  got = vaal.kl_divergence(jnp.asarray(mu, jnp.float32),
                           jnp.asarray(2 * np.log(sigma), jnp.float32))
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_vae_loss_is_mse_plus_beta_kl(reduction):
  rng = np.random.default_rng(1)
  x, recon = rng.normal(size=(2, 4, 16, 16, 3)).astype(np.float32)
  mu, logvar = rng.normal(size=(2, 4, 8)).astype(np.float32)
  kl = [0.5 * sum(np.exp(logvar[i, j]) + mu[i, j] ** 2 - 1 - logvar[i, j] for j in range(8))
        for i in range(4)]
  kl = sum(kl) if reduction == "sum" else sum(kl) / 4
  mse = np.mean((recon - x) ** 2)
  loss, got_mse, got_kl = vaal.vae_loss(*map(jnp.asarray, (x, recon, mu, logvar)), 0.5,
                                        reduction)
  assert float(got_mse) == pytest.approx(mse, rel=1e-5)
  assert float(got_kl) == pytest.approx(kl, rel=1e-5)
  assert float(loss) == pytest.approx(mse + 0.5 * kl, rel=1e-5)


def test_discriminator_loss_is_bce_labeled_one_unlabeled_zero():
  logits_l = np.array([2.0, -0.5, 0.1], np.float32)
  logits_u = np.array([-1.0, 3.0], np.float32)
  sig = lambda z: 1 / (1 + np.exp(-z))
  expected = -np.mean(np.log(sig(logits_l))) - np.mean(np.log(1 - sig(logits_u)))
  got = vaal.discriminator_loss(jnp.asarray(logits_l), jnp.asarray(logits_u))
  assert float(got) == pytest.approx(expected, rel=1e-5)


def _stripes_context(**overrides):
  """64 'labeled' images with the top half bright, 64 'unlabeled' ones with the left half."""
  config = tiny_config(**{f"vaal.{k}": v for k, v in overrides.items()})
  rng = np.random.default_rng(0)
  top = np.zeros((8, 8, 1))
  top[:4] = 1
  images = np.concatenate([np.broadcast_to(top, (64, 8, 8, 3)),
                           np.broadcast_to(top.transpose(1, 0, 2), (64, 8, 8, 3))])
  images = np.clip(images * 200 + rng.normal(0, 20, images.shape), 0, 255).astype(np.uint8)
  mesh = sharding.make_mesh()
  data = sharding.put_replicated(steps.DeviceData(jnp.asarray(images),
                                                  jnp.zeros(128, jnp.int32)), mesh)
  trainer = types.SimpleNamespace(preprocess=Preprocess((0.4,) * 3, (0.35,) * 3),
                                  train_data=data, mesh=mesh, config=config,
                                  dataset=types.SimpleNamespace(image_shape=(8, 8, 3),
                                                                train_labels=np.zeros(128)))
  return types.SimpleNamespace(config=config, data=trainer, labeled=np.arange(64),
                               candidates=np.arange(64, 128), rng=jax.random.key(0), cycle=3)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 2])
def test_vae_and_discriminator_learn_to_tell_the_labeled_set_apart(seed):
  # Without the adversarial term the latent keeps what tells the sets apart, so the
  # discriminator must learn it: labeled rows score high, unlabeled low. (Seed 2 gave an AUC
  # of 0.54 when each set had its own batch statistics in training; see vaal._iteration.)
  ctx = _stripes_context(epochs=20, adversary_weight=0.0, beta=0.01, kl_reduction="mean",
                         learning_rate=2e-3, iterations_per="labeled")
  ctx.rng = jax.random.key(seed)
  state, losses = vaal.train(ctx)
  assert len(losses["vae_loss"]) == 80  # 20 passes over 64 labeled rows, batches of 16
  assert losses["vae_loss"][-10:].mean() < 0.3 * losses["vae_loss"][:10].mean()
  assert losses["discriminator_loss"][-10:].mean() < 0.6 * losses["discriminator_loss"][:10].mean()
  logits = vaal.discriminator_logits(state, ctx.data.train_data,
                                     {"index": jnp.arange(128)},
                                     preprocess=ctx.data.preprocess,
                                     settings=vaal.Settings.from_config(ctx.config))
  logits = np.asarray(logits)
  # the selection ranks by D: the chance that a labeled row outranks an unlabeled one (AUC)
  assert np.mean(logits[:64, None] > logits[None, 64:]) > 0.95


def test_iterations_follow_the_reference_count():
  config = tiny_config(**{"vaal.epochs": 100, "vaal.batch_size": 128,
                          "vaal.iterations_per": "train_set"})
  assert vaal.num_iterations(config, 5_000, 50_000) == 39_062  # sinhasam/vaal on CIFAR-10
  config.vaal.iterations_per = "labeled"
  assert vaal.num_iterations(config, 5_000, 50_000) == 3_906


@pytest.mark.slow
def test_each_vae_step_draws_its_own_batches():
  ctx = _stripes_context(epochs=1, vae_steps=2, steps_per_call=2, iterations_per="labeled")
  seen = []
  original = vaal.train_chunk

  def spy(state, data, labeled, unlabeled, rng, **kwargs):
    seen.append((np.asarray(labeled), np.asarray(unlabeled)))
    return original(state, data, labeled, unlabeled, rng, **kwargs)
  vaal.train_chunk = spy
  try:
    vaal.train(ctx)
  finally:
    vaal.train_chunk = original
  labeled, unlabeled = seen[0]
  assert labeled.shape == (2, 2, 16)  # (iterations, vae_steps, batch)
  for rows in (labeled, unlabeled):  # four distinct batches: one pass of 64 rows
    assert len(np.unique(rows[:2].reshape(-1))) == 64


def test_iteration_batches_cover_every_row_before_repeating():
  rows = np.arange(100, 110)
  batches = vaal.iteration_batches(np.random.default_rng(0), rows, 4, 6)
  assert batches.shape == (6, 4) and batches.dtype == np.int32
  assert set(batches[:2].ravel()) <= set(rows) and len(set(batches[:2].ravel())) == 8
  first_pass = batches[:3].ravel()[:10]
  assert sorted(first_pass.tolist()) == rows.tolist()


def test_a_nan_loss_stops_with_the_cycle_and_iteration():
  config = tiny_config()
  losses = {"vae_loss": np.array([1.0, 2.0, np.nan]), "reconstruction": np.ones(3),
            "discriminator_loss": np.ones(3)}
  with pytest.raises(vaal.VaalDiverged, match=r"cycle 2 at iteration 13 of 40.*vae_loss nan"):
    vaal.check_losses(losses, 10, 40, 2, config)
  losses["vae_loss"][2] = 1.0
  vaal.check_losses(losses, 10, 40, 2, config)  # finite and below max_loss: no error
  losses["reconstruction"][1] = 2 * config.vaal.max_loss
  with pytest.raises(vaal.VaalDiverged, match="iteration 12 of 40.*vaal.max_loss"):
    vaal.check_losses(losses, 10, 40, 2, config)


@pytest.mark.slow
def test_divergence_in_the_loop_keeps_the_trained_cycle_and_resumes(tmp_path):
  config = tiny_config(**{"strategies": "vaal", "data.max_train": 300, "vaal.max_loss": 1e-6})
  with pytest.raises(vaal.VaalDiverged, match="cycle 0 at iteration 1 "):
    loop.run_experiment(config, str(tmp_path))
  run = tmp_path / "vaal" / "seed_0"
  assert not (run / "results.json").exists()
  config.vaal.max_loss = 1e4  # a guard's limit may change on resumption
  results = loop.run_experiment(config, str(tmp_path))
  assert [r.labeled for r in results["vaal"]] == [30, 45]
  lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  trained_epochs = [line for line in lines if line.get("cycle") == 0 and "epoch" in line]
  # cycle 0 trained once: the rerun resumed at its scoring, not at its first epoch
  assert len(trained_epochs) == config.train.epochs

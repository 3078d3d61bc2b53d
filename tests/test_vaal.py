"""VAAL: its losses against closed forms, its networks learning on a tiny problem, and its
divergence guard (alone and inside the loop, where nothing trained is lost)."""

import dataclasses
import functools
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
  expected = np.sum(np.log(1 / sigma) + (sigma**2 + mu**2) / 2 - 0.5, axis=1)
  got = vaal.kl_divergence(
    jnp.asarray(mu, jnp.float32), jnp.asarray(2 * np.log(sigma), jnp.float32)
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_vae_loss_is_mse_plus_beta_kl(reduction):
  rng = np.random.default_rng(1)
  x, recon = rng.normal(size=(2, 4, 16, 16, 3)).astype(np.float32)
  mu, logvar = rng.normal(size=(2, 4, 8)).astype(np.float32)
  kl = [
    0.5 * sum(np.exp(logvar[i, j]) + mu[i, j] ** 2 - 1 - logvar[i, j] for j in range(8))
    for i in range(4)
  ]
  kl = sum(kl) if reduction == "sum" else sum(kl) / 4
  mse = np.mean((recon - x) ** 2)
  loss, got_mse, got_kl = vaal.vae_loss(*map(jnp.asarray, (x, recon, mu, logvar)), 0.5, reduction)
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
  images = np.concatenate(
    [np.broadcast_to(top, (64, 8, 8, 3)), np.broadcast_to(top.transpose(1, 0, 2), (64, 8, 8, 3))]
  )
  images = np.clip(images * 200 + rng.normal(0, 20, images.shape), 0, 255).astype(np.uint8)
  mesh = sharding.make_mesh()
  data = sharding.put_replicated(
    steps.DeviceData(jnp.asarray(images), jnp.zeros(128, jnp.int32)), mesh
  )
  trainer = types.SimpleNamespace(
    preprocess=Preprocess((0.4,) * 3, (0.35,) * 3),
    train_data=data,
    mesh=mesh,
    config=config,
    dataset=types.SimpleNamespace(image_shape=(8, 8, 3), train_labels=np.zeros(128)),
  )
  return types.SimpleNamespace(
    config=config,
    data=trainer,
    labeled=np.arange(64),
    result=None,
    candidates=np.arange(64, 128),
    rng=jax.random.key(0),
    cycle=3,
  )


def _logits(state, ctx, rows, **batch):
  return np.asarray(
    vaal.discriminator_logits(
      state,
      ctx.data.train_data,
      {"index": jnp.asarray(rows, jnp.int32), **batch},
      preprocess=ctx.data.preprocess,
      settings=vaal.Settings.from_config(ctx.config),
    )
  )


# (reference's settings: AUC over 0.6; our former ones: over 0.95). Each set is scored in its
# own batches, as training saw it and as the reference scores its pool.
@pytest.mark.slow
@pytest.mark.parametrize(
  "seed, options, auc",
  [
    (0, {}, 0.6),
    (2, {}, 0.6),
    (
      2,
      {"batch_norm": "joint", "score_batch_norm": "running", "normalise": "task", "flip": "none"},
      0.95,
    ),
  ],
)
def test_vae_and_discriminator_learn_to_tell_the_labeled_set_apart(seed, options, auc):
  # Without the adversarial term the latent keeps what tells the sets apart, so the
  # discriminator must learn it: labeled rows score high, unlabeled low. The reference's
  # separate statistics hide part of it (each set's per-channel scale is standardised away):
  # over seeds 0-3 an AUC of 0.60-0.81; joint training statistics and running ones in
  # scoring, 1.0 (see vaal._iteration).
  ctx = _stripes_context(
    epochs=20,
    adversary_weight=0.0,
    beta=0.01,
    kl_reduction="mean",
    learning_rate=2e-3,
    iterations_per="labeled",
    **options,
  )
  ctx.rng = jax.random.key(seed)
  state, losses = vaal.train(ctx)
  assert len(losses["vae_loss"]) == 80  # 20 passes over 64 labeled rows, batches of 16
  assert losses["vae_loss"][-10:].mean() < 0.3 * losses["vae_loss"][:10].mean()
  assert losses["discriminator_loss"][-10:].mean() < 0.6 * losses["discriminator_loss"][:10].mean()
  labeled, unlabeled = _logits(state, ctx, np.arange(64)), _logits(state, ctx, np.arange(64, 128))
  # the selection ranks by D: the chance that a labeled row outranks an unlabeled one (AUC)
  assert np.mean(labeled[:, None] > unlabeled[None, :]) > auc


def _toy_state(ctx, seed=0):
  """Untrained networks whose running statistics are not the initial (0, 1), so that eval
  mode and train mode standardise differently."""
  state = vaal.init_state(jax.random.key(seed), vaal.Settings.from_config(ctx.config), 3)
  stats = jax.tree.map(lambda v: v + 0.3, state.vae_stats)
  return state.replace(vae_stats=stats)


def test_separate_passes_give_each_batch_its_own_statistics():
  ctx = _stripes_context()
  settings = vaal.Settings.from_config(ctx.config)
  state = _toy_state(ctx)
  preprocess = ctx.data.preprocess
  x_l = vaal.vae_images(ctx.data.train_data, jnp.arange(8), preprocess, settings)
  x_u1 = vaal.vae_images(ctx.data.train_data, jnp.arange(64, 72), preprocess, settings)
  x_u2 = 3.0 * vaal.vae_images(ctx.data.train_data, jnp.arange(72, 80), preprocess, settings)
  key = jax.random.key(1)
  passes = jax.jit(vaal.vae_passes, static_argnames=("vae", "batch_norm"))

  def labeled_out(x_u, batch_norm):
    out_l, _, _ = passes(
      settings.vae, state.vae_params, state.vae_stats, x_l, x_u, key, batch_norm=batch_norm
    )
    return out_l

  # 'separate': the labeled batch's outputs are those of a pass over it alone ...
  alone, _ = jax.jit(functools.partial(settings.vae.apply, train=True, mutable=["batch_stats"]))(
    {"params": state.vae_params, "batch_stats": state.vae_stats}, x_l, jax.random.split(key)[0]
  )
  for name in ("mu", "reconstruction"):
    np.testing.assert_allclose(labeled_out(x_u1, "separate")[name], alone[name], atol=1e-5)
    np.testing.assert_allclose(labeled_out(x_u2, "separate")[name], alone[name], atol=1e-5)
  # ... while one joint pass standardises them with the unlabeled batch's rows too
  assert np.max(np.abs(labeled_out(x_u1, "joint")["mu"] - labeled_out(x_u2, "joint")["mu"])) > 1e-2


def test_train_mode_scoring_standardises_by_the_scoring_batch():
  rows_a, rows_b = np.r_[64, 65:80], np.r_[64, 0:15]  # row 64 among others unlike or like it
  every = jnp.ones(16, bool)
  for mode in ("batch", "running"):
    ctx = _stripes_context(score_batch_norm=mode)
    state = _toy_state(ctx)
    a = _logits(state, ctx, rows_a, valid=every)[0]
    b = _logits(state, ctx, rows_b, valid=every)[0]
    if mode == "batch":  # the reference: its score depends on its batch-mates
      assert abs(a - b) > 1e-3 * max(abs(a), 1.0)
    else:
      assert a == pytest.approx(b, abs=1e-6)
  # padding left out of the statistics: the valid rows score as the batch without it
  ctx = _stripes_context()
  state = _toy_state(ctx)
  valid = np.arange(16) < 10
  padded = _logits(state, ctx, np.r_[64:74, 0:6], valid=jnp.asarray(valid))[:10]
  np.testing.assert_allclose(padded, _logits(state, ctx, np.arange(64, 74)), atol=1e-5)


def test_pool_logits_are_each_candidates_own():
  # 'running' (batches of 16): a score is its sample's alone, whatever the batch; 'batch' with
  # one batch of 64: the statistics of the whole pool, whatever its order. Either way the
  # pool's shuffled batches must come back in the candidates' order, padding left out.
  for mode, batch_size in (("running", 16), ("batch", 64)):
    ctx = _stripes_context(score_batch_norm=mode, flip="train", batch_size=batch_size)
    ctx.candidates = np.r_[70:128, 3:8]  # 63 rows: the last batch is padded
    state = _toy_state(ctx)
    got = vaal.pool_logits(ctx, state)
    np.testing.assert_allclose(got, _logits(state, ctx, ctx.candidates), atol=1e-5)


def test_images_follow_the_reference_normalisation_and_flips():
  ctx = _stripes_context()
  settings = vaal.Settings.from_config(ctx.config)  # image_size 16: resized from 8
  same = dataclasses.replace(settings, image_size=8)
  raw = np.asarray(ctx.data.train_data.images[:4], np.float64)
  got = vaal.vae_images(
    ctx.data.train_data,
    jnp.arange(4),
    ctx.data.preprocess,
    same,
    jnp.asarray([True, False, True, False]),
  )
  want = (raw / 255 - 0.5) / 0.5  # torchvision's Normalize(0.5, 0.5) after ToTensor
  want[[0, 2]] = want[[0, 2], :, ::-1]
  np.testing.assert_allclose(got, want, atol=1e-6)
  flips = np.asarray(vaal.random_flips(jax.random.key(0), (2, 4000)))
  assert 0.45 < flips.mean() < 0.55 and (flips[0] != flips[1]).any()


def test_iterations_follow_the_reference_count():
  config = tiny_config(
    **{"vaal.epochs": 100, "vaal.batch_size": 128, "vaal.iterations_per": "train_set"}
  )
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
  losses = {
    "vae_loss": np.array([1.0, 2.0, np.nan]),
    "reconstruction": np.ones(3),
    "discriminator_loss": np.ones(3),
  }
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

import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax.training import record


def _history(epochs=5, pool=6, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=(epochs, pool, classes))
  return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def _run(history, weighting, lrs, level="mean", decay=0.9):
  rec = record.init_record(level, history.shape[1], history.shape[2:])
  for probs, lr in zip(history, lrs):
    rec = record.update_record(
      rec, jnp.asarray(probs, jnp.float32), jnp.float32(lr), weighting=weighting, ema_decay=decay
    )
  return rec


def test_running_mean_equals_numpy_mean_of_the_history():
  history = _history()
  rec = _run(history, "mean", [0.1] * 5)
  np.testing.assert_allclose(rec.mean, history.mean(0), rtol=1e-6)
  assert int(rec.count) == 5


def test_lr_weighted_mean_equals_numpy_weighted_average():
  history = _history()
  lrs = [0.1, 0.1, 0.1, 0.01, 0.01]
  rec = _run(history, "lr", lrs)
  np.testing.assert_allclose(rec.mean, np.average(history, axis=0, weights=lrs), rtol=1e-5)


def test_ema_is_temporal_ensemblings_bias_corrected_average():
  """Laine & Aila: Z <- a Z + (1 - a) z from Z = 0, target Z / (1 - a^n)."""
  history = _history()
  rec = _run(history, "ema", [0.1] * 5, decay=0.6)
  z = np.zeros_like(history[0])
  for probs in history:
    z = 0.6 * z + 0.4 * probs
  np.testing.assert_allclose(rec.mean, z / (1 - 0.6**5), rtol=1e-5)
  assert float(rec.weight) == pytest.approx(1 - 0.6**5, rel=1e-6)


@pytest.mark.parametrize("level,fields", [("none", ()), ("mean", ("mean",))])
def test_levels_allocate_only_what_is_asked(level, fields):
  rec = record.init_record(level, 8, (3,))
  assert (rec.mean is not None) == ("mean" in fields)

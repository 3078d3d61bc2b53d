"""Per-sample scoring sized to a memory budget: the fitting rule, and the real scorers."""

import functools
import types

import numpy as np
import pytest

from disal_jax.strategies import base, gradnorm, per_sample
from disal_jax.training import sharding
from tests.helpers import tiny_config
from tests.test_baseline_scores import PRE, _state


def test_fit_batch_size_takes_the_largest_multiple_that_fits():
  calls = []

  def bytes_at(size):
    calls.append(size)
    return 1000 + 300 * size

  # (10000 - 1000) / 300 = 30 samples fit; multiples of 8 -> 24
  assert base.fit_batch_size(bytes_at, 10_000, multiple=8, limit=1000) == 24
  assert base.fit_batch_size(bytes_at, 10_000, multiple=1, limit=1000) == 30
  assert base.fit_batch_size(bytes_at, 10_000, multiple=1, limit=12) == 12  # the pool's size
  assert all(1000 + 300 * c <= 10_000 for c in calls[-1:])


def test_fit_batch_size_shrinks_a_prediction_that_does_not_fit():
  # superlinear memory: the affine prediction from the probes overshoots, then is corrected
  bytes_at = lambda size: 100 * size + 4 * size * size
  size = base.fit_batch_size(bytes_at, 20_000, multiple=2, limit=10_000, probe=4)
  assert bytes_at(size) <= 20_000 and size >= 2


def test_fit_batch_size_names_a_budget_too_small_for_one_sample():
  with pytest.raises(MemoryError, match="per_sample.memory_budget_mb"):
    base.fit_batch_size(lambda size: 5 * 2**20 * size, 2**20, multiple=1, limit=100)


@pytest.mark.slow
def test_the_chosen_batch_fits_the_budget_of_a_real_scorer():
  _, state, data, _ = _state()
  config = tiny_config()
  mesh = sharding.make_mesh()
  ctx = types.SimpleNamespace(
    config=config,
    candidates=np.arange(4096),
    data=types.SimpleNamespace(mesh=mesh, train_data=data),
  )
  fn = functools.partial(
    gradnorm.entropy_gradnorm_scores,
    preprocess=PRE,
    engine=per_sample.engine_from_config(config, config.gradnorm.chunk_size),
  )
  bytes_at = functools.cache(lambda size: base.compiled_bytes(fn, state, ctx, size))
  per_8 = bytes_at(16) - bytes_at(8)  # the fitting rule's own probes
  assert per_8 > 0  # memory grows with the batch
  budget = bytes_at(16) + per_8 // 2  # room for about 20 samples
  size = base.fit_batch_size(bytes_at, budget, multiple=1, limit=4096)
  assert 16 <= size < 24 and bytes_at(size) <= budget
  config.per_sample.memory_budget_mb = 0.0  # off: the fixed chunk size, nothing compiled
  assert base.per_sample_batch_size(ctx, fn, state, fixed=7) == 7

"""The checkpointer alone (integrity checks: CRC-32, structure, dtype; full disk) and the
config comparison made before resuming; whole runs that resume are in test_resume.py."""

import errno
import inspect
import logging
import pathlib
import re
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from disal_jax import checkpoint
from disal_jax.strategies import registry
from tests.helpers import tiny_config


def _random_bits(seed: int, n: int = 512) -> np.ndarray:
  """float32 values from random bits: incompressible, so orbax stores their bytes as they are
  (compressible arrays are stored compressed, and a flipped byte there fails in orbax)."""
  bits = np.random.default_rng(seed).integers(0, 2**32, n, dtype=np.uint64)
  return bits.astype(np.uint32).view(np.float32)


def _tree(seed: int):
  return {
    "a": jnp.asarray(_random_bits(seed)),
    "b": {"c": jnp.arange(4, dtype=jnp.int32) + seed},
    "key": jax.random.key(seed),
  }


def _template(meta):
  del meta
  return {
    "a": jax.ShapeDtypeStruct((512,), np.float32),
    "b": {"c": jax.ShapeDtypeStruct((4,), np.int32)},
    "key": jax.eval_shape(lambda: jax.random.key(0)),
  }


def _flip_one_byte_of(step_dir: pathlib.Path, array: np.ndarray) -> pathlib.Path:
  """Flips one bit of one byte inside `array`'s bytes where a file of the step stores them."""
  raw = np.ascontiguousarray(array).tobytes()
  holders = [p for p in sorted(step_dir.rglob("*")) if p.is_file() and raw in p.read_bytes()]
  assert holders, f"no file under {step_dir} holds the array's bytes as they are"
  for path in holders:
    blob = bytearray(path.read_bytes())
    blob[blob.find(raw) + 41] ^= 0x04
    path.write_bytes(bytes(blob))
  return holders[0]


def _saved(tmp_path, steps=(1, 2)):
  ckpt = checkpoint.RunCheckpointer(tmp_path, keep=3)
  for step in steps:
    ckpt.save(step, _tree(step), {"n": step})
  ckpt.close()
  return checkpoint.RunCheckpointer(tmp_path, keep=3)


def test_a_checkpoint_restores_every_leaf_and_its_prng_key(tmp_path):
  ckpt = _saved(tmp_path, steps=(1,))
  tree, meta = ckpt.restore(1, _template)
  assert meta["n"] == 1
  np.testing.assert_array_equal(
    np.asarray(tree["a"]).view(np.uint32), _random_bits(1).view(np.uint32)
  )
  np.testing.assert_array_equal(tree["b"]["c"], [1, 2, 3, 4])
  assert jax.dtypes.issubdtype(tree["key"].dtype, jax.dtypes.prng_key)
  np.testing.assert_array_equal(
    jax.random.key_data(tree["key"]), jax.random.key_data(jax.random.key(1))
  )
  ckpt.close()


@pytest.mark.parametrize("keep", [2, 3])
def test_only_the_newest_keep_checkpoints_stay(tmp_path, keep):
  ckpt = checkpoint.RunCheckpointer(tmp_path, keep=keep)
  for step in (1, 2, 3, 4):
    ckpt.save(step, _tree(step), {"n": step})
  assert ckpt.steps() == list(range(5 - keep, 5))
  assert sorted(int(p.name) for p in tmp_path.iterdir() if p.name.isdigit()) == ckpt.steps()
  ckpt.close()


def test_a_flipped_byte_fails_the_checksum_naming_the_step_and_the_array(tmp_path):
  ckpt = _saved(tmp_path)
  _flip_one_byte_of(tmp_path / "2", _random_bits(2))
  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"checkpoint 2 in .* corrupt \(ValueError: array 0 fails its checksum",
  ):
    ckpt.restore(2, _template)
  ckpt.close()


def test_a_flipped_byte_in_the_newest_falls_back_to_the_one_before(tmp_path, caplog):
  ckpt = _saved(tmp_path)
  _flip_one_byte_of(tmp_path / "2", _random_bits(2))
  with caplog.at_level(logging.WARNING, logger="disal_jax.checkpoint"):
    step, tree, meta = ckpt.restore_newest(_template)
  assert step == 1 and meta["n"] == 1
  np.testing.assert_array_equal(
    np.asarray(tree["a"]).view(np.uint32), _random_bits(1).view(np.uint32)
  )
  warnings = [r.getMessage() for r in caplog.records]
  assert len(warnings) == 1 and "checkpoint 2 in" in warnings[0]
  assert "array 0 fails its checksum" in warnings[0] and "the one before" in warnings[0]
  # set aside for inspection, out of the manager's way: step 2 can be written again
  assert ckpt.steps() == [1] and (ckpt.corrupt_directory / "2").is_dir()
  ckpt.save(2, _tree(7), {"n": 7})
  assert ckpt.restore_newest(_template)[0] == 2
  ckpt.close()


def test_a_template_of_another_dtype_is_rejected_naming_both(tmp_path):
  ckpt = _saved(tmp_path, steps=(1,))

  def unsigned_counts(meta):
    template = _template(meta)
    template["b"]["c"] = jax.ShapeDtypeStruct((4,), np.uint32)
    return template

  with pytest.raises(
    checkpoint.CheckpointError, match=r"array 1 is int32\[4\], this config expects uint32\[4\]"
  ):
    ckpt.restore(1, unsigned_counts)
  ckpt.close()


def test_a_template_of_another_shape_is_rejected_naming_both(tmp_path):
  ckpt = _saved(tmp_path, steps=(1,))

  def longer(meta):
    template = _template(meta)
    template["a"] = jax.ShapeDtypeStruct((513,), np.float32)
    return template

  with pytest.raises(
    checkpoint.CheckpointError,
    match=r"array 0 is float32\[512\], this config expects float32\[513\]",
  ):
    ckpt.restore(1, longer)
  with pytest.raises(checkpoint.CheckpointError, match=r"3 arrays where this config has 2"):
    ckpt.restore(1, lambda meta: {"a": _template(meta)["a"], "b": _template(meta)["b"]})
  ckpt.close()


# -- saving and restoring as a whole -------------------------------------------------
def test_a_full_disk_fails_the_save_clearly_and_keeps_earlier_checkpoints(tmp_path):
  ckpt = checkpoint.RunCheckpointer(tmp_path, keep=3)
  ckpt.save(1, _tree(1), {"n": 1})
  full = OSError(errno.ENOSPC, "No space left on device")
  with mock.patch.object(ckpt.manager, "save", side_effect=full):
    with pytest.raises(checkpoint.CheckpointError, match=r"the disk is full.*\[1\] are intact"):
      ckpt.save(2, _tree(2), {"n": 2})
  step, tree, meta = ckpt.restore_newest(_template)
  assert step == 1 and meta["n"] == 1
  np.testing.assert_array_equal(
    np.asarray(tree["a"]).view(np.uint32), _random_bits(1).view(np.uint32)
  )
  ckpt.close()


def test_every_checkpoint_corrupt_is_an_error_not_a_silent_restart(tmp_path):
  ckpt = checkpoint.RunCheckpointer(tmp_path, keep=3)
  ckpt.save(1, _tree(1), {})
  ckpt.save(2, _tree(2), {})
  ckpt.close()
  for step in (1, 2):
    _corrupt_arrays(tmp_path / str(step))
  ckpt = checkpoint.RunCheckpointer(tmp_path, keep=3)
  with pytest.raises(
    checkpoint.CheckpointError, match=r"none of the checkpoints \[1, 2\].*--force"
  ):
    ckpt.restore_newest(_template)
  ckpt.close()


def _corrupt_arrays(step_dir: pathlib.Path):
  for path in (step_dir / "arrays").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(b"\0" * 16)


def test_config_differences_ignore_only_resumable_keys():
  a = tiny_config().to_dict()
  b = tiny_config(**{"strategies": "random", "data.cache_dir": "/x", "seed": 4}).to_dict()
  assert checkpoint.config_differences(a, b) == ["seed: 0 -> 4"]


def test_only_the_sections_a_strategy_reads_are_compared():
  saved = tiny_config().to_dict()
  current = tiny_config(
    **{"disal.branch_start_fraction": 0.25, "mc_dropout.passes": 3, "coreset.block_size": 7}
  ).to_dict()
  every = set(registry.sections())
  differences = lambda name: checkpoint.config_differences(
    saved, current, ignored_sections=every - registry.sections_read(name)
  )
  assert differences("random") == [] and differences("full_training") == []
  assert differences("disal") == ["disal.branch_start_fraction: 0.0 -> 0.25"]
  assert differences("batchbald") == ["mc_dropout.passes: 10 -> 3"]  # BatchBALD's model
  assert [d.split(":")[0] for d in differences("coregcn")] == ["coreset.block_size"]


def test_every_strategy_declares_the_other_sections_its_module_reads():
  # a static check: a module that names config.<section> of another strategy must declare it,
  # or a change of that key would resume a run that read it
  every = set(registry.sections())
  for name in registry.names():
    strategy = registry.get_strategy(name)
    source = inspect.getsource(inspect.getmodule(strategy.score))
    named = set(re.findall(r"config\.(\w+)\.", source)) & every
    assert named <= registry.sections_read(name), (name, named)


def test_a_key_added_since_the_run_is_no_difference_at_its_default():
  defaults = tiny_config().to_dict()
  saved = tiny_config().to_dict()
  del saved["disal"]["selection"]
  current = tiny_config().to_dict()
  assert checkpoint.config_differences(saved, current, defaults) == []
  current["disal"]["selection"] = "class_balanced"
  assert checkpoint.config_differences(saved, current, defaults) == [
    "disal.selection: '<absent>' -> 'class_balanced'"
  ]
  assert checkpoint.config_differences(saved, tiny_config().to_dict()) == [
    "disal.selection: '<absent>' -> 'top_k'"
  ]


# -- what a strategy declares about resuming (ConfigSection.resume_safe, .moved_keys) --------


def _toy_section_strategy(name, **section_fields):
  """A strategy `name` with one section of two keys, `limit` and `scale`, and `section_fields`
  (resume_safe=..., moved_keys=...) on its ConfigSection."""
  import ml_collections

  from disal_jax.strategies import base, random

  def defaults():
    s = ml_collections.ConfigDict()
    s.limit = 10.0  # a guard's limit: it only decides whether to stop
    s.scale = 1.0  # changes the scores
    return s

  return base.Strategy(
    name=name,
    record="none",
    score=random.random_scores,
    config_section=base.ConfigSection(name, defaults, **section_fields),
  )


def _resume_diffs(tmp_path, name, saved, current):
  """The lines ConfigMismatchError lists when run `name` (saved with `saved`) resumes with
  `current`, as the loop checks it (only the sections the run reads); [] if it resumes."""
  path = tmp_path / f"{name}.json"
  path.write_text(saved.to_json_best_effort())
  ignored = set(registry.sections()) - registry.sections_read(name)
  try:
    checkpoint.check_resumable(path, current, name, ignored)
  except checkpoint.ConfigMismatchError as e:
    return [line.strip() for line in str(e).splitlines() if line.startswith("  ")]
  return []


def test_a_key_a_strategy_declares_resume_safe_may_change_on_resume_and_no_other(tmp_path):
  from disal_jax import experiment

  guarded = _toy_section_strategy("guarded", resume_safe=("limit",))
  plain = _toy_section_strategy("plain")
  with registry.registered(guarded, plain):
    saved = experiment.base_config()
    changed = experiment.base_config()
    changed.guarded.limit = changed.plain.limit = 99.0
    assert _resume_diffs(tmp_path, "guarded", saved, changed) == []
    assert _resume_diffs(tmp_path, "plain", saved, changed) == ["plain.limit: 10.0 -> 99.0"]
    changed.guarded.scale = 2.0  # a key the strategy did not declare safe still refuses
    assert _resume_diffs(tmp_path, "guarded", saved, changed) == ["guarded.scale: 1.0 -> 2.0"]
    assert "guarded.limit" in checkpoint.resumable_keys()
  assert "guarded.limit" not in checkpoint.resumable_keys()  # gone with the strategy


def test_the_built_in_resume_safe_and_moved_keys_come_from_their_sections():
  # what checkpoint.py listed by hand before the strategies declared them
  assert registry.resume_safe_keys() == {"vaal.max_loss"}
  assert "vaal.max_loss" in checkpoint.resumable_keys()
  assert checkpoint.moved_keys() == {
    "typiclust.embedding": "embedding.source",
    "typiclust.embedding_file": "embedding.file",
    "probcover.embedding": "embedding.source",
    "probcover.embedding_file": "embedding.file",
  }


def test_a_resume_safe_key_the_section_lacks_is_refused():
  with registry.registered(_toy_section_strategy("misspelt", resume_safe=("limt",))):
    with pytest.raises(ValueError, match=r"'misspelt'.*\['limt'\]"):
      checkpoint.resumable_keys()


def test_a_key_a_strategy_declares_moved_is_compared_as_its_new_key(tmp_path):
  from disal_jax import cli, experiment

  renamed = _toy_section_strategy("renamed", moved_keys={"old_limit": "renamed.limit"})
  with registry.registered(renamed):
    saved = experiment.base_config().to_dict()
    del saved["renamed"]["limit"]
    saved["renamed"]["old_limit"] = 10.0  # as an earlier version saved it
    current = experiment.base_config().to_dict()
    assert checkpoint.config_differences(saved, current) == []
    current["renamed"]["limit"] = 5.0
    assert checkpoint.config_differences(saved, current) == ["renamed.limit: 10.0 -> 5.0"]
    assert cli.moved_key_hint(["main", "--config.renamed.old_limit=3"]) == (
      "; config.renamed.old_limit is now config.renamed.limit"
    )

"""The shared `embedding` section: a user's file of embeddings drives TypiClust's, ProbCover's
and CoreSet's picks (checked against brute-force numpy on hand-made embeddings), a bad file
is one ConfigError before any training, and runs saved with the earlier per-strategy keys
resume."""

import io
import json
import re
import types

import jax
import numpy as np
import pytest

from disal_jax import checkpoint, loop, pool
from disal_jax.errors import ConfigError
from disal_jax.experiment import validate, validate_for_dataset
from disal_jax.strategies import coreset, embedding, probcover, registry, typiclust
from tests.helpers import tiny_config

NUM_TRAIN = 40  # training rows of the hand-made embeddings


def _ctx(path, labeled, candidates, **overrides):
  """What the three strategies read of a cycle with embedding.source='file' (no model)."""
  config = tiny_config(**{"embedding.source": "file", "embedding.file": str(path), **overrides})
  return types.SimpleNamespace(
    config=config,
    labeled=np.asarray(labeled),
    candidates=np.asarray(candidates),
    rng=jax.random.key(0),
    result=None,
    data=types.SimpleNamespace(
      dataset=types.SimpleNamespace(train_labels=np.zeros(NUM_TRAIN, np.int32))
    ),
  )


def test_file_rows_are_taken_by_training_row_padded_and_normalised_for_the_clusterers(tmp_path):
  table = np.random.default_rng(5).normal(size=(NUM_TRAIN, 3)).astype(np.float32)
  np.save(tmp_path / "emb.npy", table)
  ctx = _ctx(tmp_path / "emb.npy", [3], [21, 0])
  rows = embedding.rows(ctx, "file", str(tmp_path / "emb.npy"), np.array([21, 0]), capacity=3)
  np.testing.assert_array_equal(
    np.asarray(rows), np.concatenate([table[[21, 0]], np.zeros((1, 3))])
  )
  evidence = embedding.labeled_and_candidates(ctx, "file", str(tmp_path / "emb.npy"))
  np.testing.assert_allclose(np.asarray(evidence["x"]), _unit(table[[3, 21, 0]]), rtol=1e-6)
  assert evidence["labeled"].tolist() == [True, False, False]


def _two_clusters(seed):
  """(NUM_TRAIN, 6) rows: 12 around e0 (cluster A), 12 around e1 (B), 16 others around e2
  that are neither labeled nor candidates; each row scaled by a random norm. Returns the rows
  and the training rows of A and B, scattered over the table."""
  rng = np.random.default_rng(seed)
  directions = np.repeat(np.eye(6)[:3], [12, 12, 16], axis=0)
  x = (directions + 0.08 * rng.normal(size=(NUM_TRAIN, 6))) * rng.uniform(0.5, 3, (NUM_TRAIN, 1))
  order = rng.permutation(NUM_TRAIN)  # training row of the k-th hand-made point
  table = np.empty_like(x)
  table[order] = x
  return table.astype(np.float32), order[:12], order[12:24]


def _unit(x):
  return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("labeled_cluster", ["A", "B"])
def test_typiclust_picks_the_most_typical_row_of_the_file_cluster_with_no_label(
  tmp_path, labeled_cluster
):
  table, a, b = _two_clusters(0)
  np.save(tmp_path / "emb.npy", table)
  covered, uncovered = (a, b) if labeled_cluster == "A" else (b, a)
  labeled = covered[:1]
  candidates = np.sort(np.concatenate([covered[1:], uncovered]))
  ctx = _ctx(tmp_path / "emb.npy", labeled, candidates)
  picks = typiclust.select(typiclust.score(ctx), ctx, 1)
  # brute force: with L + K = 2 clusters (the blobs), the one without a label is visited;
  # its most typical row has the least mean distance to its min(20, 12 // 2) nearest others
  x = _unit(table[uncovered].astype(np.float64))
  mean_nearest = [
    np.mean(sorted(np.linalg.norm(x[i] - x[j]) for j in range(12) if j != i)[:6]) for i in range(12)
  ]
  assert picks.tolist() == [int(uncovered[np.argmin(mean_nearest)])]


def _greedy_coverage(x, delta, labeled, k):
  """Brute-force greedy max coverage of delta-balls over the rows x (n, D), `labeled` rows'
  balls covered first; each step's best gain must be unique (the test's construction)."""
  n = len(x)
  ball = np.array([[np.linalg.norm(x[i] - x[j]) < delta for j in range(n)] for i in range(n)])
  covered = ball[labeled].any(axis=0)
  free = ~labeled.copy()
  picks = []
  for _ in range(k):
    gains = np.array([np.sum(ball[i] & ~covered) if free[i] else -1 for i in range(n)])
    assert np.sum(gains == gains.max()) == 1 and gains.max() > 0
    best = int(np.argmax(gains))
    covered |= ball[best]
    free[best] = False
    picks.append(best)
  return picks


def test_probcover_covers_the_file_rows_greedily(tmp_path):
  rng = np.random.default_rng(7)  # a draw whose greedy gains are unique at each step
  # a tight labeled cluster A, and spread ones B and C whose balls cover different counts
  centres = np.eye(5)[:3]
  x = np.concatenate(
    [
      centres[0] + 0.02 * rng.normal(size=(6, 5)),
      centres[1] + 0.15 * rng.normal(size=(14, 5)),
      centres[2] + 0.15 * rng.normal(size=(10, 5)),
    ]
  )
  x *= rng.uniform(0.5, 3, (len(x), 1))
  rows = rng.choice(NUM_TRAIN, len(x), replace=False)  # the other 10 rows are no nodes
  table = rng.normal(size=(NUM_TRAIN, 5)).astype(np.float32)
  table[rows] = x
  np.save(tmp_path / "emb.npy", table)
  ctx = _ctx(tmp_path / "emb.npy", rows[:2], rows[2:], **{"probcover.delta": 0.3})
  picks = probcover.select(probcover.score(ctx), ctx, 3)
  labeled = np.arange(len(x)) < 2
  expected = _greedy_coverage(_unit(x.astype(np.float64)), 0.3, labeled, 3)
  assert picks.tolist() == rows[expected].tolist()


def _k_center(points, centres, k):
  """Brute-force greedy k-center: each pick the point farthest from its nearest centre."""
  centres = list(centres)
  picks = []
  for _ in range(k):
    far = [
      min(np.linalg.norm(p - c) for c in centres) if i not in picks else -1.0
      for i, p in enumerate(points)
    ]
    picks.append(int(np.argmax(far)))
    centres.append(points[picks[-1]])
  return picks


def test_coreset_k_center_runs_on_the_file_rows_as_they_are(tmp_path):
  rng = np.random.default_rng(4)
  table = rng.normal(size=(NUM_TRAIN, 3)).astype(np.float32)
  labeled, candidates = np.array([5, 17]), np.array([0, 2, 3, 8, 11, 20, 26, 31, 33, 39])
  table[31] = 10 * table[5]  # farthest raw, yet on labeled row 5's ray: no pick if normalised
  np.save(tmp_path / "emb.npy", table)
  ctx = _ctx(tmp_path / "emb.npy", labeled, candidates)
  picks = coreset.select(coreset.score(ctx), ctx, 4)
  expected = _k_center(table[candidates].astype(np.float64), table[labeled], 4)
  assert picks.tolist() == candidates[expected].tolist() and picks[0] == 31


def _npz(array):
  """The bytes of an .npz archive holding `array` (what the file must not be)."""
  buffer = io.BytesIO()
  np.savez(buffer, array)
  return buffer.getvalue()


@pytest.fixture
def dataset():
  return types.SimpleNamespace(name="digits", num_train=NUM_TRAIN, is_segmentation=False)


@pytest.mark.parametrize(
  "write, problem",
  [
    (lambda path: np.save(path, np.zeros((NUM_TRAIN - 10, 5))), r"holds shape \(30, 5\)"),
    (lambda path: np.save(path, np.zeros(NUM_TRAIN)), r"holds shape \(40,\)"),
    (lambda path: None, "there is no file"),
    (lambda path: path.write_text("not an array"), "cannot be read as .npy"),
    (lambda path: path.write_bytes(_npz(np.zeros((NUM_TRAIN, 2)))), "holds no single array"),
    (
      lambda path: np.save(
        path, np.where(np.arange(NUM_TRAIN * 2).reshape(NUM_TRAIN, 2) == 7, np.nan, 1.0)
      ),
      "1 of its rows hold NaN",
    ),
  ],
)
def test_a_bad_file_is_one_line_naming_the_key_file_shapes_and_fix(
  tmp_path, dataset, write, problem
):
  path = tmp_path / "emb.npy"
  write(path)
  config = tiny_config(
    **{"strategies": "random,coreset", "embedding.source": "file", "embedding.file": str(path)}
  )
  validate(config)  # the path is set: the file is checked once the dataset is loaded
  with pytest.raises(ConfigError) as error:
    validate_for_dataset(config, dataset)
  message = str(error.value)
  assert "\n" not in message and message.startswith(f"config.embedding.file={str(path)!r}")
  assert re.search(problem, message)
  assert "(40, D)" in message and "embedding.source='model'" in message


def test_only_the_runs_that_read_the_file_check_it(tmp_path, dataset):
  np.save(tmp_path / "emb.npy", np.zeros((3, 5)))
  for names in ("random", "badge", "coregcn"):  # BADGE and CoreGCN keep the model's features
    validate_for_dataset(
      tiny_config(
        **{
          "strategies": names,
          "embedding.source": "file",
          "embedding.file": str(tmp_path / "emb.npy"),
        }
      ),
      dataset,
    )
  for name in ("coreset", "typiclust", "probcover"):
    assert "embedding" in registry.sections_read(name)
    with pytest.raises(ConfigError, match=r"holds shape \(3, 5\)"):
      validate_for_dataset(
        tiny_config(
          **{
            "strategies": name,
            "embedding.source": "file",
            "embedding.file": str(tmp_path / "emb.npy"),
          }
        ),
        dataset,
      )


@pytest.mark.parametrize(
  "overrides, key",
  [
    ({"embedding.source": "simclr"}, "embedding.source='simclr'"),
    ({"embedding.source": "file"}, "embedding.file=''"),
  ],
)
def test_bad_section_values_are_refused_before_loading_data(overrides, key):
  with pytest.raises(ConfigError, match=key):
    validate(tiny_config(**overrides))


def test_a_wrong_row_count_stops_the_run_before_any_training(tmp_path):
  np.save(tmp_path / "emb.npy", np.zeros((7, 4), np.float32))
  config = tiny_config(
    **{
      "strategies": "probcover",
      "embedding.source": "file",
      "embedding.file": str(tmp_path / "emb.npy"),
    }
  )
  with pytest.raises(ConfigError, match=r"holds shape \(7, 4\)"):
    loop.run_experiment(config, str(tmp_path / "work"))
  assert not (tmp_path / "work").exists()


def _saved_before_the_section(**old):
  """A run config as saved before the shared section: per-strategy keys, no `embedding`."""
  saved = tiny_config().to_dict()
  del saved["embedding"]
  for name in ("typiclust", "probcover"):
    saved[name]["embedding"] = old.get(f"{name}_embedding", "model")
    saved[name]["embedding_file"] = old.get(f"{name}_file", "")
  return saved


def _resume_problems(tmp_path, name, saved, **overrides):
  path = tmp_path / f"{name}.json"
  path.write_text(json.dumps(saved))
  ignored = set(registry.sections()) - registry.sections_read(name)
  try:
    checkpoint.check_resumable(path, tiny_config(**overrides), name, ignored)
  except checkpoint.ConfigMismatchError as e:
    return [line.strip() for line in str(e).splitlines() if line.startswith("  ")]
  return []


def test_a_run_saved_with_the_earlier_keys_resumes_and_names_the_new_ones(tmp_path):
  old = _saved_before_the_section()
  for name in ("typiclust", "probcover", "coreset", "random"):
    assert _resume_problems(tmp_path, name, old) == []
  now_file = {"embedding.source": "file", "embedding.file": "/e.npy"}
  assert _resume_problems(tmp_path, "typiclust", old, **now_file) == [
    "embedding.file: '' -> '/e.npy'",
    "embedding.source: 'model' -> 'file'",
  ]
  assert _resume_problems(tmp_path, "coreset", old, **now_file) == [
    "embedding.file: '<absent>' -> '/e.npy'",
    "embedding.source: '<absent>' -> 'file'",
  ]
  assert _resume_problems(tmp_path, "random", old, **now_file) == []  # never read it
  # a ProbCover run on a file resumes with the same file in the new keys, not with another
  on_file = _saved_before_the_section(probcover_embedding="file", probcover_file="/e.npy")
  assert _resume_problems(tmp_path, "probcover", on_file, **now_file) == []
  assert _resume_problems(tmp_path, "typiclust", on_file, **now_file) != []
  assert _resume_problems(tmp_path, "probcover", on_file) == [
    "embedding.file: '/e.npy' -> ''",
    "embedding.source: 'file' -> 'model'",
  ]


def test_an_override_of_an_earlier_key_names_the_key_that_holds_it_now():
  from disal_jax import cli

  assert (
    cli.moved_key_hint(["main", "--config=c.py", "--config.probcover.embedding_file=e"])
    == "; config.probcover.embedding_file is now config.embedding.file"
  )
  assert cli.moved_key_hint(["main", "--config.train.epocs=3"]) == ""


def test_a_new_file_blocks_resuming_only_the_runs_that_read_it(tmp_path):
  saved = tiny_config(**{"embedding.source": "file", "embedding.file": "/a.npy"}).to_dict()
  # the readers are those that declare it (a strategy added later, by its reads_sections):
  # of the built-ins, these three, not BADGE (its embedding is the gradient's, its own)
  readers = {name for name in registry.names() if "embedding" in registry.sections_read(name)}
  assert {"coreset", "typiclust", "probcover"} <= readers and "badge" not in readers
  for name in registry.names():
    problems = _resume_problems(
      tmp_path, name, saved, **{"embedding.source": "file", "embedding.file": "/b.npy"}
    )
    reads = name in readers
    assert problems == (["embedding.file: '/a.npy' -> '/b.npy'"] if reads else []), name


@pytest.mark.slow
def test_the_loop_runs_the_strategies_on_a_file_and_coreset_picks_its_k_center(tmp_path):
  # 200 digits, 20 labeled then +10; TypiClust with 4 clusters (its 500 would be singletons)
  config = tiny_config(
    **{
      "strategies": "coreset,typiclust,probcover",
      "data.max_train": 200,
      "train.eval_batch_size": 64,
      "typiclust.max_clusters": 4,
      "embedding.source": "file",
      "embedding.file": str(tmp_path / "emb.npy"),
    }
  )
  dataset = loop.load_dataset(config.data)
  table = np.random.default_rng(0).normal(size=(dataset.num_train, 8)).astype(np.float32)
  np.save(tmp_path / "emb.npy", table)
  results = loop.run_experiment(config, str(tmp_path / "work"), dataset=dataset)
  counts = pool.budget_schedule(config.al, dataset.num_train)
  initial = pool.initial_labeled(dataset.num_train, counts[0], config.seed)
  labeled, candidates = np.flatnonzero(initial >= 0), pool.unlabeled_indices(initial)
  for name in ("coreset", "typiclust", "probcover"):
    assert [r.labeled for r in results[name]] == counts
    selected = np.load(tmp_path / "work" / name / "seed_0" / "selected_cycle0.npy")
    assert len(set(selected.tolist())) == counts[1] - counts[0]
    assert set(selected.tolist()) <= set(candidates.tolist())
  expected = _k_center(table[candidates].astype(np.float64), table[labeled], counts[1] - counts[0])
  np.testing.assert_array_equal(
    np.load(tmp_path / "work" / "coreset" / "seed_0" / "selected_cycle0.npy"), candidates[expected]
  )

"""The annotation workflow end to end on real CIFAR-10 images, the test playing the annotator
from the true labels; and every kind of invalid labels file."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from disal_jax.annotate import labels_file, rounds
from disal_jax.annotate import project as project_lib
from tests.helpers import REPO, load_config, write_image_folder

pytestmark = pytest.mark.slow  # whole runs or subprocesses: not in the quick tier

CLASSES = ("airplane", "cat", "ship")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, image_folder_root):
  """A user's folder: 8 labeled images per class, 90 unlabeled (true classes kept aside for
  the test's annotator), a test split of 10 per class. Returns (folder, {path: class})."""
  source = write_image_folder(tmp_path_factory.mktemp("source"), CLASSES, 38, 10)
  root = tmp_path_factory.mktemp("my_images")
  truth = {}
  for name in CLASSES:
    files = sorted((source / "train" / name).iterdir())
    (root / name).mkdir()
    (root / "unlabeled").mkdir(exist_ok=True)
    (root / "test" / name).mkdir(parents=True)
    for f in files[:8]:
      shutil.copy(f, root / name / f.name)
    for f in files[8:38]:
      target = root / "unlabeled" / f"{len(truth):04d}.jpg"  # the name hides the class...
      shutil.copy(f, target)
      truth[str(target.relative_to(root))] = name  # ...the annotator knows it
    for f in sorted((source / "test" / name).iterdir())[:10]:
      shutil.copy(f, root / "test" / name / f.name)
  return root, truth


def _answer(query_csv, truth, keep=None):
  """The annotator: true labels for the queried ids (the first `keep` of them)."""
  with open(query_csv, newline="") as f:
    rows = list(csv.DictReader(f))
  rows = rows[:keep] if keep is not None else rows
  path = query_csv.parent / "labels.csv"
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "label"])
    writer.writerows([r["id"], truth[r["path"]]] for r in rows)
  return path, [int(r["id"]) for r in rows]


def _state(workdir):
  project = project_lib.load_project(str(workdir))
  store = project_lib.StateStore(project)
  try:
    return project, store.latest()[1]
  finally:
    store.close()


def test_three_rounds_with_partial_answers_and_undo(tmp_path, image_folder):
  root, truth = image_folder
  workdir = tmp_path / "project"
  cli = [sys.executable, "-m", "disal_jax.annotate"]
  done = subprocess.run(
    cli
    + [
      "init",
      f"--images={root}",
      f"--workdir={workdir}",
      f"--config={REPO / 'configs/annotate.py'}:quick",
    ],
    cwd=REPO,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  assert "registered 114 images (24 labeled" in done.stdout
  project, state = _state(workdir)
  assert project.class_names == CLASSES and len(project.test_paths) == 30
  assert (state.labels >= 0).sum() == 24 and not state.query.any()

  labeled_counts = [24]
  for round_, (strategy, keep) in enumerate([("disal", None), ("coreset", 6), ("random", None)]):
    if round_ == 0:  # through the command line once
      done = subprocess.run(
        cli + ["next", f"--workdir={workdir}", "--budget=10", f"--strategy={strategy}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
      )
      assert done.returncode == 0, done.stderr[-3000:]
      out = rounds.query_dir(project, 0)
      assert str(out) in done.stdout
    else:
      out = rounds.next_query(project, strategy, budget=10)
    query = json.loads((out / "query.json").read_text())
    ids = [q["id"] for q in query["queries"]]
    assert len(set(ids)) == 10 and query["round"] == round_
    _, state = _state(workdir)
    assert (state.labels[ids] == -1).all() and sorted(np.flatnonzero(state.query)) == sorted(ids)
    assert all(project.paths[q["id"]] == q["path"] for q in query["queries"])
    if strategy == "coreset":  # a greedy order, no per-sample score
      assert all(q["score"] is None for q in query["queries"])
    else:
      assert all(isinstance(q["score"], float) for q in query["queries"])
    with Image.open(out / "contact_sheet.png") as sheet:
      assert sheet.size == (10 * rounds.SHEET_CELL, rounds.SHEET_CELL + rounds.SHEET_CAPTION)
    with pytest.raises(project_lib.ProjectError, match="already has an open query"):
      rounds.next_query(project, strategy, budget=10)
    if strategy == "coreset":  # select again in the same round: the model is reused
      first = _state(workdir)[1].history[-1]
      assert first["reused_model"] is False
      rounds.next_query(project, strategy, budget=10, replace=True)
      again = _state(workdir)[1].history[-1]
      assert again["reused_model"] is True and again["round"] == round_
      assert again["test_accuracy"] == first["test_accuracy"]
      assert json.loads((out / "query.json").read_text()) == query  # same model, same picks
    labels_path, answered = _answer(out / "query.csv", truth, keep)
    if round_ == 0:
      done = subprocess.run(
        cli + ["import", f"--workdir={workdir}", f"--labels={labels_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
      )
      assert done.returncode == 0, done.stderr[-3000:]
      assert "merged 10 labels (0 unanswered" in done.stdout
    else:
      done = rounds.import_answers(project, str(labels_path))
      assert done == {
        "merged": len(answered),
        "unanswered": 10 - len(answered),
        "round": round_ + 1,
      }
    _, state = _state(workdir)
    for i in answered:
      assert project.class_names[state.labels[i]] == truth[project.paths[i]]
      assert state.labeled_round[i] == round_ + 1
    assert not state.query.any()  # unanswered ids are back in the pool
    labeled_counts.append(labeled_counts[-1] + len(answered))
    assert (state.labels >= 0).sum() == labeled_counts[-1]

  done = subprocess.run(
    cli + ["status", f"--workdir={workdir}"], cwd=REPO, capture_output=True, text=True, timeout=300
  )
  assert done.returncode == 0, done.stderr[-3000:]
  report = done.stdout
  assert "round 3: 50 labeled, 64 unlabeled" in report
  assert report.count("| disal |") == 1 and "| coreset | 34 |" in report
  _, state = _state(workdir)
  assert np.isfinite([h["test_accuracy"] for h in state.history]).all()

  before = state
  rounds.undo(project)
  _, after = _state(workdir)
  assert after.round == 2 and (after.labels >= 0).sum() == 40
  assert after.query.sum() == 10  # the undone import's query is open again
  assert (after.labels[before.labeled_round == 3] == -1).all()
  rounds.undo(project)  # and the one before it
  _, after = _state(workdir)
  assert after.round == 1 and (after.labels >= 0).sum() == 34


@pytest.fixture
def open_query():
  query = np.zeros(20, bool)
  query[[3, 4, 5, 6]] = True
  return query


@pytest.mark.parametrize(
  "body,problems",
  [
    ("id,label\n3,cat\n99,cat\n", ["line 3: unknown id 99"]),
    ("id,label\n3,cat\n7,cat\n", ["line 3: id 7 is not in the open query"]),
    ("id,label\n3,dog\n", ["line 2: unknown class 'dog' for id 3"]),
    ("id,label\n3,cat\n4,ship\n3,cat\n", ["line 4: id 3 duplicates line 2"]),
    ("id,label\n3,cat\n3,ship\n", ["line 3: id 3 labeled 'ship' conflicts with 'cat' on line 2"]),
    ("id,label\nx,cat\n", ["line 2: id 'x' is not an integer"]),
    ("image,label\n3,cat\n", ["line 1: missing column(s) ['id']"]),
    ("id,label\n3,cat\n5\n", ["line 3: 1 field(s)"]),
    ("id,label\n3,dog\n4,cat\n4,ship\n", ["line 2: unknown class", "line 4: id 4 labeled"]),
  ],
)
def test_every_invalid_labels_file_is_reported_by_line(tmp_path, open_query, body, problems):
  path = tmp_path / "labels.csv"
  path.write_text(body)
  with pytest.raises(labels_file.LabelFileError) as error:
    labels_file.read_answers(str(path), CLASSES, 20, open_query)
  for problem in problems:
    assert problem in str(error.value)


def test_a_valid_file_with_a_bom_blank_lines_and_extra_columns(tmp_path, open_query):
  path = tmp_path / "labels.csv"
  path.write_text("\ufeffid,annotator,label\n3,ann,cat\n\n6,bob,airplane\n", encoding="utf-8")
  assert labels_file.read_answers(str(path), CLASSES, 20, open_query) == {3: 1, 6: 0}


def test_an_invalid_import_merges_nothing(tmp_path, image_folder):
  root, _ = image_folder
  project = project_lib.init_project(
    str(root), str(tmp_path / "p"), load_config("annotate", "quick")
  )
  store = project_lib.StateStore(project)
  step, state = store.latest()
  query = state.query.copy()
  query[np.flatnonzero(state.labels < 0)[:3]] = True
  store.save(project_lib.State(state.labels, state.labeled_round, query, 0, [], "next", step))
  store.close()
  first = int(np.flatnonzero(query)[0])
  bad = tmp_path / "bad.csv"
  bad.write_text(f"id,label\n{first},cat\n{first},ship\n")
  with pytest.raises(labels_file.LabelFileError, match="nothing was merged"):
    rounds.import_answers(project, str(bad))
  _, after = _state(tmp_path / "p")
  np.testing.assert_array_equal(after.labels, state.labels)
  np.testing.assert_array_equal(after.query, query)
  with pytest.raises(project_lib.ProjectError, match="nothing to undo"):
    rounds.undo(project)


def test_bad_folders_and_workdirs_are_named(tmp_path, image_folder):
  root, _ = image_folder
  with pytest.raises(project_lib.ProjectError, match="no such folder"):
    project_lib.init_project(
      str(tmp_path / "nope"), str(tmp_path / "w"), load_config("annotate", "quick")
    )
  lone = tmp_path / "lone"
  (lone / "cat").mkdir(parents=True)
  with pytest.raises(project_lib.ProjectError, match="at least two class folders"):
    project_lib.init_project(str(lone), str(tmp_path / "w"), load_config("annotate", "quick"))
  with pytest.raises(project_lib.ProjectError, match="not an annotation project"):
    project_lib.load_project(str(tmp_path / "w"))


def test_a_project_saved_by_an_earlier_version_opens_on_todays_keys():
  """A project's config.json from before a section existed (and with a key since moved):
  today's defaults fill the gaps, the moved key lands in its new place, JSON lists become
  tuples, every other saved value is kept, and the result validates."""
  from disal_jax.experiment import validate

  current = load_config("annotate").to_dict()
  saved = json.loads(json.dumps(current))  # as written to config.json: tuples become lists
  del saved["embedding"]
  saved["typiclust"].update(embedding="file", embedding_file="features.npy")
  saved["train"]["learning_rate"] = 0.025
  saved["gone"] = {"key": 1}  # a section since removed
  config = project_lib.config_on_defaults(saved)
  validate(config)
  assert (config.embedding.source, config.embedding.file) == ("file", "features.npy")
  assert config.train.learning_rate == 0.025 and "gone" not in config
  assert config.augment.crop_size == current["augment"]["crop_size"]
  assert isinstance(config.augment.crop_size, tuple)
  assert config.to_dict()["data"] == current["data"]

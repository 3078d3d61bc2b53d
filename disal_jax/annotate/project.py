"""An annotation project: a user's image folder, a workdir, and who is labeled as what.

Folder layout (`--images`):
  <class>/<image>        labeled images, one folder per class (the class names)
  unlabeled/<image>      images nobody has labeled yet (sub-folders allowed)
  test/<class>/<image>   optional: a labeled test split, for test accuracy per round

Every training image (labeled and unlabeled) gets a stable integer id at `init`: its row in
`<workdir>/images.csv` (id, path relative to the folder, initial label). Images are never
moved: answers live in the project's state, a checkpoint (orbax, `checkpoint.RunCheckpointer`)
per change under `<workdir>/state/`. State = labels (-1 = unlabeled), the round each id was
labeled in (-1 = unlabeled, 0 = labeled from the folder), the open query (ids asked, not yet
answered), and in its metadata the round number and the history of rounds. Each checkpoint
records its parent, so `undo` can step back over an import.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
from typing import Any, Optional

import ml_collections
import numpy as np

from disal_jax import checkpoint
from disal_jax.data import image_folder
from disal_jax.data.dataset import Dataset
from disal_jax.errors import ProjectError
from disal_jax.experiment import base_config

UNLABELED_DIR = "unlabeled"
TEST_DIR = "test"
PROJECT_FILE = "project.json"
IMAGES_FILE = "images.csv"
CONFIG_FILE = "config.json"
STATE_DIR = "state"
KEEP_STATES = 1000  # every change stays undoable


def _images_under(folder: pathlib.Path) -> list[pathlib.Path]:
  return sorted(
    p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in image_folder.IMAGE_SUFFIXES
  )


def scan_folder(
  root: pathlib.Path,
) -> tuple[list[str], list[tuple[str, int]], list[tuple[str, int]]]:
  """(class names, [(relative path, label or -1)] for training, [(relative path, label)] test)."""
  if not root.is_dir():
    raise ProjectError(f"{root}: no such folder (--images)")
  classes = sorted(
    p.name for p in root.iterdir() if p.is_dir() and p.name not in (UNLABELED_DIR, TEST_DIR)
  )
  if len(classes) < 2:
    raise ProjectError(
      f"{root}: needs at least two class folders of labeled images "
      f"(<class>/<image>) beside {UNLABELED_DIR}/; found {classes}"
    )
  train = []
  for label, name in enumerate(classes):
    members = _images_under(root / name)
    if not members:
      raise ProjectError(
        f"{root / name}: class folder holds no images (suffixes {image_folder.IMAGE_SUFFIXES})"
      )
    train.extend((str(p.relative_to(root)), label) for p in members)
  unlabeled = _images_under(root / UNLABELED_DIR) if (root / UNLABELED_DIR).is_dir() else []
  if not unlabeled:
    raise ProjectError(f"{root / UNLABELED_DIR}: no unlabeled images to select from")
  train.extend((str(p.relative_to(root)), -1) for p in unlabeled)
  test = []
  if (root / TEST_DIR).is_dir():
    test_classes, files = image_folder.list_split(root / TEST_DIR)
    unknown = sorted(set(test_classes) - set(classes))
    if unknown:
      raise ProjectError(
        f"{root / TEST_DIR}: class folders {unknown} have no labeled "
        f"training folder; training classes: {classes}"
      )
    test = [
      (str(pathlib.Path(p).relative_to(root)), classes.index(test_classes[label]))
      for p, label in files
    ]
  return classes, train, test


@dataclasses.dataclass(frozen=True)
class Project:
  """The static part of a project, written once by `init`.

  Attributes:
    workdir: the project's folder.
    images_root: the user's image folder.
    class_names: sorted class folder names.
    paths: (N,) training image paths relative to images_root; an image's id is its row.
    initial_labels: (N,) int32, -1 for images under unlabeled/.
    test_paths, test_labels: the optional test split.
    config: the experiment config (model, training, strategies' settings).
  """

  workdir: pathlib.Path
  images_root: pathlib.Path
  class_names: tuple[str, ...]
  paths: tuple[str, ...]
  initial_labels: np.ndarray
  test_paths: tuple[str, ...]
  test_labels: np.ndarray
  config: ml_collections.ConfigDict

  @property
  def num_images(self) -> int:
    """The number of images N in the project."""
    return len(self.paths)

  def load_dataset(self) -> Dataset:
    """Every image decoded (resized to config.data.image_size, so all share one size);
    unlabeled rows carry label 0 in the Dataset (never read: only labeled rows are trained on)."""
    size = int(self.config.data.image_size)
    images = image_folder.read_all(
      [(str(self.images_root / p), 0) for p in self.paths + self.test_paths], size
    )
    train, test = images[: self.num_images], images[self.num_images :]
    return Dataset(
      "annotation_project",
      train,
      np.maximum(self.initial_labels, 0),
      test,
      self.test_labels.astype(np.int32),
      self.class_names,
    )


def init_project(images: str, workdir: str, config: ml_collections.ConfigDict) -> Project:
  """Registers a folder: writes project.json, images.csv, config.json and state 0."""
  root = pathlib.Path(images).expanduser().resolve()
  work = pathlib.Path(workdir)
  if (work / PROJECT_FILE).exists():
    raise ProjectError(
      f"{work} already holds a project ({PROJECT_FILE}); choose another "
      "--workdir, or use `annotate status` to see it"
    )
  classes, train, test = scan_folder(root)
  if not config.data.image_size:
    raise ProjectError(
      "config.data.image_size is 0: set it (e.g. --config.data.image_size=32) "
      "so that every image is resized to one size"
    )
  work.mkdir(parents=True, exist_ok=True)
  (work / CONFIG_FILE).write_text(config.to_json_best_effort(indent=1))
  with open(work / IMAGES_FILE, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f)
    writer.writerow(["id", "path", "initial_label"])
    for i, (path, label) in enumerate(train):
      writer.writerow([i, path, classes[label] if label >= 0 else ""])
  (work / PROJECT_FILE).write_text(
    json.dumps(
      {
        "images": str(root),
        "class_names": classes,
        "test": [[p, classes[label]] for p, label in test],
      },
      indent=1,
    )
  )
  project = load_project(workdir)
  labels = project.initial_labels.copy()
  state = State(
    labels,
    np.where(labels >= 0, 0, -1).astype(np.int32),
    np.zeros(len(labels), bool),
    round=0,
    history=[],
    event="init",
  )
  store = StateStore(project)
  store.save(state)
  store.close()
  return project


def config_on_defaults(saved: dict[str, Any]) -> ml_collections.ConfigDict:
  """A project's saved config over today's defaults: a key or section added since the project
  was made keeps its default, a moved key (checkpoint.moved_keys()) goes to its new place, a
  key since removed is dropped, and JSON's lists become tuples where the default is one. So a
  project made by an earlier version still opens and validates."""
  config = base_config()
  moved = checkpoint.moved_keys()

  def put(key: str, value: Any) -> None:
    *path, last = moved.get(key, key).split(".")
    node = config
    for part in path:
      if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
        return
      node = node[part]
    if last not in node or isinstance(node[last], ml_collections.ConfigDict):
      return
    node[last] = tuple(value) if isinstance(node[last], tuple) else value

  def walk(values: dict[str, Any], prefix: str) -> None:
    for key, value in values.items():
      if isinstance(value, dict):
        walk(value, f"{prefix}{key}.")
      else:
        put(prefix + key, value)

  walk(saved, "")
  return config


def load_project(workdir: str) -> Project:
  """The Project that `init` wrote in `workdir`; ProjectError where there is none."""
  work = pathlib.Path(workdir)
  if not (work / PROJECT_FILE).exists():
    raise ProjectError(
      f"{work}: not an annotation project (no {PROJECT_FILE}); create one "
      "with `python -m disal_jax.annotate init --images=DIR --workdir=W`"
    )
  meta = json.loads((work / PROJECT_FILE).read_text())
  classes = tuple(meta["class_names"])
  with open(work / IMAGES_FILE, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  paths = tuple(r["path"] for r in rows)
  labels = np.array(
    [classes.index(r["initial_label"]) if r["initial_label"] else -1 for r in rows], np.int32
  )
  config = config_on_defaults(json.loads((work / CONFIG_FILE).read_text()))
  return Project(
    work,
    pathlib.Path(meta["images"]),
    classes,
    paths,
    labels,
    tuple(p for p, _ in meta["test"]),
    np.array([classes.index(c) for _, c in meta["test"]], np.int32),
    config,
  )


@dataclasses.dataclass
class State:
  """Who is labeled as what, and the open query.

  Attributes:
    labels: (N,) int32 class per id, -1 = unlabeled.
    labeled_round: (N,) int32 the round an id was labeled in (0 = from the folder), -1.
    query: (N,) bool ids asked in the open query and not yet answered.
    round: rounds completed (imports made).
    history: one dict per query made: round, strategy, budget, labeled, test accuracy.
    event: what made this state ('init', 'next', 'import', 'undo').
    parent: the checkpoint step this state was made from (None for init).
  """

  labels: np.ndarray
  labeled_round: np.ndarray
  query: np.ndarray
  round: int
  history: list[dict[str, Any]]
  event: str
  parent: Optional[int] = None

  def arrays(self) -> dict[str, np.ndarray]:
    """The state's (N,) arrays, by name, as the checkpoint stores them."""
    return {"labels": self.labels, "labeled_round": self.labeled_round, "query": self.query}

  def meta(self) -> dict[str, Any]:
    """The state's JSON metadata: round, history, event and parent."""
    return {
      "round": self.round,
      "history": self.history,
      "event": self.event,
      "parent": self.parent,
    }


class StateStore:
  """The project's states, one orbax checkpoint per change (step 0, 1, ...)."""

  def __init__(self, project: Project):
    self.project = project
    self.ckpt = checkpoint.RunCheckpointer(project.workdir / STATE_DIR, KEEP_STATES)

  def _template(self, meta):
    del meta
    n = self.project.num_images
    return {
      "labels": np.zeros(n, np.int32),
      "labeled_round": np.zeros(n, np.int32),
      "query": np.zeros(n, bool),
    }

  def _state(self, tree, meta) -> State:
    return State(
      tree["labels"],
      tree["labeled_round"],
      tree["query"],
      meta["round"],
      meta["history"],
      meta["event"],
      meta["parent"],
    )

  def latest(self) -> tuple[int, State]:
    """(step, State) of the newest saved state; ProjectError where none is."""
    restored = self.ckpt.restore_newest(self._template)
    if restored is None:
      raise ProjectError(
        f"{self.ckpt.directory}: the project has no state; run init again in a new --workdir"
      )
    step, tree, meta = restored
    return step, self._state(tree, meta)

  def at(self, step: int) -> State:
    """The State saved at `step`."""
    return self._state(*self.ckpt.restore(step, self._template))

  def save(self, state: State) -> int:
    """Saves `state` as the next step and returns that step."""
    steps = self.ckpt.steps()
    step = steps[-1] + 1 if steps else 0
    self.ckpt.save(step, state.arrays(), state.meta())
    return step

  def close(self) -> None:
    """Waits for pending writes and closes the checkpoint manager."""
    self.ckpt.close()

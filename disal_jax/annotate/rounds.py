"""The annotation rounds: query (train, score, select, write), import answers, undo, status.

A round: `next` trains a model on every labeled image (the experiment's recipe, config at
`init`), scores the unlabeled ones with a registered strategy, and writes the query under
`<workdir>/queries/round_<r>/`: query.csv and query.json (id, path, rank, score) and
contact_sheet.png; `import` merges the answers and closes the round (unanswered ids return to
the pool); `undo` restores the state before the newest import.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Any, Optional

import ml_collections
import numpy as np
from PIL import Image, ImageDraw

from disal_jax import checkpoint, loop
from disal_jax import experiment as config_lib
from disal_jax.annotate import labels_file
from disal_jax.annotate.project import Project, ProjectError, State, StateStore
from disal_jax.cycle import CycleSetup, run_cycle
from disal_jax.data.dataset import Dataset
from disal_jax.strategies import registry as strategy_registry
from disal_jax.training import sharding
from disal_jax.training.trainer import (
  Checkpointing,
  CycleProgress,
  Recording,
  Trainer,
  progress_from,
  progress_meta,
  progress_tree,
)

log = logging.getLogger(__name__)

QUERIES_DIR = "queries"
MODELS_DIR = "models"
SHEET_COLUMNS = 10
SHEET_CELL = 96  # pixels per image on the contact sheet
SHEET_CAPTION = 14  # pixels of caption under each image


def query_dir(project: Project, round_: int) -> pathlib.Path:
  """The folder of round `round_`'s query: <workdir>/queries/round_<round_>."""
  return project.workdir / QUERIES_DIR / f"round_{round_}"


def train_and_select(
  project: Project,
  dataset: Dataset,
  labels: np.ndarray,
  strategy_name: str,
  budget: int,
  round_: int,
  out: pathlib.Path,
) -> tuple[np.ndarray, Optional[np.ndarray], dict[str, float]]:
  """Trains on the labeled ids and selects `budget` unlabeled ones with the strategy.

  The trained model is kept under <workdir>/models/<strategy>/ with a fingerprint of the
  labeled set; a second call in the same round with the same labels reuses it.

  Returns (selected ids in selection order, their scores or None for a strategy without
  per-sample scores (CoreSet's greedy order), the model's test metrics and 'reused_model').
  """
  config = ml_collections.ConfigDict(project.config.to_dict())
  config.strategies = strategy_name
  mesh = sharding.make_mesh()
  config_lib.validate(config, num_devices=mesh.size)
  strategy = strategy_registry.get_strategy(strategy_name)
  level = loop.record_level(config, strategy)
  labeled = np.flatnonzero(labels >= 0)
  candidates = np.flatnonzero(labels < 0)
  if budget > len(candidates):
    raise ProjectError(f"--budget={budget} is more than the {len(candidates)} unlabeled images")
  setup = CycleSetup(
    config,
    loop.strategy_trainer(config, dataset, strategy, mesh),
    strategy,
    Recording(level),
    project.workdir / "strategy_state",
    f"annotate round {round_}",
  )
  # The round's model, kept for a second `next` of the same round and strategy (--replace):
  # a strategy that replays per-epoch checkpoints (TracInCP) trains again.
  keeps_model = strategy.make_epoch_callback is None
  models = checkpoint.RunCheckpointer(project.workdir / MODELS_DIR / f"{strategy_name}", 1)
  fingerprint = hashlib.sha256(labeled.astype(np.int64).tobytes()).hexdigest()

  def keep(progress: CycleProgress) -> None:  # called once, after the last epoch
    models.save(
      round_,
      progress_tree(progress),
      {"labeled": fingerprint, "round": round_, "epoch": progress.epoch, **progress_meta(progress)},
    )

  try:
    saved = (
      _kept_model(models, setup.trainer, level, len(candidates), fingerprint, round_)
      if keeps_model
      else None
    )
    if saved is not None:
      log.info(
        "round %d: reusing the model trained for %s on these %d labeled images",
        round_,
        strategy_name,
        len(labeled),
      )
    outcome = run_cycle(
      setup,
      labeled,
      candidates,
      budget,
      cycle=round_,
      checkpointing=Checkpointing(saved, keep if saved is None and keeps_model else None),
      callback_dir=out / "strategy_state",
    )
  finally:
    models.close()
  scores = None
  evidence = outcome.evidence
  if isinstance(evidence, np.ndarray) and evidence.shape == candidates.shape:
    scores = evidence[np.searchsorted(candidates, outcome.selected)]
  return (outcome.selected, scores, dict(outcome.result.test, reused_model=saved is not None))


def _kept_model(
  models: checkpoint.RunCheckpointer,
  trainer: Trainer,
  level: str,
  num_candidates: int,
  fingerprint: str,
  round_: int,
) -> Optional[CycleProgress]:
  """The model kept for this round and labeled set (its training's last progress, placed on
  the mesh), or None: none kept, or one of another round or labeled set."""
  if not models.steps():
    return None
  pool_length = trainer.padded_pool_length(num_candidates, 0)

  def template(meta):
    del meta
    return progress_tree(trainer.progress_template(level, pool_length))

  _, tree, meta = models.restore_newest(template)
  if meta["labeled"] != fingerprint or meta["round"] != round_:
    return None
  return trainer.place_progress(progress_from(tree, meta))


def contact_sheet(
  project: Project, ids: np.ndarray, scores: Optional[np.ndarray], path: pathlib.Path
) -> None:
  """A PNG grid of the queried images (original files, scaled to the cell), captioned with
  id and score, in selection order."""
  columns = min(SHEET_COLUMNS, len(ids))
  rows = math.ceil(len(ids) / columns)
  sheet = Image.new("RGB", (columns * SHEET_CELL, rows * (SHEET_CELL + SHEET_CAPTION)), "white")
  draw = ImageDraw.Draw(sheet)
  for i, image_id in enumerate(ids):
    x, y = (i % columns) * SHEET_CELL, (i // columns) * (SHEET_CELL + SHEET_CAPTION)
    with Image.open(project.images_root / project.paths[image_id]) as img:
      img = img.convert("RGB")
      scale = (SHEET_CELL - 4) / max(img.size)  # small images are enlarged to the cell
      thumb = img.resize(
        (max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BICUBIC
      )
      sheet.paste(
        thumb, (x + (SHEET_CELL - thumb.width) // 2, y + (SHEET_CELL - thumb.height) // 2)
      )
    text = f"#{image_id}" + ("" if scores is None else f"  score {scores[i]:.3g}")
    draw.text((x + 3, y + SHEET_CELL), text, fill="black")
  sheet.save(path)


def write_query(
  project: Project, round_: int, strategy_name: str, ids: np.ndarray, scores: Optional[np.ndarray]
) -> pathlib.Path:
  """Writes the query of `ids` (ranked, with their scores where given) as query.json,
  query.csv and a contact sheet; returns the query's folder."""
  out = query_dir(project, round_)
  out.mkdir(parents=True, exist_ok=True)
  entries = [
    {
      "id": int(i),
      "path": project.paths[i],
      "rank": rank + 1,
      "score": None if scores is None else float(scores[rank]),
    }
    for rank, i in enumerate(ids)
  ]
  with open(out / "query.csv", "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, fieldnames=["id", "path", "rank", "score"])
    writer.writeheader()
    writer.writerows({**e, "score": "" if e["score"] is None else e["score"]} for e in entries)
  (out / "query.json").write_text(
    json.dumps(
      {
        "round": round_,
        "strategy": strategy_name,
        "images_root": str(project.images_root),
        "classes": list(project.class_names),
        "answer_with": "a CSV with columns id,label (label: one of the classes)",
        "queries": entries,
      },
      indent=1,
    )
  )
  contact_sheet(project, ids, scores, out / "contact_sheet.png")
  return out


def next_query(
  project: Project, strategy_name: str, budget: int, replace: bool = False
) -> pathlib.Path:
  """Trains, selects `budget` images and writes the round's query; returns its folder."""
  if budget < 1:
    raise ProjectError(f"--budget={budget}: must be at least 1")
  strategy_registry.get_strategy(strategy_name)  # a clear error for an unknown name, now
  store = StateStore(project)
  try:
    step, state = store.latest()
    if state.query.any() and not replace:
      raise ProjectError(
        f"round {state.round} already has an open query of {int(state.query.sum())} images "
        f"({query_dir(project, state.round)}); import its answers first (`annotate import`), "
        "or pass --replace to select again"
      )
    t0 = time.perf_counter()
    ids, scores, test = train_and_select(
      project,
      project.load_dataset(),
      state.labels,
      strategy_name,
      budget,
      state.round,
      query_dir(project, state.round),
    )
    out = write_query(project, state.round, strategy_name, ids, scores)
    query = np.zeros_like(state.query)
    query[ids] = True
    history = [h for h in state.history if h["round"] != state.round] + [
      {
        "round": state.round,
        "strategy": strategy_name,
        "budget": budget,
        "labeled": int((state.labels >= 0).sum()),
        "test_accuracy": test["accuracy"],
        "reused_model": test["reused_model"],
        "seconds": time.perf_counter() - t0,
      }
    ]
    store.save(State(state.labels, state.labeled_round, query, state.round, history, "next", step))
  finally:
    store.close()
  return out


def import_answers(project: Project, labels_path: str) -> dict[str, Any]:
  """Validates and merges a labels file into the open query; closes the round."""
  store = StateStore(project)
  try:
    step, state = store.latest()
    if not state.query.any():
      raise ProjectError(
        f"round {state.round} has no open query: make one with "
        "`annotate next` before importing labels"
      )
    answers = labels_file.read_answers(
      labels_path, project.class_names, project.num_images, state.query
    )
    labels, labeled_round = state.labels.copy(), state.labeled_round.copy()
    ids = np.fromiter(answers, np.int64)
    labels[ids] = np.fromiter(answers.values(), np.int32)
    labeled_round[ids] = state.round + 1
    history = [
      dict(h, answered=len(ids)) if h["round"] == state.round else h for h in state.history
    ]
    store.save(
      State(
        labels, labeled_round, np.zeros_like(state.query), state.round + 1, history, "import", step
      )
    )
  finally:
    store.close()
  return {
    "merged": len(ids),
    "unanswered": int(state.query.sum()) - len(ids),
    "round": state.round + 1,
  }


def undo(project: Project) -> dict[str, Any]:
  """Restores the state from before the newest import (itself saved as a new state)."""
  store = StateStore(project)
  try:
    step, state = store.latest()
    while state.event != "import":
      if state.parent is None:
        raise ProjectError("nothing to undo: no import since the project was created")
      step, state = state.parent, store.at(state.parent)
    before = store.at(state.parent)
    store.save(
      State(
        before.labels,
        before.labeled_round,
        before.query,
        before.round,
        before.history,
        "undo",
        before.parent,
      )
    )
  finally:
    store.close()
  return {"round": before.round, "undone_step": step}


def status(project: Project) -> str:
  """Rounds, labeled counts per class, test accuracy per round, the open query."""
  store = StateStore(project)
  try:
    _, state = store.latest()
  finally:
    store.close()
  labeled = state.labels >= 0
  lines = [
    f"project {project.workdir}: {project.num_images} images in "
    f"{project.images_root}, {len(project.test_paths)} test images",
    f"round {state.round}: {int(labeled.sum())} labeled, {int((~labeled).sum())} unlabeled",
    "",
    "| class | labeled |",
    "|---|---:|",
  ]
  counts = np.bincount(state.labels[labeled], minlength=len(project.class_names))
  lines += [f"| {name} | {int(n)} |" for name, n in zip(project.class_names, counts)]
  lines += [
    "",
    "| round | strategy | labeled | test accuracy | queried | answered |",
    "|---:|---|---:|---:|---:|---:|",
  ]
  for h in state.history:
    lines.append(
      f"| {h['round']} | {h['strategy']} | {h['labeled']} | "
      f"{h['test_accuracy']:.4f} | {h['budget']} | {h.get('answered', '-')} |"
    )
  if state.query.any():
    lines += ["", f"open query: {int(state.query.sum())} images, {query_dir(project, state.round)}"]
  return "\n".join(lines)

"""Reading annotators' answers: a CSV with columns `id` and `label` (a class name).

The whole file is checked before anything is merged; every problem is reported with its line
number: a missing column, an id that is not an integer, unknown to the project or not in the
open query, an unknown class name, an id answered twice with the same label (duplicate) or
with different labels (conflict). Ids of the query that the file leaves out stay unlabeled.
"""

from __future__ import annotations

import csv
import pathlib

import numpy as np

from disal_jax.errors import LabelFileError

REQUIRED_COLUMNS = ("id", "label")


def read_answers(
  path: str, class_names: tuple[str, ...], num_images: int, query: np.ndarray
) -> dict[int, int]:
  """{id: class index} from the CSV at `path`, or LabelFileError listing every problem.

  Args:
    class_names: the project's classes (a label must be one of them, exactly).
    num_images: ids run from 0 to num_images - 1.
    query: (num_images,) bool, the ids of the open query.
  """
  file = pathlib.Path(path)
  if not file.is_file():
    raise LabelFileError(f"{file}: no such labels file (--labels)")
  try:
    with open(file, newline="", encoding="utf-8-sig") as f:
      rows = list(csv.reader(f))
  except (UnicodeDecodeError, csv.Error) as e:
    raise LabelFileError(f"{file}: not a readable UTF-8 CSV file ({e})") from e
  if not rows:
    raise LabelFileError(f"{file}: empty; expected a header line 'id,label'")
  header = [h.strip().lower() for h in rows[0]]
  missing = [c for c in REQUIRED_COLUMNS if c not in header]
  if missing:
    raise LabelFileError(
      f"{file}, line 1: missing column(s) {missing}; the header must name "
      f"{list(REQUIRED_COLUMNS)} (found {rows[0]})"
    )
  id_col, label_col = header.index("id"), header.index("label")
  classes = {name: i for i, name in enumerate(class_names)}
  problems, answers, first_line = [], {}, {}
  for line, row in enumerate(rows[1:], start=2):
    if not any(cell.strip() for cell in row):
      continue  # blank line
    if len(row) <= max(id_col, label_col):
      problems.append(
        f"line {line}: {len(row)} field(s), expected at least {max(id_col, label_col) + 1}"
      )
      continue
    raw_id, label = row[id_col].strip(), row[label_col].strip()
    try:
      image_id = int(raw_id)
    except ValueError:
      problems.append(f"line {line}: id {raw_id!r} is not an integer")
      continue
    if not 0 <= image_id < num_images:
      problems.append(f"line {line}: unknown id {image_id} (ids run from 0 to {num_images - 1})")
      continue
    if not query[image_id]:
      problems.append(f"line {line}: id {image_id} is not in the open query")
      continue
    if label not in classes:
      problems.append(
        f"line {line}: unknown class {label!r} for id {image_id}; classes: {list(class_names)}"
      )
      continue
    if image_id in answers:
      if answers[image_id] == classes[label]:
        problems.append(f"line {line}: id {image_id} duplicates line {first_line[image_id]}")
      else:
        problems.append(
          f"line {line}: id {image_id} labeled {label!r} conflicts with "
          f"{class_names[answers[image_id]]!r} on line {first_line[image_id]}"
        )
      continue
    answers[image_id] = classes[label]
    first_line[image_id] = line
  if problems:
    raise LabelFileError(
      f"{file}: {len(problems)} problem(s), nothing was merged:\n  " + "\n  ".join(problems)
    )
  if not answers:
    raise LabelFileError(f"{file}: no answers (only a header); nothing was merged")
  return answers

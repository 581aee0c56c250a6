"""The best checkpoint of a model directory: kept outside rotation.

The trainer keeps only the newest ``--keep_checkpoints`` checkpoints, so the
one with the lowest evaluation error would soon be deleted. Each time an
evaluation beats every earlier one, its weights (the whole training
checkpoint: model, EMA, optimiser) are written to ``<model_dir>/best/
ckpt-N`` and ``<model_dir>/best/best.json`` records which step, split and
metrics they scored. ``--checkpoint=best`` of evaluate, export, export_torch
and ``load_model(..., checkpoint="best")`` (``store.find_checkpoint``) open
them by name.

The record is replaced atomically after the new checkpoint is complete, and
the previous best's files are deleted only then, so a crash at any moment
leaves one complete best checkpoint whose record names it.
"""

import json
import os
from typing import Optional

SUBDIR = "best"
RECORD = "best.json"
NAME = "best"    # the --checkpoint value that selects it


def directory_of(model_dir: str) -> str:
  return os.path.join(model_dir, SUBDIR)


def record_path(model_dir: str) -> str:
  return os.path.join(model_dir, SUBDIR, RECORD)


def read(model_dir: str) -> Optional[dict]:
  """The best record (step, split, metrics, checkpoint path), or None.

  A record whose checkpoint's index file is missing is None: it names
  nothing usable.
  """
  try:
    with open(record_path(model_dir)) as f:
      record = json.load(f)
  except (FileNotFoundError, NotADirectoryError, ValueError):
    return None
  if not isinstance(record, dict) or "checkpoint" not in record:
    return None
  prefix = os.path.join(directory_of(model_dir), record["checkpoint"])
  if not os.path.exists(prefix + ".index"):
    return None
  return dict(record, prefix=prefix)


def checkpoint_prefix(model_dir: str) -> Optional[str]:
  """The best checkpoint's prefix, or None if the directory has none."""
  record = read(model_dir)
  return record["prefix"] if record else None


def write_record(model_dir: str, record: dict) -> None:
  """Replaces the record atomically (``checkpoint`` is relative to
  ``best/``)."""
  path = record_path(model_dir)
  temp = path + ".tmp"
  with open(temp, "w") as f:
    json.dump(record, f, indent=2, sort_keys=True)
    f.write("\n")
    f.flush()
    os.fsync(f.fileno())
  os.replace(temp, path)

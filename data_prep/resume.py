"""Reusing an output folder: whose files it holds, and which shards an earlier run finished.

A run deletes only what a data_prep run wrote into its --output_dir (the shards listed by its
manifest.json or recorded in its state folder, and its hidden temporary files); anything else
that this tool would delete or overwrite stops the run before it changes anything. A shard is
kept when its plan is unchanged and its file still has the recorded SHA-256; the rest are
removed and written again. A folder holding another dataset (another converter or dataset
name in its manifest), or splits this run does not write, is replaced only with --overwrite,
since every shard of it would go. A model directory (checkpoints, model_config.json,
train_config.json) is never an output folder, --overwrite or not. See docs/data-format.md.
"""

import json
import os
import re
from typing import Dict, List, Optional, Sequence

from absl import logging

from data_prep import DataPrepError
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import summary as summary_lib
from data_prep import writer

# What the trainer and import_torch write into a model directory (docs/architecture.md).
_MODEL_DIR_FILES = ("model_config.json", "train_config.json", "checkpoint")
_CHECKPOINT_FILE = re.compile(r"^ckpt-\d+\.(index|data-\d+-of-\d+)$")


def model_dir_problem(output_dir: str) -> Optional[str]:
  """Why `output_dir` is a model directory and must not receive shards, or None.

  Shards written among checkpoints would mix a dataset into a model's files (and a later
  cleanup of either would take the other with it), so such a folder is refused whatever the
  flags; the line names the file that makes it a model directory and the way forward.

  Args:
    output_dir: The --output_dir (it need not exist).
  """
  if not os.path.isdir(output_dir):
    return None
  names = set(os.listdir(output_dir))
  found = [name for name in _MODEL_DIR_FILES if name in names]
  found += sorted(name for name in names if _CHECKPOINT_FILE.match(name))
  if not found:
    return None
  return (f"--output_dir={output_dir} is a model directory (it holds {found[0]}), not a "
          "folder for data: write the shards to a folder of their own, e.g. "
          "--output_dir=data/<dataset>, and pass that folder to the trainer as --data_dir")


def previous_results(output_dir: str) -> Dict[str, planning.ShardResult]:
  """Shard results recorded by earlier runs: the previous manifest, then state files.

  An unreadable manifest or state file only means its shards are written again.

  Args:
    output_dir: The output folder.

  Returns:
    {shard file: its recorded result}.
  """
  found: Dict[str, planning.ShardResult] = {}
  manifest_path = os.path.join(output_dir, manifest_lib.MANIFEST)
  if os.path.exists(manifest_path):
    try:
      found = manifest_lib.shard_results(manifest_lib.load(manifest_path))
    except (OSError, ValueError, KeyError, TypeError) as e:
      logging.warning("ignoring unreadable %s (%s); redoing every shard", manifest_path, e)
      found = {}
  state_dir = os.path.join(output_dir, writer.STATE_DIR)
  if os.path.isdir(state_dir):
    for name in sorted(os.listdir(state_dir)):
      if not name.endswith(".tfrecord.json"):
        continue
      try:
        with open(os.path.join(state_dir, name), encoding="utf-8") as f:
          result = planning.ShardResult.from_json(json.load(f))
      except (OSError, ValueError, KeyError, TypeError):
        continue  # an unreadable state file only means that shard is redone
      found[result.file] = result
  return found


def check_ownership(output_dir: str) -> None:
  """Refuses an output folder holding files this tool would replace but no data_prep run wrote.

  The manifest and the state files list what earlier runs wrote; nothing is changed here.

  Args:
    output_dir: The output folder (it exists).

  Raises:
    DataPrepError: manifest.json is not a data_prep manifest, or a shard-named file is not
      listed by it or by a state file.
  """
  manifest_path = os.path.join(output_dir, manifest_lib.MANIFEST)
  owned = set()
  if os.path.exists(manifest_path):
    listed = manifest_lib.listed_files(manifest_path)
    if listed is None:
      raise DataPrepError(f"{manifest_path} is not a data_prep manifest (unreadable, or no "
                          '"format": "data_prep shards"), so this tool will not replace it: move '
                          "it elsewhere or choose another --output_dir")
    owned |= listed
  state_dir = os.path.join(output_dir, writer.STATE_DIR)
  if os.path.isdir(state_dir):
    owned |= {name[:-len(".json")] for name in os.listdir(state_dir)
              if name.endswith(".tfrecord.json")}
  foreign = sorted(name for name in os.listdir(output_dir)
                   if planning.SHARD_RE.match(name) and name not in owned)
  if foreign:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                      else "")
    raise DataPrepError(
        f"--output_dir={output_dir} holds "
        f"{summary_lib.plural(len(foreign), 'shard-named file')} that no "
        f"data_prep run there wrote ({shown}); this tool deletes or overwrites such names, so "
        "move them elsewhere or choose another --output_dir")


def _splits_text(results: Sequence[planning.ShardResult]) -> str:
  """'train: 12 images in 1 shard; validation: ...' for the shards of earlier runs."""
  by_split: Dict[str, List[planning.ShardResult]] = {}
  for result in results:
    by_split.setdefault(result.split, []).append(result)
  return "; ".join(
      f"{split}: {summary_lib.plural(sum(r.num_examples for r in found), 'image')} in "
      f"{summary_lib.plural(len(found), 'shard')}" for split, found in by_split.items())


def check_replacement(output_dir: str, info: manifest_lib.DatasetInfo,
                      plans: Sequence[planning.ShardPlan], overwrite: bool) -> None:
  """Refuses, without `overwrite`, to replace another dataset or a split this run does not write.

  A rerun of the same conversion (the same converter and dataset, with the same or more
  splits) goes on: its verified shards are kept and the rest rewritten. Nothing is changed
  here.

  Args:
    output_dir: The output folder (it exists, and check_ownership passed).
    info: This run's dataset.
    plans: Every shard of this run.
    overwrite: --overwrite: replace it, saying what is replaced.

  Raises:
    DataPrepError: The folder holds another dataset or other splits, and not `overwrite`.
  """
  previous = previous_results(output_dir)
  if not previous:
    return
  manifest_path = os.path.join(output_dir, manifest_lib.MANIFEST)
  earlier = None
  if os.path.exists(manifest_path):
    try:
      manifest = manifest_lib.load(manifest_path)
      earlier = (str(manifest.get("converter")), str(manifest.get("dataset")))
    except (OSError, ValueError, AttributeError):
      earlier = None
  planned = sorted({plan.split for plan in plans})
  other_splits = sorted({r.split for r in previous.values()} - set(planned))
  other_dataset = earlier is not None and earlier != (info.converter, info.dataset)
  if not other_dataset and not other_splits:
    return
  held = (f"{earlier[0]}'s dataset {earlier[1]!r}" if earlier is not None
          else "an unfinished conversion")
  what = f"{held} ({_splits_text(list(previous.values()))})"
  if overwrite:
    logging.warning("--overwrite: replacing %s in %s", what, output_dir)
    return
  reasons = []
  if other_dataset:
    reasons.append(f"this run writes {info.converter}'s dataset {info.dataset!r}")
  if other_splits:
    names = " and ".join(repr(s) for s in other_splits)
    reasons.append(f"it would delete split{'s' if len(other_splits) > 1 else ''} {names}, "
                   f"which this run (writing {', '.join(map(repr, planned))}) does not write")
  raise DataPrepError(
      f"--output_dir={output_dir} holds {what}; {'; '.join(reasons)}. Pass --overwrite to "
      "replace it, or choose another --output_dir")


def prepare(output_dir: str, plans: Sequence[planning.ShardPlan],
            info: Optional[manifest_lib.DatasetInfo] = None,
            overwrite: bool = False) -> Dict[str, planning.ShardResult]:
  """Finds the verified shards to keep, then removes stale files.

  Removes only what earlier runs wrote (see check_ownership), in an order that keeps every
  remaining shard recorded somewhere if this run is killed: state files for the kept shards,
  then the stale shards (still listed by the old manifest), then the manifest itself.

  Args:
    output_dir: The output folder; created if missing.
    plans: Every shard of this conversion.
    info: This conversion's dataset; with it, another dataset in the folder (or splits this
      run does not write) is refused unless `overwrite` (check_replacement).
    overwrite: --overwrite.

  Returns:
    {shard file: its result} for the shards kept from earlier runs.

  Raises:
    DataPrepError: `output_dir` is not a folder, is a model directory, holds files that are
      not data_prep's, or holds another dataset without `overwrite`.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise DataPrepError(f"--output_dir={output_dir} exists and is not a folder")
  problem = model_dir_problem(output_dir)
  if problem:
    raise DataPrepError(problem)
  os.makedirs(output_dir, exist_ok=True)
  check_ownership(output_dir)
  if info is not None:
    check_replacement(output_dir, info, plans, overwrite)
  previous = previous_results(output_dir)
  planned = {plan.file: plan for plan in plans}
  kept: Dict[str, planning.ShardResult] = {}
  for name, result in previous.items():
    plan = planned.get(name)
    path = os.path.join(output_dir, name)
    if (plan is not None and result.plan_sha256 == plan.plan_sha256
        and result.split == plan.split and os.path.isfile(path)
        and writer.sha256_file(path) == result.sha256):
      kept[name] = result
  state_dir = os.path.join(output_dir, writer.STATE_DIR)
  os.makedirs(state_dir, exist_ok=True)
  for result in kept.values():
    # Carry what the old manifest knew into state files before the manifest goes.
    writer.record_state(output_dir, result)
  for name in sorted(os.listdir(output_dir)):
    path = os.path.join(output_dir, name)
    if writer.TEMP_RE.match(name) or name.startswith(manifest_lib.MANIFEST + ".tmp-"):
      os.remove(path)
    elif planning.SHARD_RE.match(name) and name not in kept:  # ours: check_ownership passed
      if name not in planned:
        logging.info("removing %s: not part of this conversion", path)
      os.remove(path)
  manifest_path = os.path.join(output_dir, manifest_lib.MANIFEST)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)
  for name in sorted(os.listdir(state_dir)):
    if name[:-len(".json")] not in kept:
      os.remove(os.path.join(state_dir, name))
  return kept

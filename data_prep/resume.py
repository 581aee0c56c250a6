"""Reusing an output folder: whose files it holds, and which shards an earlier run finished.

A run deletes only what a data_prep run wrote into its --output_dir (the shards listed by its
manifest.json or recorded in its state folder, and its hidden temporary files); anything else
that this tool would delete or overwrite stops the run before it changes anything. A shard is
kept when its plan is unchanged and its file still has the recorded SHA-256; the rest are
removed and written again. See docs/data-format.md.
"""

import json
import os
from typing import Dict, Sequence

from absl import logging

from data_prep import DataPrepError
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import summary as summary_lib
from data_prep import writer


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


def prepare(output_dir: str,
            plans: Sequence[planning.ShardPlan]) -> Dict[str, planning.ShardResult]:
  """Finds the verified shards to keep, then removes stale files.

  Removes only what earlier runs wrote (see check_ownership), in an order that keeps every
  remaining shard recorded somewhere if this run is killed: state files for the kept shards,
  then the stale shards (still listed by the old manifest), then the manifest itself.

  Args:
    output_dir: The output folder; created if missing.
    plans: Every shard of this conversion.

  Returns:
    {shard file: its result} for the shards kept from earlier runs.

  Raises:
    DataPrepError: `output_dir` is not a folder, or holds files that are not data_prep's.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise DataPrepError(f"--output_dir={output_dir} exists and is not a folder")
  os.makedirs(output_dir, exist_ok=True)
  check_ownership(output_dir)
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

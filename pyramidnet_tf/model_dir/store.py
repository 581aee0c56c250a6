"""Saving and loading a PyramidNet together with what rebuilds it.

A model directory holds TF checkpoints (``ckpt-N``, found through the
``checkpoint`` state file, or on disk when that file is missing or names a
checkpoint that is gone) whose object graph has the network under ``model``,
plus ``model_config.json``: the constructor arguments and metadata such as
where the weights came from. Any tool (evaluate, export, fine-tuning) can then
rebuild the network without being told its depth and alpha again.

``model_config.json`` is written after the directory's first checkpoint (here
and by the trainer), so a directory that has one once held a checkpoint.
"""

import json
import os
import re
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.model import network as model_lib

CONFIG_FILE = "model_config.json"
CHECKPOINT_PREFIX = "ckpt"
STATE_FILE = "checkpoint"
# ckpt-N.index and ckpt-N.data-SSSSS-of-TTTTT (a save renames the data into
# place, then writes the index).
_CHECKPOINT_FILE = re.compile(
    r"^ckpt-(\d+)\.(?:index|data-\d{5}-of-\d{5})$")


def write_config(directory: str, model: model_lib.PyramidNet,
                 metadata: Optional[Dict[str, Any]] = None) -> str:
  """Writes ``model_config.json`` (atomically) and returns its path.

  Args:
    directory: the model directory (created if missing; local or remote).
    model: the network; its ``config_of`` becomes the "model" section.
    metadata: JSON-serialisable extras (weights' origin, preprocessing,
      class names, ...), the "metadata" section; None = empty.
  """
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, CONFIG_FILE)
  payload = {"model": model_lib.config_of(model), "metadata": metadata or {}}
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return path


def read_config(directory: str) -> Dict[str, Any]:
  """The parsed ``model_config.json`` of ``directory``.

  Args:
    directory: a model directory.

  Returns:
    A dict with "model" (constructor arguments) and "metadata".

  Raises:
    FileNotFoundError: if the directory has no ``model_config.json``.
  """
  path = os.path.join(directory, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {directory} is not a pyramidnet-tf model "
        "directory (expected one written by pyramidnet_tf.train or "
        "pyramidnet_tf.import_torch)")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def save_model(model: model_lib.PyramidNet, directory: str,
               metadata: Optional[Dict[str, Any]] = None,
               step: int = 0) -> str:
  """Writes the weights as checkpoint ``ckpt-<step>``, then the config.

  Args:
    model: the network to save (under the checkpoint key ``model``).
    directory: the model directory; earlier checkpoints are kept.
    metadata: the config's "metadata" section (see ``write_config``).
    step: N of ``ckpt-N``.

  Returns:
    The checkpoint's prefix.
  """
  checkpoint = tf.train.Checkpoint(model=model)
  manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=None)
  path = manager.save(checkpoint_number=step)
  write_config(directory, model, metadata)
  return path


def checkpoints_on_disk(directory: str) -> List[str]:
  """Prefixes (``<directory>/ckpt-N``) with any file on disk, newest first.

  Found by listing the directory, not through the state file, so that a
  missing, empty or stale ``checkpoint`` file hides nothing.

  Args:
    directory: a model directory; a missing one has no checkpoints.
  """
  if not tf.io.gfile.isdir(directory):
    return []
  steps = set()
  for name in tf.io.gfile.listdir(directory):
    match = _CHECKPOINT_FILE.match(name.rstrip("/"))
    if match:
      steps.add(int(match.group(1)))
  return [os.path.join(directory, f"{CHECKPOINT_PREFIX}-{step}")
          for step in sorted(steps, reverse=True)]


def step_of(prefix: str) -> int:
  """N of a ``.../ckpt-N`` prefix.

  Args:
    prefix: a checkpoint path ending in ``-N`` (without suffix).
  """
  return int(os.path.basename(prefix).rsplit("-", 1)[1])


def latest_checkpoint(directory: str) -> Optional[str]:
  """The state file's latest checkpoint, else the newest with an index.

  Unlike ``tf.train.latest_checkpoint`` this survives an empty or garbled
  state file and one naming a deleted checkpoint.

  Args:
    directory: a model directory.

  Returns:
    A checkpoint prefix, or None if there is none.
  """
  try:
    path = tf.train.latest_checkpoint(directory)
  except (ValueError, tf.errors.OpError):
    path = None
  if path is not None:
    return path
  for prefix in checkpoints_on_disk(directory):
    if tf.io.gfile.exists(prefix + ".index"):
      return prefix
  return None


def find_checkpoint(directory: str, requested: Optional[str] = None) -> str:
  """The checkpoint to load: ``requested`` (a prefix, ``.index`` allowed,
  absolute or relative to ``directory``), or the latest one.

  Args:
    directory: the model directory.
    requested: --checkpoint, or None / "" for the latest.

  Returns:
    A checkpoint prefix whose ``.index`` exists.

  Raises:
    FileNotFoundError: with one line naming what was asked for and listing
      the checkpoints ``directory`` has.
  """
  if requested:
    prefix = requested[:-len(".index")] if requested.endswith(
        ".index") else requested
    for candidate in (prefix, os.path.join(directory, prefix)):
      if tf.io.gfile.exists(candidate + ".index"):
        return candidate
    found = [os.path.basename(p) for p in checkpoints_on_disk(directory)
             if tf.io.gfile.exists(p + ".index")]
    raise FileNotFoundError(
        f"--checkpoint={requested}: no such checkpoint (no {prefix}.index); "
        f"{directory} has " + (", ".join(found) if found else "none") +
        (f" (pass e.g. --checkpoint={os.path.join(directory, found[0])}, or "
         "omit --checkpoint for the latest)" if found else ""))
  path = latest_checkpoint(directory)
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {directory} (no ckpt-N.index "
                            "files)")
  return path


def load_model(directory: str, checkpoint_path: Optional[str] = None
               ) -> Tuple[model_lib.PyramidNet, Dict[str, Any]]:
  """Rebuilds the model of ``directory`` and restores its latest weights.

  Args:
    directory: a model directory written by the trainer or import_torch.
    checkpoint_path: a checkpoint to load instead of the latest (see
      ``find_checkpoint``).

  Returns:
    (model, metadata). Every model variable must be present in the
    checkpoint; optimizer slots and counters of training checkpoints are
    allowed and ignored. Constructor args absent from an older
    ``model_config.json`` (e.g. ``shakedrop*``) take their defaults, which
    rebuild the network that config was written for.

  Raises:
    FileNotFoundError: if the config or the checkpoint is missing.
    ValueError: if the config's arguments are invalid (``PyramidNet``).
    AssertionError: if the checkpoint lacks a model variable.
  """
  config = read_config(directory)
  model = model_lib.PyramidNet(**config["model"])
  path = find_checkpoint(directory, checkpoint_path)
  status = tf.train.Checkpoint(model=model).read(path)
  status.expect_partial()
  status.assert_existing_objects_matched()
  return model, config.get("metadata", {})

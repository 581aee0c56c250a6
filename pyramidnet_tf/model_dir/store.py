"""Saving and loading a PyramidNet together with what rebuilds it.

A model directory holds TF checkpoints (``ckpt-N``, found through the
``checkpoint`` state file, or on disk when that file is missing or names a
checkpoint that is gone) whose object graph has the network under ``model``,
plus ``model_config.json``: the constructor arguments and metadata such as
where the weights came from. Any tool (evaluate, export, fine-tuning) can then
rebuild the network without being told its depth and alpha again.

``model_config.json`` is written after the directory's first checkpoint (here
and by the trainer), so a directory that has one once held a checkpoint.

``open_model`` (also ``pyramidnet_tf.model_dir.open_model``) is how every
reader of a model directory (evaluate, export, export_torch, fine-tuning's
``--init_from``, ``pyramidnet_tf.load_model``) gets its network: the newest
intact checkpoint (``checkpoint_problem``: index readable, every tensor
passing its checksum, every float finite), with a warning naming each newer
one it skipped, as the trainer resumes; a checkpoint asked for by name
("best" included) must be intact; and the raw or the averaged (EMA) weights
of that checkpoint, as ``use_ema`` says.
"""

import dataclasses
import json
import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import best as best_lib
from pyramidnet_tf.model_dir import ema as ema_lib

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


def find_checkpoint(directory: str, requested: Optional[str] = None, *,
                    flag: str = "checkpoint") -> str:
  """The checkpoint to load: ``requested`` (a prefix, ``.index`` allowed,
  absolute or relative to ``directory``, or ``best``: the best evaluation's,
  ``model_dir.best``), or the latest one.

  Args:
    directory: the model directory.
    requested: --checkpoint, or None / "" for the latest.
    flag: the flag ``requested`` came from, for messages (the trainer's is
      ``init_checkpoint``).

  Returns:
    A checkpoint prefix whose ``.index`` exists.

  Raises:
    FileNotFoundError: with one line naming what was asked for and listing
      the checkpoints ``directory`` has.
  """
  if requested == best_lib.NAME:
    prefix = best_lib.checkpoint_prefix(directory)
    if prefix is None:
      raise FileNotFoundError(
          f"--{flag}=best: {directory} keeps no best checkpoint (no "
          f"{best_lib.SUBDIR}/{best_lib.RECORD} naming an existing one; the "
          f"trainer keeps one when it evaluates); omit --{flag} for the "
          "newest")
    return prefix
  if requested:
    prefix = requested[:-len(".index")] if requested.endswith(
        ".index") else requested
    for candidate in (prefix, os.path.join(directory, prefix)):
      if tf.io.gfile.exists(candidate + ".index"):
        return candidate
    found = [os.path.basename(p) for p in checkpoints_on_disk(directory)
             if tf.io.gfile.exists(p + ".index")]
    raise FileNotFoundError(
        f"--{flag}={requested}: no such checkpoint (no {prefix}.index); "
        f"{directory} has " + (", ".join(found) if found else "none") +
        (f" (pass e.g. --{flag}={os.path.join(directory, found[0])}, or "
         f"omit --{flag} for the latest)" if found else ""))
  path = latest_checkpoint(directory)
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {directory} (no ckpt-N.index "
                            "files)")
  return path


def _first_line(error: BaseException, limit: int = 240) -> str:
  text = str(error).strip().splitlines()
  line = text[0] if text else type(error).__name__
  return line if len(line) <= limit else line[:limit] + "..."


def checkpoint_problem(prefix: str) -> Optional[Tuple[str, str]]:
  """Why checkpoint ``prefix`` cannot be used, or None if it is intact.

  Reads every tensor once.

  Args:
    prefix: a checkpoint path without suffix, ``<model_dir>/ckpt-N``.

  Returns:
    None if intact, else (kind, reason): kind "index" when the index is
    missing or does not open (what a save killed before its end leaves),
    "data" when the index opens, so the save finished, but a tensor is
    missing, fails its checksum (truncation, corruption) or holds NaN/Inf;
    reason is a phrase for messages.
  """
  if not tf.io.gfile.exists(prefix + ".index"):
    return "index", "its .index file is missing"
  # Any exception: the reader raises OpError, ValueError, IndexError ("Read
  # less bytes than requested") and more, all meaning "not intact".
  try:
    reader = tf.train.load_checkpoint(prefix)
    dtypes = reader.get_variable_to_dtype_map()
  except Exception as e:  # pylint: disable=broad-except
    return "index", f"its index does not open ({_first_line(e)})"
  for name in sorted(dtypes):
    try:
      value = reader.get_tensor(name)
    except Exception as e:  # pylint: disable=broad-except
      return "data", f"{name} cannot be read ({_first_line(e)})"
    if dtypes[name].is_floating and not np.all(np.isfinite(
        np.asarray(value, np.float64))):
      return "data", f"{name} holds NaN/Inf"
  return None


def newest_intact(directory: str) -> Optional[str]:
  """The newest checkpoint of ``directory`` that ``checkpoint_problem``
  passes, or None.

  Args:
    directory: the model directory whose ``ckpt-N`` files are scanned.
  """
  for prefix in checkpoints_on_disk(directory):
    if checkpoint_problem(prefix) is None:
      return prefix
  return None


@dataclasses.dataclass(frozen=True)
class OpenedModel:
  """A model directory's network with the weights of one checkpoint.

  Attributes:
    model: the ``PyramidNet`` rebuilt from ``model_config.json``.
    metadata: the config's "metadata" section.
    config: the whole parsed ``model_config.json``.
    checkpoint: the prefix of the checkpoint restored.
    skipped: (prefix, reason) of every newer checkpoint passed over.
    ema: whether ``model`` holds the checkpoint's exponential moving
      average of the weights instead of the raw ones.
  """
  model: model_lib.PyramidNet
  metadata: Dict[str, Any]
  config: Dict[str, Any]
  checkpoint: str
  skipped: Tuple[Tuple[str, str], ...] = ()
  ema: bool = False


def open_model(directory: str, checkpoint: Optional[str] = None,
               warn: Callable[[str], None] = logging.warning, *,
               use_ema: str = "no", ema_required: bool = True,
               flag: str = "checkpoint") -> OpenedModel:
  """Rebuilds the model of ``directory`` with one checkpoint's weights.

  Args:
    directory: a model directory written by the trainer or import_torch.
    checkpoint: --checkpoint: a prefix (``.index`` allowed, absolute or
      relative to ``directory``) or "best" (the best evaluation's, kept in
      ``<directory>/best``); None / "" for the newest intact one.
    warn: called with one line when newer checkpoints were skipped.
    use_ema: "auto" (the averaged weights when the run recorded an
      ``--ema_decay``), "yes" or "no" (``model_dir.ema.should_use``).
    ema_required: with the averaged weights chosen, a checkpoint without
      them is an error; False takes the raw weights instead (fine-tuning's
      source).
    flag: the flag ``checkpoint`` came from, for messages.

  Returns:
    The ``OpenedModel``. Optimizer slots and counters of training
    checkpoints are left in the checkpoint.

  Raises:
    FileNotFoundError: if the config is missing, ``checkpoint`` does not
      exist, or the directory has no checkpoint at all.
    ValueError: if ``checkpoint`` is damaged, no checkpoint is intact, the
      checkpoint does not fit ``model_config.json``, ``use_ema`` is not a
      choice, or the averaged weights are required and absent; one line
      naming the checkpoint and what is wrong.
  """
  opened = _open_raw(directory, checkpoint, warn, flag)
  if use_ema == "no":
    return opened
  # The EMA's checkpoint layout is the trainer's (model_dir.ema).
  averaged = ema_lib.should_use(use_ema, opened.metadata)
  if averaged and not ema_required:
    averaged = ema_lib.checkpoint_has_averages(opened.checkpoint)
  if averaged:
    try:
      ema_lib.load_averages(opened.model, opened.checkpoint)
    except (AssertionError, tf.errors.OpError) as e:
      raise ValueError(
          f"{opened.checkpoint} does not fit "
          f"{os.path.join(directory, CONFIG_FILE)} ({_first_line(e, 200)})"
      ) from None
  return dataclasses.replace(opened, ema=averaged)


def _open_raw(directory: str, requested: Optional[str],
              warn: Callable[[str], None], flag: str) -> OpenedModel:
  """``open_model`` with the raw weights."""
  config = read_config(directory)
  skipped = []
  if requested:
    path = find_checkpoint(directory, requested, flag=flag)
    found = checkpoint_problem(path)
    if found is not None:
      intact = newest_intact(directory)
      raise ValueError(
          f"--{flag}={requested}: {path} is damaged ({found[1]}); "
          + (f"the newest intact checkpoint is {intact}: pass it, or omit "
             f"--{flag} to use it" if intact else
             f"{directory} holds no intact checkpoint"))
  else:
    path = None
    for prefix in checkpoints_on_disk(directory):
      found = checkpoint_problem(prefix)
      if found is None:
        path = prefix
        break
      skipped.append((prefix, found[1]))
    if path is None:
      if not skipped:
        raise FileNotFoundError(f"no checkpoint in {directory} (no "
                                "ckpt-N.index files)")
      raise ValueError(
          f"{directory} holds no intact checkpoint (" + "; ".join(
              f"{os.path.basename(p)}: {r}" for p, r in skipped) + ")")
    if skipped:
      warn(f"using {path}, the newest intact checkpoint of {directory}; "
           "skipped " + "; ".join(f"{os.path.basename(p)}: {r}"
                                  for p, r in skipped))
  model = model_lib.PyramidNet(**config["model"])
  try:
    status = tf.train.Checkpoint(model=model).read(path)
    status.expect_partial()
    status.assert_existing_objects_matched()
  except (AssertionError, tf.errors.OpError) as e:
    raise ValueError(f"{path} does not fit {os.path.join(directory, CONFIG_FILE)}"
                     f" ({_first_line(e, 200)})") from None
  return OpenedModel(model=model, metadata=config.get("metadata", {}),
                     config=config, checkpoint=path, skipped=tuple(skipped))


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

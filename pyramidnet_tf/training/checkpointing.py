"""Training checkpoints: resume, model-config checks, multi-worker saves.

Why: the checkpoint holds ``model`` (the key ``model_dir.open_model`` reads),
``optimizer`` (momentum slots), ``global_step`` (a scalar int64 variable: the
schedule and input positions are functions of it) and, for float16, the loss
scale. Saving reads ON_READ BN statistics, which all-reduces across workers,
so every worker saves: the chief into ``model_dir``, the others into a
temporary ``workertemp_*`` directory that is deleted right after.

Reliability rules:

* Every float variable of the checkpoint (weights, BN moving statistics,
  optimizer slots, EMA averages with their BN statistics, the loss scale) is
  checked for NaN/Inf after each host call of the loop and before each save
  (``checkpoint_checks.FiniteGuard``); non-finite values stop training and
  are never written.
* Resuming scans the ``ckpt-N`` files on disk, newest first, and takes the
  newest intact one (index readable, every tensor passing its checksum, all
  floats finite). The ``checkpoint`` state file is only a hint: a missing,
  empty or stale one hides nothing, and it is rewritten to list the on-disk
  checkpoints up to the one resumed from, so rotation never deletes the
  checkpoint resumed from or one that is newer.
* A directory that once held a checkpoint (its ``model_config.json``, written
  after the first checkpoint, or its state file, or a checkpoint whose index
  opens) but holds no intact one is refused rather than restarted at step 0.
  A directory with only the leftovers of an interrupted first save starts at
  step 0: nothing was lost.
* Leftovers of saves killed midway (``ckpt-N_temp/``, state-file temporaries)
  are removed at start; a save that fails (disk full) removes its partial
  files and leaves the previous checkpoint in place.
"""

import logging
import os
import re
from typing import Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

from pyramidnet_tf import errors
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.training import checkpoint_checks

# What TensorFlow leaves when a save of ``ckpt-N`` is killed: its temporary
# shard directory, and the state file's atomic-write temporary.
_SAVE_TEMP_DIR = re.compile(r"^ckpt-\d+_temp$")
_STATE_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]{32}$")
_CONFIG_TEMP = model_io.CONFIG_FILE + ".tmp"

# The integrity checks' names, where the trainer's callers know them.
CheckpointError = checkpoint_checks.CheckpointError
NonFiniteWeightsError = checkpoint_checks.NonFiniteWeightsError
ConfigMismatchError = checkpoint_checks.ConfigMismatchError
TRAINER_SOURCE = checkpoint_checks.TRAINER_SOURCE
check_config = checkpoint_checks.check_config
last_good_text = checkpoint_checks.last_good_text


class NoUsableCheckpointError(CheckpointError):
  """The model dir had checkpoints but none of them can be resumed from."""


class CheckpointWriteError(CheckpointError):
  """A save failed on the filesystem (e.g. a full disk)."""


def _first_line(error: BaseException, limit: int = 240) -> str:
  text = str(error).strip().splitlines()
  line = text[0] if text else type(error).__name__
  return line if len(line) <= limit else line[:limit] + "..."



class Checkpointer:
  """Restores the newest intact chief checkpoint; saves from every worker.

  The one object through which the trainer reads and writes checkpoints, so
  that the reliability rules of the module docstring (NaN/Inf guard,
  resuming from the newest intact checkpoint, refusing directories that
  lost theirs, cleaning up killed saves) hold for every save and restore.
  """

  def __init__(self, model_dir: str, strategy: tf.distribute.Strategy,
               checkpoint: tf.train.Checkpoint, global_step: tf.Variable,
               keep: int = 5, guarded_variables: Sequence[tf.Variable] = (),
               optional=()):
    """Sets up the NaN/Inf guard; touches nothing on disk yet.

    Args:
      model_dir: the training directory (the chief's checkpoints).
      strategy: the distribution strategy; decides whether this worker is
        the chief and where a non-chief writes its temporary copy.
      checkpoint: what is saved and restored (model, optimizer, step, ...).
      global_step: the int64 step variable; saves are numbered by it.
      keep: checkpoints the chief keeps (--keep_checkpoints), >= 1.
      guarded_variables: checked for NaN/Inf besides every float variable
        of ``checkpoint``.
      optional: names of ``checkpoint``'s objects that older checkpoints
        may lack (e.g. ``ema`` when resuming with a new --ema_decay); they
        keep their values, ``restored_all`` turns False and
        ``missing_optional`` names them.

    Raises:
      ValueError: if ``keep < 1``.
    """
    if keep < 1:
      raise ValueError(f"--keep_checkpoints must be >= 1; got {keep}")
    self.model_dir = model_dir
    self.optional = tuple(optional)
    self.restored_all = True
    self.missing_optional: Tuple[str, ...] = ()
    self.strategy = strategy
    self.checkpoint = checkpoint
    self.global_step = global_step
    self.keep = keep
    self.chief = distribute.is_chief(strategy)
    self._manager = None
    self._after_first_save = None
    self._before_each_save = None
    self._after_each_save = None
    self._save_started: List[Callable[[int], None]] = []
    guarded = checkpoint_checks.checkpoint_variables(checkpoint)
    known = {id(v) for v in guarded}
    guarded += [v for v in guarded_variables if id(v) not in known]
    self.guard = checkpoint_checks.FiniteGuard(model_dir, guarded)

  def latest(self) -> Optional[str]:
    """The latest checkpoint of ``model_dir`` (``store.latest_checkpoint``)."""
    return model_io.latest_checkpoint(self.model_dir)

  # Resume.

  def _remove_leftovers(self) -> None:
    """Deletes what saves killed midway left (only TF's own temp names)."""
    if not self.chief:
      # This worker's own temporary directory, left by a killed save.
      distribute.remove_temp_dir(
          distribute.write_dir(self.model_dir, self.strategy), self.model_dir)
      return
    if not tf.io.gfile.isdir(self.model_dir):
      return
    for name in tf.io.gfile.listdir(self.model_dir):
      name = name.rstrip("/")
      path = os.path.join(self.model_dir, name)
      if _SAVE_TEMP_DIR.match(name) and tf.io.gfile.isdir(path):
        logging.warning("removing %s: left by a save that did not finish",
                        path)
        tf.io.gfile.rmtree(path)
      elif (_STATE_TEMP.match(name) or name == _CONFIG_TEMP) and (
          not tf.io.gfile.isdir(path)):
        logging.warning("removing %s: left by a write that did not finish",
                        path)
        tf.io.gfile.remove(path)

  def _state_path(self) -> str:
    return os.path.join(self.model_dir, model_io.STATE_FILE)

  def _state_problem(self, chosen: Optional[str]) -> Optional[str]:
    """What is wrong with the state file given the checkpoint resumed."""
    if not tf.io.gfile.exists(self._state_path()):
      return f"{self._state_path()} is missing"
    try:
      named = tf.train.get_checkpoint_state(self.model_dir)
    except (ValueError, tf.errors.OpError):
      named = None
    if named is None or not named.model_checkpoint_path:
      return f"{self._state_path()} is empty or unreadable"
    named_name = os.path.basename(named.model_checkpoint_path)
    if chosen is None or named_name != os.path.basename(chosen):
      return (f"{self._state_path()} names {named_name}, which is gone or "
              "damaged")
    return None

  def _write_state(self, resumed: str) -> None:
    """Rewrites the state file: ``resumed`` latest, listing the on-disk
    checkpoints up to it (oldest first, as CheckpointManager rotates)."""
    step = model_io.step_of(resumed)
    kept = [p for p in reversed(model_io.checkpoints_on_disk(self.model_dir))
            if model_io.step_of(p) <= step and tf.io.gfile.exists(
                p + ".index")]
    lines = [f'model_checkpoint_path: "{os.path.basename(resumed)}"']
    lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"'
              for p in kept]
    # Timestamps after last_preserved_timestamp (0) make the manager rotate
    # the listed checkpoints; without them it would keep them forever.
    lines += ["all_model_checkpoint_timestamps: "
              f"{tf.io.gfile.stat(p + '.index').mtime_nsec / 1e9:.3f}"
              for p in kept]
    temp = self._state_path() + ".tmp" + os.urandom(16).hex()
    with tf.io.gfile.GFile(temp, "w") as f:
      f.write("\n".join(lines) + "\n")
    tf.io.gfile.rename(temp, self._state_path(), overwrite=True)

  def _find_resumable(self) -> Optional[str]:
    """The newest intact checkpoint; raises NoUsableCheckpointError if the
    directory shows it had one but none is intact."""
    skipped = []
    chosen = None
    for prefix in model_io.checkpoints_on_disk(self.model_dir):
      found = model_io.checkpoint_problem(prefix)
      if found is None:
        chosen = prefix
        break
      skipped.append((prefix, found))
    for prefix, (_, reason) in skipped:
      logging.warning("skipping checkpoint %s: %s", prefix, reason)
    state_problem = self._state_problem(chosen)
    if chosen is not None:
      if skipped or state_problem:
        why = [f"{os.path.basename(p)}: {r}" for p, (_, r) in skipped]
        if state_problem:
          why.append(state_problem)
        logging.warning("resuming from %s, the newest intact checkpoint%s",
                        chosen, f" ({'; '.join(why)})" if why else "")
      return chosen
    config = os.path.join(self.model_dir, model_io.CONFIG_FILE)
    evidence = [f"{config} exists"] if tf.io.gfile.exists(config) else []
    if tf.io.gfile.exists(self._state_path()):
      evidence.append(f"{self._state_path()} exists")
    if evidence or any(kind == "data" for _, (kind, _) in skipped):
      found = [f"{os.path.basename(p)}: {reason}"
               for p, (_, reason) in skipped] or ["no ckpt-N files"]
      raise NoUsableCheckpointError(
          f"--model_dir={self.model_dir} held checkpoints but has no intact "
          f"one ({'; '.join(evidence + found)}); refusing to restart it from "
          "step 0. To resume, put an intact ckpt-N.index/.data pair back; "
          "to start over, delete the directory or pass a new --model_dir")
    if skipped:
      logging.warning("%s holds only an interrupted first save; starting "
                      "from step 0", self.model_dir)
    return None

  def restore(self) -> Optional[str]:
    """Restores the newest intact checkpoint, if any; returns its path.

    Also removes leftovers of killed saves and, on the chief, rewrites the
    state file. Every worker restores from the chief's ``model_dir``.

    Returns:
      The checkpoint's prefix, or None when training starts at step 0.

    Raises:
      NoUsableCheckpointError: the directory held checkpoints but none is
        intact (see the module docstring).
      ConfigMismatchError: the checkpoint does not fit the model (e.g. a
        model_dir whose model_config.json was deleted, resumed with other
        flags).
    """
    self._remove_leftovers()
    path = self._find_resumable()
    if path is not None and self.chief:
      self._write_state(path)
    if self.chief:
      self._open_manager()
    if path is None:
      return None
    names = {name.split("/")[0] for name, _ in tf.train.list_variables(path)}
    missing = {name: getattr(self.checkpoint, name) for name in self.optional
               if name not in names and hasattr(self.checkpoint, name)}
    self.restored_all = not missing
    self.missing_optional = tuple(sorted(missing))
    for name in missing:
      delattr(self.checkpoint, name)   # untracked while restoring
    try:
      mismatches = checkpoint_checks.shape_mismatches(self.checkpoint, path)
      if mismatches:
        raise ConfigMismatchError(self._mismatch_text(
            path, "; ".join(mismatches[:3]) + (
                f"; and {len(mismatches) - 3} more" if len(mismatches) > 3
                else "")))
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (ValueError, AssertionError, tf.errors.OpError) as e:
      if isinstance(e, ConfigMismatchError):
        raise
      raise ConfigMismatchError(
          self._mismatch_text(path, _first_line(e, 160))) from None
    finally:
      for name, value in missing.items():
        setattr(self.checkpoint, name, value)
    return path

  def _mismatch_text(self, path: str, details: str) -> str:
    config = os.path.join(self.model_dir, model_io.CONFIG_FILE)
    hint = ("resume with the model flags it was trained with" if
            tf.io.gfile.exists(config) else
            f"it has no {model_io.CONFIG_FILE} to say which model flags made"
            " it: resume with those")
    return (f"--model_dir={self.model_dir}: checkpoint {path} does not fit "
            f"the model the flags build ({details}); {hint}, or use a new "
            "--model_dir")

  def _open_manager(self):
    if self._manager is None:
      self._manager = tf.train.CheckpointManager(
          self.checkpoint, self.model_dir, max_to_keep=self.keep)
    return self._manager

  def after_first_save(self, callback) -> None:
    """Calls ``callback`` once, after the next save succeeds (chief).

    Args:
      callback: called with no arguments; replaces any earlier one.
    """
    self._after_first_save = callback

  def around_saves(self, before=None, after=None) -> None:
    """Calls ``before()`` before and ``after()`` after every save (chief).

    Args:
      before: called before anything is written; an exception it raises
        stops the save (and the run) with nothing written.
      after: called once a save succeeded, after ``after_first_save``'s
        callback.
    """
    self._before_each_save = before
    self._after_each_save = after

  def on_save_start(self, callback: Callable[[int], None]) -> None:
    """Calls ``callback(step)`` at the start of every save, on every worker
    (after the NaN/Inf check, before anything is written).

    Args:
      callback: added to those given before.
    """
    self._save_started.append(callback)

  # NaN/Inf guard.

  def check_finite(self, step: int, since: Optional[int] = None) -> None:
    """Stops the run when a checkpointed variable holds NaN/Inf
    (``checkpoint_checks.FiniteGuard.check``).

    Every worker must call it at the same step (ON_READ reads all-reduce).

    Args:
      step: the current global step, for the message.
      since: the step of the previous check, for the message.

    Raises:
      NonFiniteWeightsError: if any guarded variable holds NaN/Inf.
    """
    self.guard.check(step, since)

  # Save.

  def save(self) -> Optional[str]:
    """Saves at the current global step; returns the chief's path.

    Every worker must call it at the same step: the chief writes
    ``<model_dir>/ckpt-N``, the others a temporary copy that is deleted.

    Returns:
      The chief's checkpoint prefix; None on the other workers.

    Raises:
      NonFiniteWeightsError: instead of writing NaN/Inf values (a finite
        loss at step s-1 does not prove the update to step s was).
      CheckpointWriteError: after removing the partial files, when the
        filesystem refuses the write.
    """
    step = int(self.global_step.numpy())
    self.check_finite(step)
    for callback in self._save_started:
      callback(step)
    if self.chief:
      if self._before_each_save is not None:
        self._before_each_save()
      manager = self._open_manager()
      try:
        path = manager.save(checkpoint_number=step)
      except (tf.errors.OpError, OSError) as e:
        if self._before_each_save is not None:
          # The directory may have gone away during the save: say that.
          self._before_each_save()
        reason = _write_failure(e)
        if reason is None:
          raise
        self._remove_partial(step)
        raise CheckpointWriteError(
            f"--model_dir={self.model_dir}: {reason} while writing "
            f"checkpoint ckpt-{step}; removed its partial files. "
            f"{last_good_text(self.model_dir)} Free space (or fix the "
            "directory) and rerun the same command.") from None
      if self._after_first_save is not None:
        callback, self._after_first_save = self._after_first_save, None
        callback()
      if self._after_each_save is not None:
        self._after_each_save()
      return path
    temp = distribute.write_dir(self.model_dir, self.strategy)
    manager = tf.train.CheckpointManager(self.checkpoint, temp, max_to_keep=1)
    try:
      manager.save(checkpoint_number=step)
    finally:
      distribute.remove_temp_dir(temp, self.model_dir)
    return None

  def _remove_partial(self, step: int) -> None:
    """Deletes what a failed save of ``step`` left, unless it is intact."""
    prefix = os.path.join(self.model_dir, f"{model_io.CHECKPOINT_PREFIX}-"
                          f"{step}")
    temp = prefix + "_temp"
    if tf.io.gfile.isdir(temp):
      tf.io.gfile.rmtree(temp)
    if model_io.checkpoint_problem(prefix) is None:
      return
    for path in tf.io.gfile.glob(prefix + ".*"):
      tf.io.gfile.remove(path)


def _write_failure(error: BaseException) -> Optional[str]:
  """A short reason when ``error`` is the filesystem refusing a write."""
  problem = errors.storage_problem(error)
  if problem is None:
    return None
  _, reason, no_space = problem
  return f"the disk is full ({reason})" if no_space else reason

"""Training checkpoints: resume, model-config checks, multi-worker saves.

Why: the checkpoint holds ``model`` (the key ``model_io.load_model`` reads),
``optimizer`` (momentum slots), ``global_step`` (a scalar int64 variable: the
schedule and input positions are functions of it) and, for float16, the loss
scale. Saving reads ON_READ BN statistics, which all-reduces across workers,
so every worker saves: the chief into ``model_dir``, the others into a
temporary ``workertemp_*`` directory that is deleted right after.
"""

import os
from typing import Optional

import tensorflow as tf

from pyramidnet_tf import distribute
from pyramidnet_tf import model as model_lib
from pyramidnet_tf import model_io


class NonFiniteWeightsError(RuntimeError):
  """Refusing to checkpoint NaN/Inf weights."""


class ConfigMismatchError(ValueError):
  """Resuming into a model_dir whose model differs from the flags."""


def check_config(model_dir: str, model) -> None:
  """Raises ConfigMismatchError naming each differing constructor arg."""
  path = os.path.join(model_dir, model_io.CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return
  # Canonical form: configs written before a constructor arg existed (e.g.
  # ShakeDrop's) match a model built with that arg's default.
  saved = model_lib.canonical_config(
      model_io.read_config(model_dir).get("model", {}))
  current = model_lib.canonical_config(model_lib.config_of(model))
  diffs = [f"{key}: {saved.get(key)!r} in {path}, {current.get(key)!r} from "
           "the flags" for key in sorted(set(saved) | set(current))
           if saved.get(key) != current.get(key)]
  if diffs:
    raise ConfigMismatchError(
        f"--model_dir={model_dir} holds a different model; resume with the "
        "same model flags or use a new --model_dir. Differences: " +
        "; ".join(diffs))


class Checkpointer:
  """Restores the latest chief checkpoint; saves from every worker."""

  def __init__(self, model_dir: str, strategy: tf.distribute.Strategy,
               checkpoint: tf.train.Checkpoint, global_step: tf.Variable,
               keep: int = 5, guarded_variables=(), optional=()):
    """``optional``: names of ``checkpoint``'s objects that older
    checkpoints may lack (e.g. ``ema`` when resuming with a new
    --ema_decay); they keep their values and ``restored_all`` turns False."""
    self.model_dir = model_dir
    self.optional = tuple(optional)
    self.restored_all = True
    self.strategy = strategy
    self.checkpoint = checkpoint
    self.global_step = global_step
    self.keep = keep
    self.chief = distribute.is_chief(strategy)
    self._manager = None
    self._guarded = list(guarded_variables)
    self._all_finite = tf.function(lambda: tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(v)) for v in self._guarded]))
    if self.chief:
      self._manager = tf.train.CheckpointManager(
          checkpoint, model_dir, max_to_keep=keep)

  def latest(self) -> Optional[str]:
    return tf.train.latest_checkpoint(self.model_dir)

  def restore(self) -> Optional[str]:
    """Restores the newest checkpoint of model_dir, if any; returns its path."""
    path = self.latest()
    if path is None:
      return None
    names = {name.split("/")[0] for name, _ in tf.train.list_variables(path)}
    missing = {name: getattr(self.checkpoint, name) for name in self.optional
               if name not in names and hasattr(self.checkpoint, name)}
    self.restored_all = not missing
    for name in missing:
      delattr(self.checkpoint, name)   # untracked while restoring
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    finally:
      for name, value in missing.items():
        setattr(self.checkpoint, name, value)
    return path

  def save(self) -> Optional[str]:
    """Saves at the current global step; returns the chief's path.

    Raises NonFiniteWeightsError instead of writing NaN/Inf weights (a
    finite loss at step s-1 does not prove the update to step s was).
    """
    step = int(self.global_step.numpy())
    if self._guarded and not bool(self._all_finite()):
      raise NonFiniteWeightsError(
          f"weights became NaN/Inf at global step {step} (after the update "
          f"from step {step - 1}); not checkpointing them. The last "
          "checkpoint in the model dir is from before. Try a lower --lr or "
          "--dtype=float32.")
    if self.chief:
      return self._manager.save(checkpoint_number=step)
    temp = distribute.write_dir(self.model_dir, self.strategy)
    manager = tf.train.CheckpointManager(self.checkpoint, temp, max_to_keep=1)
    try:
      manager.save(checkpoint_number=step)
    finally:
      distribute.remove_temp_dir(temp, self.model_dir)
    return None

"""Keeps the checkpoint of the best evaluation (``model_dir.best``).

Every worker offers every evaluation (they all hold the same all-reduced
metrics, so they agree on whether it is a new best); all take part in the
write, as in any save of a multi-worker run: the chief writes ``<model_dir>/
best/ckpt-N``, the others a temporary copy that is deleted at once.
"""

import logging
import os
from typing import Optional

import tensorflow as tf

from pyramidnet_tf.model_dir import best as best_lib
from pyramidnet_tf.runtime import distribute

_METRICS = ("top1_error", "top5_error", "loss", "examples")


class BestCheckpoint:
  """The lowest top-1 error so far and its checkpoint."""

  def __init__(self, *, model_dir: str, strategy: tf.distribute.Strategy,
               checkpoint: tf.train.Checkpoint, uses_ema: bool):
    """Reads the record a resumed run left, if any.

    Args:
      model_dir: the run's directory.
      strategy: decides whether this worker is the chief.
      checkpoint: what is written (the training checkpoint's objects).
      uses_ema: the evaluations score the EMA weights (recorded, so that
        tools load the weights that were scored).
    """
    self.model_dir = model_dir
    self.strategy = strategy
    self.checkpoint = checkpoint
    self.uses_ema = uses_ema
    self.chief = distribute.is_chief(strategy)
    record = best_lib.read(model_dir)
    self.best: Optional[dict] = (
        {k: record[k] for k in _METRICS + ("step", "split") if k in record}
        if record else None)
    self.prefix: Optional[str] = record["prefix"] if record else None

  def offer(self, metrics: dict) -> bool:
    """Keeps ``metrics``' weights if they beat every earlier evaluation.

    Args:
      metrics: an evaluation of the current weights (with ``step`` and
        ``split``).

    Returns:
      Whether it is the new best.
    """
    if (self.best is not None and
        metrics["top1_error"] >= self.best["top1_error"]):
      return False
    step = int(metrics["step"])
    name = f"ckpt-{step}"
    if self.chief:
      directory = best_lib.directory_of(self.model_dir)
      tf.io.gfile.makedirs(directory)
      prefix = self.checkpoint.write(os.path.join(directory, name))
      best_lib.write_record(self.model_dir, dict(
          {k: metrics[k] for k in _METRICS if k in metrics},
          step=step, split=metrics["split"], checkpoint=name,
          ema=self.uses_ema))
      for old in tf.io.gfile.glob(os.path.join(directory, "ckpt-*")):
        if not os.path.basename(old).startswith(name + "."):
          tf.io.gfile.remove(old)
      self.prefix = prefix
      logging.info("new best eval (top-1 error %.2f%% at step %d): kept in "
                   "%s", metrics["top1_error"], step, prefix)
    else:
      temp = distribute.write_dir(self.model_dir, self.strategy)
      try:
        self.checkpoint.write(os.path.join(temp, name))
      finally:
        distribute.remove_temp_dir(temp, self.model_dir)
    self.best = dict({k: metrics[k] for k in _METRICS if k in metrics},
                     step=step, split=metrics["split"])
    return True

"""Exponential moving average (EMA) of a model's weights.

    ema <- decay * ema + (1 - decay) * w        after every optimizer step

Why every float variable, BN moving statistics included: evaluating averaged
weights with the raw network's BN statistics mismatches the two (timm's
ModelEmaV2 averages the whole state dict for the same reason).

Why two update paths: trainable variables are mirrored (every replica holds
the same value after the all-reduced update), so their averages are mirrored
too and updated once per variable in a ``merge_call``, as the optimizer's
slots. BN moving statistics are ON_READ (each replica owns its copy, a
cross-replica read averages); their averages are ON_READ with the same
aggregation and each replica averages its own copy. The EMA is linear, so the
cross-replica mean of per-replica averages is the average of the means.

The averages are float32 variables (the model's variables are float32 in
every compute dtype), initialised from the weights when the Ema is built and
checkpointed under ``ema`` (``averages/<i>`` in ``averaged_variables`` order).
Evaluation and export swap them into the model (``swapped``) or copy them
(``load_averages``).
"""

import contextlib
from typing import List, Optional

import tensorflow as tf

from pyramidnet_tf import options

CHECKPOINT_KEY = "ema"
USE_EMA_CHOICES = options.USE_EMA_CHOICES


def averaged_variables(model) -> List[tf.Variable]:
  """The variables an Ema of ``model`` averages, in checkpoint order.

  Args:
    model: the network; every float variable of it is averaged, trainable
      or not (BN moving statistics included).
  """
  return [v for v in model.variables if v.dtype.is_floating]


def _is_on_read(variable) -> bool:
  return variable.synchronization == tf.VariableSynchronization.ON_READ


class _Untracked:
  """A list that tf.Module neither checkpoints nor lists in ``variables``."""

  def __init__(self, items):
    self.items = items


class Ema(tf.Module):
  """Averages of ``variables``; create under the strategy's scope.

  A ``tf.Module`` whose only tracked variables are the averages, so that it
  is checkpointed under ``ema`` without a second copy of the model.
  """

  def __init__(self, variables, decay: float, name: Optional[str] = None,
               fixed=()):
    """Creates one float32 average per variable, set to its current value.

    Args:
      variables: the variables to average, usually
        ``averaged_variables(model)``; their order is the checkpoint order.
      decay: weight of the old average per step, in [0, 1) (--ema_decay;
        0 copies the weights at every update).
      name: module name; prefixes the averages' names.
      fixed: variables (of ``variables``) that do not change, e.g. those
        fine-tuning freezes: their averages are not blended, so they stay
        bit for bit the value ``reset`` copied (blending x with itself can
        round). They still have an average, so checkpoints do not depend
        on what is frozen.

    Raises:
      ValueError: if ``decay`` is outside [0, 1).
    """
    super().__init__(name=name)
    if not 0.0 <= decay < 1.0:
      raise ValueError(f"EMA decay must be in [0, 1) (--ema_decay; 0 = off);"
                       f" got {decay}")
    self.decay = float(decay)
    # Not an attribute tf.Module tracks: the checkpoint would hold the model's
    # variables a second time, under ``ema``.
    self._sources = _Untracked(list(variables))
    fixed_ids = {id(v) for v in fixed}
    self._blended = _Untracked([id(v) not in fixed_ids
                                for v in self._sources.items])
    self.averages = []
    with self.name_scope:
      for v in self._sources.items:
        with tf.init_scope():
          strategy = tf.distribute.get_strategy()
          with strategy.extended.colocate_vars_with(v):
            kwargs = {}
            if _is_on_read(v):
              kwargs = {"synchronization": tf.VariableSynchronization.ON_READ,
                        "aggregation": v.aggregation}
            self.averages.append(tf.Variable(
                tf.zeros(v.shape, tf.float32), trainable=False,
                name=v.name.split(":")[0].replace("/", "_") + "_ema",
                **kwargs))
    self.reset()

  def reset(self):
    """Sets every average to its variable's current value (cross-replica)."""
    for v, average in zip(self._sources.items, self.averages):
      average.assign(tf.cast(v.read_value(), tf.float32))

  def update(self, apply_mask=None):
    """One EMA step; call in a replica context (inside ``strategy.run``).

    Args:
      apply_mask: optional scalar bool tensor; False (a skipped float16
        step) keeps the averages. None always updates.

    Raises:
      RuntimeError: if called in a cross-replica context.
    """
    context = tf.distribute.get_replica_context()
    if context is None:
      raise RuntimeError("Ema.update must run in a replica context")
    for v, average, blended in zip(self._sources.items, self.averages,
                                   self._blended.items):
      if blended and _is_on_read(v):
        average.assign(self._blend(average, v, apply_mask))
    context.merge_call(self._update_mirrored, args=(apply_mask,))

  def _blend(self, average, variable, apply_mask):
    new = (self.decay * average +
           (1.0 - self.decay) * tf.cast(variable, tf.float32))
    if apply_mask is None:
      return new
    return tf.where(apply_mask, new, average)

  def _update_mirrored(self, strategy, apply_mask):
    updates = []
    for v, average, blended in zip(self._sources.items, self.averages,
                                   self._blended.items):
      if not blended or _is_on_read(v):
        continue
      updates.append(strategy.extended.update(
          average, lambda a, w, m: a.assign(self._blend(a, w, m)),
          args=(v, apply_mask), group=True))
    return tf.group(updates)

  @tf.function
  def _swap(self):
    for v, average in zip(self._sources.items, self.averages):
      raw = v.read_value()
      v.assign(tf.cast(average.read_value(), v.dtype))
      average.assign(tf.cast(raw, tf.float32))

  @contextlib.contextmanager
  def swapped(self):
    """Within the block the model holds the averages (cross-replica).

    Exchanges values twice, so the raw weights come back bit for bit.
    """
    self._swap()
    try:
      yield
    finally:
      self._swap()

  def copy_to_model(self):
    """Overwrites the model's variables with the averages (for export)."""
    for v, average in zip(self._sources.items, self.averages):
      v.assign(tf.cast(average.read_value(), v.dtype))


def recorded_decay(metadata: dict) -> float:
  """The --ema_decay a trainer model dir recorded (0.0: none/no EMA).

  Args:
    metadata: the ``metadata`` section of a ``model_config.json``; a
      missing or unparsable "ema_decay" counts as 0.0.
  """
  try:
    return float(metadata.get("ema_decay") or 0.0)
  except (TypeError, ValueError):
    return 0.0


def should_use(use_ema: str, metadata: dict) -> bool:
  """Resolves --use_ema (auto: when the training run kept an EMA).

  Args:
    use_ema: "auto", "yes" or "no".
    metadata: the ``metadata`` section of the model's ``model_config.json``
      (read only for "auto").

  Raises:
    ValueError: for any other ``use_ema``.
  """
  if use_ema not in USE_EMA_CHOICES:
    raise ValueError(f"--use_ema must be one of {', '.join(USE_EMA_CHOICES)};"
                     f" got {use_ema!r}")
  if use_ema == "auto":
    return recorded_decay(metadata) > 0
  return use_ema == "yes"


def checkpoint_has_averages(path: str) -> bool:
  """Whether a checkpoint holds EMA averages (variables under ``ema/``).

  Args:
    path: a checkpoint prefix (``ckpt-N``).
  """
  return any(name.startswith(CHECKPOINT_KEY + "/")
             for name, _ in tf.train.list_variables(path))


def load_averages(model, path: str) -> None:
  """Replaces ``model``'s weights with the EMA stored in checkpoint ``path``.

  Args:
    model: the network, built with the checkpoint's configuration.
    path: a training checkpoint prefix (``ckpt-N``).

  Raises:
    ValueError: the checkpoint holds no EMA (trained without --ema_decay).
  """
  if not checkpoint_has_averages(path):
    raise ValueError(f"{path} holds no EMA weights (trained without "
                     "--ema_decay); pass --use_ema=no to use the raw weights")
  averages = Ema(averaged_variables(model), 0.0, name="ema")
  status = tf.train.Checkpoint(**{CHECKPOINT_KEY: averages}).read(path)
  status.expect_partial()
  status.assert_existing_objects_matched()
  averages.copy_to_model()

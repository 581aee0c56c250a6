"""The inner loop: train and eval steps, ``steps_per_loop`` per host call.

Why this shape (Model Garden's orbit "standard runner"): the host calls one
``tf.function`` that runs many steps in a ``tf.range`` loop, so Python and
dispatch cost are paid once per loop, not per step. Everything that is about
*when* (checkpoints, summaries, evaluation) lives in ``loop.py``.

One train step per replica:
  Cutout, then CutMix / Mixup of the replica's batch (``mixing``), seeded
  statelessly by (--seed, global step, replica id),
  forward/backward in the compute dtype (optionally XLA-compiled),
  loss = sum of per-example (mixed) cross entropy / GLOBAL batch,
  explicit SUM all-reduce of the gradients (so every replica holds the
  gradient of the global mean loss), float16: unscale and skip non-finite
  steps, optional clipping by global norm, then the optimizer update and the
  optional weight EMA on every replica.
Metrics are summed over replicas and steps as one vector laid out as
``STAT_FIELDS`` (loss sum, top-1 correct, top-5 correct, examples; read it
with ``Totals``); with mixed batches top-1/top-5 count the unmixed labels.
A non-finite loss ends the loop early and reports the global step it
happened at. So does a stop request (``preemption.StopSignals``): each
replica adds the host's stop flag to its stats in the same all-reduce, so
every replica and worker ends the loop after the same step.
"""

import dataclasses
from typing import NamedTuple, Optional

import tensorflow as tf

from pyramidnet_tf import options
from pyramidnet_tf.training import loss_scale as loss_scale_lib
from pyramidnet_tf.training import mixing

# What the train and eval steps sum per example, in the order of their stats
# vector (one all-reduce moves all four).
STAT_FIELDS = ("loss_sum", "top1_correct", "top5_correct", "examples")
NUM_STATS = len(STAT_FIELDS)
LOSS_SUM = STAT_FIELDS.index("loss_sum")


class Totals(NamedTuple):
  """A stats vector read on the host, field by field."""
  loss_sum: float
  top1_correct: float
  top5_correct: float
  examples: float

  @classmethod
  def of(cls, vector) -> "Totals":
    """Reads a summed ``[NUM_STATS]`` vector (tensor or array)."""
    values = vector.numpy() if hasattr(vector, "numpy") else vector
    return cls(*(float(x) for x in values))

  def metrics(self) -> dict:
    """loss, top1_error, top5_error (percent) and examples."""
    count = max(self.examples, 1.0)
    return {"loss": self.loss_sum / count,
            "top1_error": 100.0 * (1.0 - self.top1_correct / count),
            "top5_error": 100.0 * (1.0 - self.top5_correct / count),
            "examples": int(round(count))}


def stats_vector(loss_sum, top1_correct, top5_correct, examples) -> tf.Tensor:
  """The ``[NUM_STATS]`` float32 vector of ``STAT_FIELDS``."""
  return tf.stack([loss_sum, top1_correct, top5_correct,
                   tf.cast(examples, tf.float32)])

# Fold-in constants of the per-replica step seed.
_MIXING_STREAM, _MODEL_STREAM = 1, 2

DTYPES = {name: tf.as_dtype(name) for name in options.DTYPES}


def cross_entropy(logits, labels, num_classes: int,
                  label_smoothing: float = 0.0):
  """Per-example cross entropy (float32), with optional label smoothing."""
  logits = tf.cast(logits, tf.float32)
  if label_smoothing:
    targets = tf.one_hot(labels, num_classes)
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return tf.nn.softmax_cross_entropy_with_logits(targets, logits)
  return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)


def mixed_cross_entropy(logits, labels_a, labels_b, lam, num_classes: int,
                        label_smoothing: float = 0.0):
  """lam * CE(labels_a) + (1 - lam) * CE(labels_b), per example (float32).

  Label smoothing applies to each target, i.e. the soft target is
  lam * smooth(a) + (1 - lam) * smooth(b) (cross entropy is linear in it).
  """
  logits = tf.cast(logits, tf.float32)
  lam = tf.cast(lam, tf.float32)
  targets = (lam * tf.one_hot(labels_a, num_classes) +
             (1.0 - lam) * tf.one_hot(labels_b, num_classes))
  if label_smoothing:
    targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
  return tf.nn.softmax_cross_entropy_with_logits(targets, logits)


@dataclasses.dataclass(frozen=True)
class Regularization:
  """Batch mixing, Cutout and gradient clipping of the train step.

  All off by default. ``seed`` is --seed, the root of the stateless per-step
  seeds of mixing, Cutout and the model's (ShakeDrop) randomness.
  """
  cutmix_prob: float = 0.0
  cutmix_beta: float = 1.0
  mixup_alpha: float = 0.0
  cutout_size: int = 0
  clip_grad_norm: float = 0.0
  seed: int = 0

  @property
  def mixes(self) -> bool:
    return (self.cutmix_prob > 0 and self.cutmix_beta > 0) or (
        self.mixup_alpha > 0)


def correct_counts(logits, labels, mask=None):
  """(top-1 correct, top-5 correct) as float32 scalars."""
  k = min(5, int(logits.shape[-1]))
  top1 = tf.cast(tf.math.in_top_k(labels, logits, 1), tf.float32)
  top5 = tf.cast(tf.math.in_top_k(labels, logits, k), tf.float32)
  if mask is not None:
    top1, top5 = top1 * mask, top5 * mask
  return tf.reduce_sum(top1), tf.reduce_sum(top5)


class TrainStep(tf.Module):
  """Builds and runs the training loop function for one strategy."""

  def __init__(self, *, strategy: tf.distribute.Strategy, model, optimizer,
               schedule, global_step: tf.Variable, global_batch: int,
               dtype: str = "float32", label_smoothing: float = 0.0,
               jit_compile: bool = False,
               loss_scale: Optional[loss_scale_lib.DynamicLossScale] = None,
               regularization: Optional[Regularization] = None, ema=None,
               stop_flag: Optional[tf.Variable] = None):
    """Builds the step for ``strategy``.

    Args:
      strategy: the tf.distribute strategy the model was built under.
      model: ``model(images, training, seed)`` returns logits (``seed``: the
        replica's [2] stateless seed of the step, for ShakeDrop).
      optimizer: ``optim.NesterovSGD`` over ``model.trainable_variables``.
      schedule: learning rate as a function of the global step.
      global_step: int64 variable, incremented after every update.
      global_batch: examples per step over all replicas (the loss divisor).
      dtype: compute dtype, one of ``DTYPES``.
      label_smoothing: in [0, 1).
      jit_compile: compile the forward/backward with XLA.
      loss_scale: required for float16, ignored otherwise.
      regularization: batch mixing, Cutout and clipping (default: off).
      ema: optional ``ema.Ema`` of the model, updated after each step.
      stop_flag: optional float32 host variable, set to 1 to end the loop
        after the step in progress (``preemption.StopSignals``); read at
        every step, summed over replicas and workers.
    """
    super().__init__(name="train_step")
    if dtype not in DTYPES:
      raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}; got "
                       f"{dtype!r}")
    if dtype == "float16" and loss_scale is None:
      raise ValueError("float16 needs a DynamicLossScale")
    self.strategy = strategy
    self.model = model
    self.optimizer = optimizer
    self.schedule = schedule
    self.global_step = global_step
    self.global_batch = global_batch
    self.compute_dtype = DTYPES[dtype]
    self.label_smoothing = label_smoothing
    self.loss_scale = loss_scale if dtype == "float16" else None
    self.regularization = regularization or Regularization()
    self.ema = ema
    self.stop_flag = stop_flag
    # All trainable variables but those fine-tuning freezes (no gradient is
    # computed for them, nor backpropagated through a frozen prefix).
    self.variables_to_train = list(getattr(
        optimizer, "trained_variables", model.trainable_variables))
    grads = self._forward_backward
    self._grads = tf.function(grads, jit_compile=True) if jit_compile else grads
    self.loop = tf.function(self._loop)

  def _forward_backward(self, images, labels_a, labels_b, lam, scale,
                        model_seed):
    with tf.GradientTape() as tape:
      logits = self.model(tf.cast(images, self.compute_dtype), training=True,
                          seed=model_seed)
      if self.regularization.mixes:
        per_example = mixed_cross_entropy(
            logits, labels_a, labels_b, lam, self.model.num_classes,
            self.label_smoothing)
      else:
        per_example = cross_entropy(logits, labels_a, self.model.num_classes,
                                    self.label_smoothing)
      loss = tf.reduce_sum(per_example) / self.global_batch
      scaled = loss * scale
    grads = tape.gradient(scaled, self.variables_to_train)
    top1, top5 = correct_counts(logits, labels_a)
    stats = stats_vector(tf.reduce_sum(per_example), top1, top5,
                         tf.shape(labels_a)[0])
    return grads, stats

  def _regularize_batch(self, images, labels, seed) -> mixing.Mixed:
    """Cutout, then CutMix/Mixup (outside the XLA cluster: cheap, dynamic)."""
    reg = self.regularization
    if reg.cutout_size > 0:
      images = mixing.cutout(images, tf.random.experimental.stateless_fold_in(
          seed, 0), reg.cutout_size)
    return mixing.mix_batch(images, labels,
                            tf.random.experimental.stateless_fold_in(seed, 1),
                            reg.cutmix_prob, reg.cutmix_beta, reg.mixup_alpha)

  def _replica_step(self, batch, lr, step):
    images, labels = batch
    scale = (self.loss_scale.scale if self.loss_scale is not None else
             tf.constant(1.0))
    context = tf.distribute.get_replica_context()
    seed = mixing.replica_step_seed(self.regularization.seed, step,
                                    context.replica_id_in_sync_group)
    fold = tf.random.experimental.stateless_fold_in
    mixed = self._regularize_batch(images, labels, fold(seed, _MIXING_STREAM))
    grads, stats = self._grads(mixed.images, mixed.labels_a, mixed.labels_b,
                               mixed.lam, scale, fold(seed, _MODEL_STREAM))
    grads = [tf.cast(g, tf.float32) for g in grads]
    if context.num_replicas_in_sync > 1:
      grads = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    mask = None
    if self.loss_scale is not None:
      grads = self.loss_scale.unscale(grads)
      mask = loss_scale_lib.DynamicLossScale.all_finite(grads)
      self.loss_scale.update(mask)
    if self.regularization.clip_grad_norm > 0:
      # The global-mean gradient, unscaled: torch's clip_grad_norm_ after
      # backward (and GradScaler.unscale_), before the optimizer's L2 term.
      grads, _ = tf.clip_by_global_norm(grads,
                                        self.regularization.clip_grad_norm)
    self.optimizer.apply(grads, lr, apply_mask=mask)
    if self.ema is not None:
      self.ema.update(apply_mask=mask)
    return stats

  def _loop(self, iterator, num_steps):
    """Runs up to ``num_steps`` steps.

    Returns:
      (summed stats, the global step of a non-finite loss or -1, whether a
      stop request ended the loop), the last agreed on by every worker.
    """
    totals = tf.zeros([NUM_STATS])
    bad_step = tf.constant(-1, tf.int64)
    stopped = tf.constant(False)
    for _ in tf.range(num_steps):
      lr = self.schedule(self.global_step)
      stats, stop = with_stop_request(self.strategy, self.stop_flag, lambda: (
          self.strategy.run(
              self._replica_step,
              args=(next(iterator), lr, self.global_step.read_value()))))
      totals += stats
      if not tf.math.is_finite(stats[LOSS_SUM]):
        bad_step = tf.identity(self.global_step.read_value())
        break
      self.global_step.assign_add(1)
      if stop:
        stopped = tf.constant(True)
        break
    return totals, bad_step, stopped


def with_stop_request(strategy, stop_flag, run_step):
  """Runs one distributed step; returns (its summed stats, stop agreed).

  ``run_step()`` returns the replicas' ``[NUM_STATS]`` stats. With a
  ``stop_flag``, each replica appends the flag's value before the one SUM
  all-reduce, so the decision to stop is the same on every worker.
  """
  if stop_flag is None:
    stats = run_step()
    return (strategy.reduce(tf.distribute.ReduceOp.SUM, stats, axis=None),
            tf.constant(False))

  def append_flag(stats):
    return tf.concat([stats, tf.reshape(stop_flag.read_value(), [1])], 0)

  per_replica = run_step()
  combined = strategy.reduce(
      tf.distribute.ReduceOp.SUM,
      strategy.run(append_flag, args=(per_replica,)), axis=None)
  return combined[:NUM_STATS], combined[NUM_STATS] > 0


class EvalStep(tf.Module):
  """Summed eval metrics over a fixed number of (padded) batches."""

  def __init__(self, *, strategy: tf.distribute.Strategy, model,
               dtype: str = "float32",
               stop_flag: Optional[tf.Variable] = None):
    """Builds the step; ``model(images, training=False)`` returns logits.

    Args:
      strategy: the strategy the model was built under.
      model: the network.
      dtype: compute dtype.
      stop_flag: optional host variable; when any worker's is set, every
        worker ends the loop after the batch in progress (a stop request
        during a long evaluation, see ``TrainStep``).
    """
    super().__init__(name="eval_step")
    self.strategy = strategy
    self.model = model
    self.compute_dtype = DTYPES[dtype]
    self.stop_flag = stop_flag
    self.loop = tf.function(self._loop)

  def _replica_step(self, batch):
    images, labels = batch
    mask = tf.cast(labels >= 0, tf.float32)
    safe = tf.maximum(labels, 0)
    logits = self.model(tf.cast(images, self.compute_dtype), training=False)
    per_example = cross_entropy(logits, safe, self.model.num_classes) * mask
    top1, top5 = correct_counts(logits, safe, mask)
    return stats_vector(tf.reduce_sum(per_example), top1, top5,
                        tf.reduce_sum(mask))

  def _loop(self, iterator, num_steps):
    """Returns (summed stats, whether a stop request ended it early)."""
    totals = tf.zeros([NUM_STATS])
    stopped = tf.constant(False)
    for _ in tf.range(num_steps):
      stats, stop = with_stop_request(self.strategy, self.stop_flag, lambda: (
          self.strategy.run(self._replica_step, args=(next(iterator),))))
      totals += stats
      if stop:
        stopped = tf.constant(True)
        break
    return totals, stopped


def metrics_from_totals(totals) -> dict:
  """loss, top1_error, top5_error (percent) and examples from summed stats."""
  return Totals.of(totals).metrics()

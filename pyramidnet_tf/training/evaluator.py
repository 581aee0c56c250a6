"""Evaluation of a model on one split: every record exactly once.

Why one class for the trainer and ``evaluate``: both must pad the last batch
to equal steps on every replica and worker, mask the padding out, check that
the number of examples evaluated is the number of records the shards hold,
and name a damaged shard in one line. Doing it in one place keeps the two
figures (the trainer's eval and a later ``evaluate`` of the same checkpoint)
equal by construction.
"""

from absl import logging
import tensorflow as tf

from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import pipeline as input_pipeline
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.data import records as records_lib
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import step as step_lib


# An evaluation runs in at most this many host calls (progress lines come
# between them).
_CHUNKS = 10


class EvaluationStopped(Exception):
  """A stop request (``preemption.StopSignals``) ended an evaluation early;
  no metrics exist for it."""


class Evaluator:
  """Summed metrics of ``model`` over every record of ``split``."""

  def __init__(self, *, strategy: tf.distribute.Strategy, model,
               info: manifest_lib.DataInfo,
               preprocessing: preprocessing_lib.Preprocessing, split: str,
               global_batch: int, dtype: str = "float32", averages=None,
               error_class=manifest_lib.DataError, stop_flag=None):
    """Builds the eval step and plans the padded steps.

    Args:
      strategy: the strategy the model was built under.
      model: the network (``model(images, training=False)`` -> logits).
      info: the data directory, recounted from its shards
        (``records_lib.recount``) so that the padding covers every record.
      preprocessing: the eval preprocessing of the model.
      split: the split to evaluate.
      global_batch: examples per step over all replicas, rounded up to a
        multiple of the replica count (``batch_for_replicas``).
      dtype: compute dtype.
      averages: optional ``ema.Ema``; when given, its averaged weights are
        evaluated (swapped in for the run, swapped back afterwards).
      error_class: exception raised for a damaged shard or a count that
        disagrees (the CLI's error type, shown without a traceback).
      stop_flag: optional host variable of a stop request; when set, the
        evaluation ends after the batch in progress (``EvaluationStopped``).
    """
    replicas = strategy.num_replicas_in_sync
    requested, global_batch = global_batch, batch_for_replicas(global_batch,
                                                              replicas)
    if global_batch != requested:
      logging.info("%s", rounded_batch_text(requested, global_batch,
                                            replicas))
    self.strategy = strategy
    self.info = info
    self.preprocessing = preprocessing
    self.split = split
    self.global_batch = global_batch
    self.averages = averages
    self.error_class = error_class
    workers = distribute.num_workers(strategy)
    self.steps = input_pipeline.eval_steps(
        info, split, global_batch // replicas, workers, replicas // workers)
    self._step = step_lib.EvalStep(strategy=strategy, model=model,
                                   dtype=dtype, stop_flag=stop_flag)

  def _input(self, context: tf.distribute.InputContext) -> tf.data.Dataset:
    pipelines = context.num_input_pipelines
    return input_pipeline.eval_dataset(
        self.info, self.preprocessing,
        context.get_per_replica_batch_size(self.global_batch), self.steps,
        self.split, pipelines, context.input_pipeline_id,
        context.num_replicas_in_sync // pipelines)

  def _totals(self, progress=None) -> step_lib.Totals:
    """Sums the stats of every batch, in up to ``_CHUNKS`` host calls so a
    long pass can report how far it is."""
    iterator = iter(self.strategy.distribute_datasets_from_function(
        self._input))
    chunk = max(1, -(-self.steps // _CHUNKS))
    examples = self.info.num_examples(self.split)
    totals, done = tf.zeros([step_lib.NUM_STATS]), 0
    with records_lib.named_read_errors(self.info, [self.split],
                                          self.error_class):
      while done < self.steps:
        count = min(chunk, self.steps - done)
        part, stopped = self._step.loop(iterator, tf.constant(count))
        totals += part
        done += count
        if bool(stopped):
          raise EvaluationStopped(
              f"evaluation of {self.split} stopped early")
        if progress is not None:
          progress.update(min(done * self.global_batch, examples))
    return step_lib.Totals.of(totals)

  def run(self, progress=None) -> dict:
    """Evaluates once; returns loss, top1_error, top5_error, examples.

    Args:
      progress: optional ``progress.EvalProgress``, told the images done
        after each chunk of batches.

    Raises:
      error_class: a shard is gone or could not be read, or the examples
        evaluated are not the records the split's shards hold.
      EvaluationStopped: a stop request ended it early.
    """
    # Every worker checks every shard, so that all of them stop here
    # together (a shard missing in the middle of the run would otherwise
    # stop only the worker that reads it).
    missing = records_lib.missing_shard_line(self.info, [self.split])
    if missing is not None:
      raise self.error_class(missing)
    if self.averages is not None:
      with self.averages.swapped():
        totals = self._totals(progress)
    else:
      totals = self._totals(progress)
    try:
      input_pipeline.check_evaluated(self.info, self.split, totals.examples)
    except manifest_lib.DataError as e:
      if self.error_class is manifest_lib.DataError:
        raise
      raise self.error_class(str(e)) from None
    return totals.metrics()


def batch_for_replicas(batch: int, replicas: int) -> int:
  """The global eval batch of ``replicas``: ``batch`` rounded up to a
  multiple of them.

  The one rule for every evaluation (the trainer's and ``evaluate``'s):
  rounding up changes no score, since the padding of the last batch is
  masked out and every record still counts once; refusing instead would
  end a run only once the replicas are known, after TensorFlow started.

  Args:
    batch: the requested global eval batch, >= 1.
    replicas: the strategy's replicas in sync.
  """
  return -(-batch // replicas) * replicas


def rounded_batch_text(batch: int, rounded: int, replicas: int) -> str:
  """What the log says when ``batch_for_replicas`` rounds ``batch`` up.

  Args:
    batch: the requested global eval batch.
    rounded: the batch used.
    replicas: the strategy's replicas in sync.
  """
  return (f"global eval batch {batch} (--eval_batch_size) rounded up to "
          f"{rounded}, a multiple of the {replicas} replicas; the padding is "
          "masked, so every example still counts once")

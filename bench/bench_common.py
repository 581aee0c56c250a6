"""What the step benchmarks share: the configs of the issues' tables and one
way to time the trainer's step (so their numbers compare).

Timing follows the trainer: ``TrainStep.loop`` runs N steps in one host call
(``--steps_per_loop``); the first call includes tracing and compilation.
"""

import time

# The configs of the issues' tables (c20: a small one for quick checks).
CONFIGS = {
    "c20": dict(dataset="cifar10", depth=20, alpha=24, bottleneck=False,
                batch=32, size=32),
    "c110": dict(dataset="cifar10", depth=110, alpha=48, bottleneck=False,
                 batch=128, size=32),
    "c164": dict(dataset="cifar10", depth=164, alpha=48, bottleneck=True,
                 batch=128, size=32),
    "c272": dict(dataset="cifar100", depth=272, alpha=200, bottleneck=True,
                 batch=128, size=32),
    "i200": dict(dataset="imagenet", depth=200, alpha=300, bottleneck=True,
                 batch=64, size=224),
}

# Schedule arguments of the benchmarks' steps (the CIFAR recipe's shape).
SCHEDULE_ARGS = ("step", 0.1, 390, 10 ** 6, (150, 225))


def synthetic_iterator(tf, strategy, size: int, num_classes: int,
                       global_batch: int):
  """An iterator over the trainer's synthetic data, distributed."""
  from pyramidnet_tf import input_pipeline  # pylint: disable=g-import-not-at-top
  del tf  # the caller has imported TensorFlow already
  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: input_pipeline.synthetic_dataset(
          size, num_classes, ctx.get_per_replica_batch_size(global_batch), 0))
  return iter(dataset)


def time_train_loop(tf, train_step, iterator, global_batch: int, steps: int,
                    warmup: int) -> dict:
  """First call (1 step), ``warmup`` untimed steps, then ``steps`` timed.

  Returns first_step_s, img_per_s, first_loss (the first step's summed
  loss over the batch, to compare paths) and first_done (time.time() when
  the first step had finished).
  """
  start = time.time()
  totals = train_step.loop(iterator, tf.constant(1))[0].numpy()
  first_done = time.time()
  first = first_done - start
  if warmup:
    train_step.loop(iterator, tf.constant(warmup))[0].numpy()
  start = time.time()
  train_step.loop(iterator, tf.constant(steps))[0].numpy()
  elapsed = time.time() - start
  return {"first_step_s": round(first, 2),
          "img_per_s": round(global_batch * steps / elapsed, 2),
          "first_loss": float(totals[0]), "first_done": first_done}

"""TensorBoard output, written by the chief only.

Where: ``<model_dir>/tensorboard`` (``logdir``), one TensorBoard run.
TensorBoard's hparams dashboard shows no metric values for a session in the
logdir's root (run "."), so the events live one level down: ``tensorboard
--logdir <model_dir>`` and ``--logdir`` of a parent of many model dirs both
show every hparams row with its metrics.

What: scalars (below), the augmented first batch as images, the run's flags
as text, the experiment's settings as hparams with the eval and train
metrics declared, the train step's graph once, and (opt-in,
``--histogram_every_steps``) weight and BN-statistics histograms, which
would otherwise come first in the Time Series dashboard.

Why a wrapper: in multi-worker runs every worker executes the same code, but
only the chief may write event files (non-chiefs get a no-op writer), and the
scalar tag names are a contract other tools read: train/loss,
train/top1_error, train/top5_error, train/learning_rate,
train/examples_per_sec, train/step_time, eval/loss, eval/top1_error,
eval/top5_error (plus train/examples_per_sec_per_worker).
"""

import os
from typing import Dict, Mapping, Optional

import tensorflow as tf

SUBDIR = "tensorboard"
# (tag, display name) of the metrics declared to the hparams dashboard.
HPARAM_METRICS = (
    ("eval/top1_error", "eval top-1 error (%)"),
    ("eval/top5_error", "eval top-5 error (%)"),
    ("eval/loss", "eval loss"),
    ("train/loss", "train loss"),
    ("train/top1_error", "train top-1 error (%)"),
    ("train/examples_per_sec", "train images/s"),
)


def logdir(model_dir: str) -> str:
  """Where a model dir's TensorBoard events go."""
  return os.path.join(model_dir, SUBDIR)


class Summaries:
  """Scalars, images, histograms, flags and hparams for one model dir.

  Every worker makes one and calls the same methods; only an enabled one
  (the chief's) writes, so callers need no chief checks.
  """

  def __init__(self, logdir: str, enabled: bool):
    """Opens the event-file writer (or a no-op one).

    Args:
      logdir: the directory for the event files.
      enabled: True on the chief; False makes every method write nothing.
    """
    self.enabled = enabled
    self.logdir = logdir
    if enabled:
      self.writer = tf.summary.create_file_writer(logdir)
    else:
      self.writer = tf.summary.create_noop_writer()

  def scalars(self, prefix: str, values: Mapping[str, float], step: int):
    """Writes each value as scalar ``<prefix>/<name>``.

    Args:
      prefix: tag prefix, "train" or "eval" (the tags are a contract; see
        the module docstring).
      values: tag name -> value (anything ``float()`` accepts).
      step: the global step to record them at.
    """
    with self.writer.as_default(step=step):
      for name, value in values.items():
        tf.summary.scalar(f"{prefix}/{name}", float(value))

  def images(self, name: str, images, step: int, max_outputs: int = 16):
    """A grid of (normalised) images, each min-max scaled into [0, 1].

    Args:
      name: the image summary's tag.
      images: NHWC batch in any float dtype (e.g. the augmented inputs).
      step: the global step to record them at.
      max_outputs: how many of the first images to write.
    """
    if not self.enabled:
      return
    images = tf.cast(images[:max_outputs], tf.float32)
    low = tf.reduce_min(images, axis=[1, 2, 3], keepdims=True)
    high = tf.reduce_max(images, axis=[1, 2, 3], keepdims=True)
    images = (images - low) / tf.maximum(high - low, 1e-6)
    with self.writer.as_default(step=step):
      tf.summary.image(name, images, max_outputs=max_outputs)

  def histograms(self, model, step: int):
    """Weights and BN statistics (reading BN stats all-reduces: every worker
    calls this).

    Args:
      model: the network; its trainable variables and ``batch_norms()``
        are written.
      step: the global step to record them at.
    """
    with self.writer.as_default(step=step):
      for variable in model.trainable_variables:
        tf.summary.histogram("weights/" + variable.name.split(":")[0],
                             variable)
      for bn in model.batch_norms():
        base = "batch_norm/" + bn.name
        tf.summary.histogram(base + "/moving_mean", bn.moving_mean.read_value())
        tf.summary.histogram(base + "/moving_variance",
                             bn.moving_variance.read_value())

  def flags(self, values: Dict[str, object],
            hparams: Optional[Dict[str, object]] = None, step: int = 0):
    """The run's flags as a markdown table, and its hparams.

    Args:
      values: every flag name -> value (the text table).
      hparams: the settings that define the experiment (default: all of
        ``values``); values other than bool, int, float and str become
        strings, None values are left out.
      step: the step to record them at.
    """
    if not self.enabled:
      return
    # summary_v2, not hparams.api: the api module imports Keras.
    from tensorboard.plugins.hparams import summary_v2 as hp  # pylint: disable=g-import-not-at-top
    rows = ["| flag | value |", "|---|---|"]
    rows += [f"| {k} | {v} |" for k, v in sorted(values.items())]
    clean = {}
    for key, value in (values if hparams is None else hparams).items():
      if isinstance(value, (bool, int, float, str)):
        clean[key] = value
      elif value is not None:
        clean[key] = str(value)
    with self.writer.as_default(step=step):
      tf.summary.text("flags", "\n".join(rows))
      hp.hparams_config(
          hparams=[hp.HParam(name) for name in sorted(clean)],
          metrics=[hp.Metric(tag, display_name=name)
                   for tag, name in HPARAM_METRICS])
      hp.hparams(clean)

  def trace_graph(self) -> None:
    """Starts recording the graph of the next traced function (the train
    step; see ``write_graph``)."""
    if self.enabled:
      tf.summary.trace_on(graph=True, profiler=False)

  def write_graph(self, name: str, step: int) -> None:
    """Writes the graph recorded since ``trace_graph`` (Graphs dashboard)."""
    if self.enabled:
      with self.writer.as_default(step=step):
        tf.summary.trace_export(name=name, step=step)

  def flush(self):
    """Writes buffered events to disk."""
    self.writer.flush()

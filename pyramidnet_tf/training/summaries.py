"""TensorBoard output, written by the chief only.

Where: ``<model_dir>/tensorboard`` (``logdir``), three TensorBoard runs::

  tensorboard/         run "tensorboard": the experiment (hparams, flags)
    train/             run "tensorboard/train": train scalars, the train
                       step's graph, the augmented images, histograms and
                       profiler traces (plugins/profile/)
    eval/              run "tensorboard/eval": eval scalars

(with ``--logdir`` a parent of model dirs, each run name starts with the
model dir's path, e.g. ``cifar10_a48/tensorboard/eval``.)

Why this layout: train and eval are two runs with the same tags, so their
loss and error curves overlay in one chart (as Keras's ``train`` and
``validation`` runs do). TensorBoard's hparams dashboard finds a session's
metric in run ``<session run>/<group>``, the session run being the one
holding the hparams; the experiment run is the parent of ``train`` and
``eval`` and the metrics are declared with those groups. It cannot be the
logdir's root: that run is named ".", and "./eval" names no run, so a
session there shows no metric values. One level down, "tensorboard/eval"
(``--logdir=<model_dir>``) and "<model>/tensorboard/eval" (``--logdir`` of a
parent of many model dirs) both name the eval run.

The tags are a contract other tools read (``TRAIN_SCALARS``,
``EVAL_SCALARS``): in both runs ``metrics/loss``, ``metrics/top1_error``,
``metrics/top5_error``; in the train run only ``schedule/learning_rate``,
``speed/step_time``, ``speed/examples_per_sec`` and
``speed/examples_per_sec_per_worker``. Each scalar carries a description
with its unit. Time Series groups cards by the tag's first component, in
name order, and opens the first two groups: ``metrics`` and ``schedule``.
The augmented first batch (``training_images/augmented``) sorts after the
scalars, so it is there without coming first. Weight and BN-statistics
histograms (``weights/``, ``batch_norm/``) are opt-in
(``--histogram_every_steps``): they would come first.

The hparams are the experiment's settings, named ``<section>/<flag>``
(``arch``, ``data``, ``optim``, ``reg``, ``runtime``; displayed as the flag
name). The HParams dashboard shows the first five hparams in name order by
default, so the architecture (alpha, bottleneck, dataset, depth, mode) is
what a new table shows; the other columns are a click away.

Why a wrapper: in multi-worker runs every worker executes the same code, but
only the chief may write event files (non-chiefs get no-op writers).
"""

import os
from typing import Dict, Mapping, Optional

import tensorflow as tf

SUBDIR = "tensorboard"
TRAIN = "train"
EVAL = "eval"

_LOSS_TRAIN = (
    "Training loss since the previous point: mean cross-entropy (nats) "
    "between the augmented, mixed batch's logits and its (smoothed, mixed) "
    "labels, as minimised; weight decay not included.")
_ERROR_TRAIN = (
    "{k} error on the training batches since the previous point "
    "(augmented images, unmixed labels), % of images.")

# Scalar name (as TrainLog and EvalAction pass it) -> (tag, description).
TRAIN_SCALARS = {
    "loss": ("metrics/loss", _LOSS_TRAIN),
    "top1_error": ("metrics/top1_error", _ERROR_TRAIN.format(k="Top-1")),
    "top5_error": ("metrics/top5_error", _ERROR_TRAIN.format(k="Top-5")),
    "learning_rate": (
        "schedule/learning_rate",
        "Learning rate of the step (after warm-up and decay), the SGD step "
        "size; no unit."),
    "step_time": (
        "speed/step_time",
        "Seconds per training step, mean since the previous point (the first "
        "call, which traces and compiles, excluded once later calls ran)."),
    "examples_per_sec": (
        "speed/examples_per_sec",
        "Training images per second, all workers together, since the "
        "previous point (the first call excluded)."),
    "examples_per_sec_per_worker": (
        "speed/examples_per_sec_per_worker",
        "Training images per second per worker (speed/examples_per_sec / "
        "workers)."),
}
EVAL_SCALARS = {
    "loss": ("metrics/loss",
             "Eval loss: mean cross-entropy (nats) over the eval split, every "
             "image once."),
    "top1_error": ("metrics/top1_error",
                   "Top-1 error on the eval split, % of images."),
    "top5_error": ("metrics/top5_error",
                   "Top-5 error on the eval split, % of images."),
}
_SCALARS = {TRAIN: TRAIN_SCALARS, EVAL: EVAL_SCALARS}
IMAGES_TAG = "training_images/augmented"

# (tag, run, display name) of the metrics declared to the hparams dashboard;
# the dashboard shows the first five by default.
HPARAM_METRICS = (
    ("metrics/top1_error", EVAL, "eval top-1 error (%)"),
    ("metrics/top5_error", EVAL, "eval top-5 error (%)"),
    ("metrics/loss", EVAL, "eval loss"),
    ("metrics/loss", TRAIN, "train loss"),
    ("metrics/top1_error", TRAIN, "train top-1 error (%)"),
    ("speed/examples_per_sec", TRAIN, "train images/s"),
)

# Section of each experiment setting in the hparams names; settings not
# listed are "optim" (schedule and optimiser). "arch" sorts first.
HPARAM_SECTIONS = {
    "arch": ("dataset", "depth", "alpha", "bottleneck", "mode",
             "num_classes", "rounding"),
    "data": ("image_size", "augment", "autoaugment", "randaugment",
             "cifar_convention", "synthetic_like"),
    "reg": ("drop_rate", "shakedrop", "shakedrop_pl", "shakedrop_level",
            "label_smoothing", "cutmix_prob", "cutmix_beta", "mixup_alpha",
            "cutout_size"),
    "runtime": ("dtype", "sync_bn", "seed"),
}
_SECTION = {name: section for section, names in HPARAM_SECTIONS.items()
            for name in names}


def logdir(model_dir: str) -> str:
  """Where a model dir's TensorBoard events go (the experiment run)."""
  return os.path.join(model_dir, SUBDIR)


def run_dir(model_dir: str, run: str) -> str:
  """The directory of run ``train`` or ``eval`` of a model dir."""
  return os.path.join(logdir(model_dir), run)


def hparam_name(setting: str) -> str:
  """The hparams name of an experiment setting: ``<section>/<setting>``."""
  return f"{_SECTION.get(setting, 'optim')}/{setting}"


class Summaries:
  """Scalars, images, histograms, flags and hparams for one model dir.

  Every worker makes one and calls the same methods; only an enabled one
  (the chief's) writes, so callers need no chief checks. Each run's event
  file is opened when something is first written to it, so a run without
  evaluation has no empty eval run.
  """

  def __init__(self, logdir: str, enabled: bool):
    """Prepares the writers (or no-op ones).

    Args:
      logdir: the experiment run's directory (``logdir(model_dir)``); the
        train and eval runs are its subdirectories.
      enabled: True on the chief; False makes every method write nothing.
    """
    self.enabled = enabled
    self.logdir = logdir
    self._writers = {}
    self._noop = None if enabled else tf.summary.create_noop_writer()

  def run_dir(self, run: str) -> str:
    """The directory of run ``train`` or ``eval`` (``""``: the experiment)."""
    return os.path.join(self.logdir, run) if run else self.logdir

  def _writer(self, run: str):
    if not self.enabled:
      return self._noop
    if run not in self._writers:
      self._writers[run] = tf.summary.create_file_writer(self.run_dir(run))
    return self._writers[run]

  def scalars(self, run: str, values: Mapping[str, float], step: int):
    """Writes each value under its contract tag in run ``run``.

    Args:
      run: "train" or "eval".
      values: scalar name (a key of ``TRAIN_SCALARS`` / ``EVAL_SCALARS``)
        -> value (anything ``float()`` accepts).
      step: the global step to record them at.

    Raises:
      ValueError: a run or scalar name without a tag and description.
    """
    table = _SCALARS.get(run)
    unknown = sorted(set(values) - set(table or ()))
    if table is None or unknown:
      raise ValueError(f"no TensorBoard tag for run {run!r} scalars "
                       f"{unknown}; known: {sorted(table or _SCALARS)}")
    with self._writer(run).as_default(step=step):
      for name, value in values.items():
        tag, description = table[name]
        tf.summary.scalar(tag, float(value), description=description)

  def images(self, images, step: int, max_outputs: int = 16):
    """The augmented images as the network sees them, in the train run.

    Each image is min-max scaled into [0, 1].

    Args:
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
    with self._writer(TRAIN).as_default(step=step):
      tf.summary.image(
          IMAGES_TAG, images, max_outputs=max_outputs,
          description="The first training batch after augmentation, each "
          "image min-max scaled for display.")

  def histograms(self, model, step: int):
    """Weights and BN statistics, in the train run (reading BN stats
    all-reduces: every worker calls this).

    Args:
      model: the network; its trainable variables and ``batch_norms()``
        are written.
      step: the global step to record them at.
    """
    with self._writer(TRAIN).as_default(step=step):
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
    """The run's flags as a markdown table, and its hparams, in the
    experiment run.

    Args:
      values: every flag name -> value (the text table).
      hparams: the settings that define the experiment (default: all of
        ``values``), named by ``hparam_name`` and displayed by their flag
        name; values other than bool, int, float and str become strings,
        None values are left out.
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
        clean[hparam_name(key)] = value
      elif value is not None:
        clean[hparam_name(key)] = str(value)
    with self._writer("").as_default(step=step):
      tf.summary.text("flags", "\n".join(rows))
      hp.hparams_config(
          hparams=[hp.HParam(name, display_name=name.split("/", 1)[1])
                   for name in sorted(clean)],
          metrics=[hp.Metric(tag, group=run, display_name=display,
                             description=_SCALARS[run][
                                 _scalar_name(run, tag)][1])
                   for tag, run, display in HPARAM_METRICS])
      hp.hparams(clean)

  def trace_graph(self) -> None:
    """Starts recording the graph of the next traced function (the train
    step; see ``write_graph``)."""
    if self.enabled:
      tf.summary.trace_on(graph=True, profiler=False)

  def write_graph(self, name: str, step: int) -> None:
    """Writes the graph recorded since ``trace_graph`` into the train run
    (Graphs dashboard)."""
    if self.enabled:
      with self._writer(TRAIN).as_default(step=step):
        tf.summary.trace_export(name=name, step=step)

  def flush(self):
    """Writes buffered events to disk."""
    for writer in self._writers.values():
      writer.flush()


def _scalar_name(run: str, tag: str) -> str:
  (name,) = [n for n, (t, _) in _SCALARS[run].items() if t == tag]
  return name

"""The outer loop's actions (``loop.Action``): what happens between calls.

The trainer lists them in the order they run after each call (``loop``):
the input watchdog, the finiteness checks, the graph and the profiler, the
train log, histograms, evaluation, checkpoint, the epoch record, the stop
request and the console's progress bar. Each one keeps its own
collaborators and cadence, so the controller knows none of them.
"""

import logging
from typing import Callable, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.training import checkpoint_checks
from pyramidnet_tf.training import evaluator as evaluator_lib
from pyramidnet_tf.training import loop
from pyramidnet_tf.training import progress as progress_lib
from pyramidnet_tf.training import step as step_lib


class InputWatchdog(loop.Action):
  """Arms a ``watchdog.ProgressWatchdog`` during every call but the first
  (which includes compilation): it ends the run when the step stops moving
  (an input service that is gone). Listed first, so it is disarmed before
  anything else runs after a call."""

  def __init__(self, watchdog):
    self.watchdog = watchdog
    self._armed = False

  def before_call(self, step: int, first_call: bool) -> None:
    self._armed = not first_call
    if self._armed:
      self.watchdog.arm()

  def observe(self, r: loop.Round) -> None:
    if self._armed:
      self.watchdog.disarm()
      self._armed = False


class FiniteCheck(loop.Action):
  """Stops on a NaN/Inf loss, or on NaN/Inf in any checkpointed variable
  (BN moving statistics and EMA included), after every call and so before
  any save: no non-finite checkpoint is written."""

  def __init__(self, checkpointer):
    """Keeps the checkpointer (``checkpointing.Checkpointer``)."""
    self.checkpointer = checkpointer

  def observe(self, r: loop.Round) -> None:
    if r.bad_step >= 0:
      raise loop.NonFiniteLossError(
          f"training loss became NaN/Inf at global step {r.bad_step} (the "
          f"update from step {r.bad_step} to {r.bad_step + 1}); stopped "
          "without saving it. "
          f"{checkpoint_checks.last_good_text(self.checkpointer.model_dir)} "
          "Try a lower --lr, --dtype=float32, or check the input data.")
    self.checkpointer.check_finite(r.step, since=r.start)


class TrainGraph(loop.Action):
  """The step's graph in TensorBoard, written by the run that starts at
  step 0: a resumed run has the same graph, and writing it again at every
  restart would only grow the event files."""

  def __init__(self, summaries):
    self.summaries = summaries
    self._tracing = False

  def start(self, step: int, total_steps: int) -> None:
    self._tracing = step == 0 and total_steps > 0
    if self._tracing:
      self.summaries.trace_graph()

  def observe(self, r: loop.Round) -> None:
    if r.first_call and self._tracing:
      self.summaries.write_graph("train_step", r.step)


class Profiler(loop.Action):
  """A profiler trace over the [start, stop) steps of ``--profile_steps``.

  Each host call inside the trace is marked as one step ("train",
  ``step_num`` = the global step it starts at), so the Profile tab's
  Overview page shows step times and their breakdown; a call runs up to
  ``steps_per_loop`` steps, so one marked step spans that many.
  """

  def __init__(self, profile: Tuple[int, int], directory: str):
    self.start_step, self.stop_step = profile
    self.directory = directory
    self.active = False
    self._marker = None

  def next_stop(self, step: int) -> Optional[int]:
    edges = [edge for edge in (self.start_step, self.stop_step)
             if edge > step]
    return min(edges) if edges else None

  def before_call(self, step: int, first_call: bool) -> None:
    if (self.stop_step > self.start_step and step == self.start_step and
        not self.active):
      tf.profiler.experimental.start(self.directory)
      self.active = True
    if self.active:
      self._marker = tf.profiler.experimental.Trace("train", step_num=step,
                                                    _r=1)
      self._marker.__enter__()

  def observe(self, r: loop.Round) -> None:
    self._end_marker()
    if self.active and r.step >= self.stop_step:
      self.finish()

  def finish(self) -> None:
    self._end_marker()
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False

  def _end_marker(self) -> None:
    if self._marker is not None:
      self._marker.__exit__(None, None, None)
      self._marker = None


class TrainLog(loop.Action):
  """Train metrics between two log steps: summed stats and timing, written
  every ``--log_every_steps``, at the last step and when a stop request
  ends the run; ``metrics`` holds the last written.

  The first host call (tracing, warm-up) counts for the metrics but not for
  throughput.
  """

  def __init__(self, *, every: int, summaries, schedule, global_batch: int,
               num_workers: int, progress=None):
    """Keeps the collaborators.

    Args:
      every: steps between log lines (0: only at the end).
      summaries: ``summaries.Summaries``.
      schedule: the learning-rate schedule (logged).
      global_batch: examples per step (throughput).
      num_workers: hosts taking part (per-worker throughput).
      progress: ``progress.TrainProgress`` for the console line (None: a
        plain log line of the metrics).
    """
    self.every = every
    self.summaries = summaries
    self.progress = progress
    self.schedule = schedule
    self.global_batch = global_batch
    self.num_workers = num_workers
    self.total_steps = 0
    self.metrics: dict = {}
    self._reset()
    self._first_call = True
    self._last_time = 0.0

  def _reset(self):
    self._totals = tf.zeros([step_lib.NUM_STATS])
    self._time = 0.0    # seconds inside train calls since the last log
    self._steps = 0

  def start(self, step: int, total_steps: int) -> None:
    self.total_steps = total_steps

  def observe(self, r: loop.Round) -> None:
    self.record(r.totals, r.steps, r.elapsed)

  def due(self, r: loop.Round) -> bool:
    return loop.hit(r.step, self.every) or r.final or r.stopped

  def run(self, r: loop.Round) -> None:
    self.metrics = self.write(r.step)

  def finish(self) -> None:
    self.summaries.flush()

  def record(self, loop_totals, steps: int, elapsed: float) -> None:
    """Adds one host call of ``steps`` steps that took ``elapsed`` s."""
    self._totals += loop_totals
    if self._first_call:
      self._first_call = False
    else:
      self._steps += steps
      self._time += elapsed
    self._last_time = elapsed / max(steps, 1)

  def write(self, step: int) -> dict:
    """Writes the train run's summaries and a log line; returns the metrics."""
    metrics = step_lib.metrics_from_totals(self._totals.numpy())
    scalars = {
        "loss": metrics["loss"],
        "top1_error": metrics["top1_error"],
        "top5_error": metrics["top5_error"],
        "learning_rate": self.schedule.value(max(step - 1, 0)),
        "step_time": (self._time / self._steps if self._steps
                      else self._last_time),
    }
    if self._steps:
      rate = self._steps * self.global_batch / self._time
      scalars["examples_per_sec"] = rate
      scalars["examples_per_sec_per_worker"] = rate / self.num_workers
    self.summaries.scalars("train", scalars, step)
    if self.progress is not None:
      self.progress.log_line(step, scalars)
    else:
      logging.info("step %d/%d: %s", step, self.total_steps,
                   ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
    self._reset()
    return metrics


class Histograms(loop.Action):
  """Weight histograms every ``--histogram_every_steps``."""

  def __init__(self, every: int, summaries, model):
    self.every = every
    self.summaries = summaries
    self.model = model

  def run(self, r: loop.Round) -> None:
    self.summaries.histograms(self.model, r.step)


class EvalAction(loop.Action):
  """The evaluation: run the evaluator, write the eval run's summaries, log
  one line, keep the best checkpoint; ``last`` holds the latest metrics
  (with ``step`` and ``split``), ``best`` the lowest top-1 error so far.

  In the loop it runs every ``every`` steps unless a stop request is to be
  honoured now; a stop request during it abandons it and stops the run.
  Called directly, it evaluates once (the trainer's final evaluation).
  """

  def __init__(self, evaluator, summaries, global_step: tf.Variable,
               split: str, best_checkpoint=None, progress: bool = True,
               every: int = 0):
    """Keeps the collaborators.

    Args:
      evaluator: ``evaluator.Evaluator`` of the eval split.
      summaries: ``summaries.Summaries``.
      global_step: the step variable (the step of each evaluation).
      split: the split's name.
      best_checkpoint: ``best_checkpoint.BestCheckpoint`` offered every
        result, or None (then only the best metrics are remembered).
      progress: print progress lines during a long evaluation (chief).
      every: steps between evaluations in the loop (0: none).
    """
    self.evaluator = evaluator
    self.summaries = summaries
    self.global_step = global_step
    self.split = split
    self.best_checkpoint = best_checkpoint
    self.progress = progress
    self.every = every
    self.last: Optional[dict] = None
    # The lowest top-1 error so far (of earlier launches too).
    self.best: Optional[dict] = (best_checkpoint.best if best_checkpoint
                                 else None)

  def due(self, r: loop.Round) -> bool:
    return loop.hit(r.step, self.every) and not r.stop_now()

  def run(self, r: loop.Round) -> None:
    try:
      self()
    except evaluator_lib.EvaluationStopped:
      logging.info("evaluation at step %d abandoned: stop requested", r.step)
      r.stopped = True

  def __call__(self) -> dict:
    step = int(self.global_step.numpy())
    metrics = self.evaluator.run(progress_lib.EvalProgress(
        self.split, self.evaluator.info.num_examples(self.split),
        enabled=self.progress))
    self.summaries.scalars("eval", {k: metrics[k] for k in (
        "loss", "top1_error", "top5_error")}, step)
    logging.info("eval at step %d on %s: top-1 error %.2f%%, top-5 error "
                 "%.2f%%, loss %.4g (%d images)", step, self.split,
                 metrics["top1_error"], metrics["top5_error"], metrics["loss"],
                 metrics["examples"])
    result = dict(metrics, step=step, split=self.split)
    if self.best_checkpoint is not None:
      self.best_checkpoint.offer(result)
      self.best = self.best_checkpoint.best
    elif self.best is None or result["top1_error"] < self.best["top1_error"]:
      self.best = result
    self.last = result
    return result


class Checkpoint(loop.Action):
  """A checkpoint every ``--checkpoint_every_steps`` (default: each epoch)."""

  def __init__(self, every: int, checkpointer):
    self.every = every
    self.checkpointer = checkpointer

  def run(self, r: loop.Round) -> None:
    self.checkpointer.save()
    r.saved = True


class EpochRecord(loop.Action):
  """The record of each epoch (``epoch_log.EpochLog``) at its end before the
  last step (the trainer writes the last one after the final evaluation),
  with the evaluation at that step if there was one."""

  def __init__(self, epoch_log, steps_per_epoch: int,
               last_eval: Callable[[], Optional[dict]] = lambda: None):
    """Keeps the record.

    Args:
      epoch_log: ``epoch_log.EpochLog``.
      steps_per_epoch: steps of one epoch.
      last_eval: the latest evaluation's metrics, or None.
    """
    self.epoch_log = epoch_log
    self.every = steps_per_epoch
    self.last_eval = last_eval

  def observe(self, r: loop.Round) -> None:
    self.epoch_log.record(r.totals, r.steps, r.elapsed, r.first_call)

  def due(self, r: loop.Round) -> bool:
    return loop.hit(r.step, self.every) and not r.final

  def run(self, r: loop.Round) -> None:
    self.epoch_log.write(r.step, self.last_eval())


class StopRequest(loop.Action):
  """Honours a stop request (SIGTERM, SIGINT, SIGUSR1: ``preemption``) by
  saving at the step the compiled loop stopped at (unless this round saved
  it already) and ending the run."""

  def __init__(self, checkpointer):
    self.checkpointer = checkpointer

  def due(self, r: loop.Round) -> bool:
    return r.stop_now() and not r.final

  def run(self, r: loop.Round) -> None:
    if not r.saved:
      self.checkpointer.save()
      r.saved = True
    r.ended = True


class ProgressBar(loop.Action):
  """The console's progress (``progress.TrainProgress``): "compiling" before
  the first call and its time after it, the bar cleared before anything
  else prints and redrawn once the round is done (listed last)."""

  def __init__(self, progress):
    self.progress = progress

  def start(self, step: int, total_steps: int) -> None:
    if step < total_steps:
      self.progress.compiling()

  def observe(self, r: loop.Round) -> None:
    self.progress.clear()
    if r.first_call:
      self.progress.first_call_done(r.step)

  def due(self, r: loop.Round) -> bool:
    return True

  def run(self, r: loop.Round) -> None:
    self.progress.update(r.step)

  def finish(self) -> None:
    self.progress.clear()

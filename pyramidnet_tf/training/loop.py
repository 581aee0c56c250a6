"""The outer loop: when to train, log, evaluate, checkpoint and stop.

Why separate from ``step.py`` (orbit's Controller vs. its runners): the
cadence logic is plain Python over integers and can be read (and tested) on
its own, while the steps are compiled TensorFlow.

Each host iteration runs ``n`` steps in one call, with ``n`` the smallest of
``steps_per_loop`` and the distances to the next log, checkpoint, eval,
profiler or final step, so every event happens exactly on its step. After
each call: stop on a non-finite loss or on NaN/Inf in any checkpointed
variable (BN moving statistics and EMA included; before any save, so no
non-finite checkpoint is written), log, evaluate, checkpoint, and honour a
stop request (SIGTERM, SIGINT, SIGUSR1: ``preemption``) by saving at the
step the compiled loop stopped at and returning.
"""

import dataclasses
import logging
import time
from typing import Callable, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.training import checkpointing
from pyramidnet_tf.training import evaluator as evaluator_lib
from pyramidnet_tf.training import preemption
from pyramidnet_tf.training import progress as progress_lib
from pyramidnet_tf.training import step as step_lib


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or Inf."""


@dataclasses.dataclass
class Cadence:
  total_steps: int
  steps_per_loop: int
  log_every: int
  checkpoint_every: int
  eval_every: int            # 0: no periodic eval
  histogram_every: int = 0
  profile: Tuple[int, int] = (0, 0)   # [start, stop) steps; (0, 0): none
  epoch_every: int = 0       # steps per epoch (the epoch record); 0: none

  def next_stop(self, step: int) -> int:
    """The step the next host call must end at."""
    target = min(step + self.steps_per_loop, self.total_steps)
    for every in (self.log_every, self.checkpoint_every, self.eval_every,
                  self.histogram_every, self.epoch_every):
      if every > 0:
        target = min(target, (step // every + 1) * every)
    for edge in self.profile:
      if edge > step:
        target = min(target, edge)
    return target

  @staticmethod
  def hit(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class EvalAction:
  """The controller's evaluation: run the evaluator, write the eval run's
  summaries, log one line, keep the best checkpoint; returns the metrics
  with ``step`` and ``split``."""

  def __init__(self, evaluator, summaries, global_step: tf.Variable,
               split: str, best_checkpoint=None, progress: bool = True):
    """Keeps the collaborators.

    Args:
      evaluator: ``evaluator.Evaluator`` of the eval split.
      summaries: ``summaries.Summaries``.
      global_step: the step variable (the step of each evaluation).
      split: the split's name.
      best_checkpoint: ``best_checkpoint.BestCheckpoint`` offered every
        result, or None (then only the best metrics are remembered).
      progress: print progress lines during a long evaluation (chief).
    """
    self.evaluator = evaluator
    self.summaries = summaries
    self.global_step = global_step
    self.split = split
    self.best_checkpoint = best_checkpoint
    self.progress = progress
    # The lowest top-1 error so far (of earlier launches too).
    self.best: Optional[dict] = (best_checkpoint.best if best_checkpoint
                                 else None)

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
    return result


class TrainLog:
  """Train metrics between two log steps: summed stats and timing.

  The first host call (tracing, warm-up) counts for the metrics but not for
  throughput.
  """

  def __init__(self, *, summaries, schedule, global_batch: int,
               num_workers: int, total_steps: int, progress=None):
    self.summaries = summaries
    self.progress = progress
    self.schedule = schedule
    self.global_batch = global_batch
    self.num_workers = num_workers
    self.total_steps = total_steps
    self._reset()
    self._first_call = True
    self._last_time = 0.0

  def _reset(self):
    self._totals = tf.zeros([step_lib.NUM_STATS])
    self._time = 0.0    # seconds inside train calls since the last log
    self._steps = 0

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


class Profiler:
  """A profiler trace over the cadence's [start, stop) steps.

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

  def before(self, step: int) -> None:
    if (self.stop_step > self.start_step and step == self.start_step and
        not self.active):
      tf.profiler.experimental.start(self.directory)
      self.active = True
    if self.active:
      self._marker = tf.profiler.experimental.Trace("train", step_num=step,
                                                    _r=1)
      self._marker.__enter__()

  def after(self, step: int) -> None:
    self._end_marker()
    if self.active and step >= self.stop_step:
      self.stop()

  def stop(self) -> None:
    self._end_marker()
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False

  def _end_marker(self) -> None:
    if self._marker is not None:
      self._marker.__exit__(None, None, None)
      self._marker = None


class Controller:
  """Drives a TrainStep; owns no TensorFlow state of its own.

  After each host call it runs the outer loop's actions in a fixed order:
  finiteness checks, train log, histograms, evaluation, checkpoint,
  preemption (a stop request: save, then return).
  """

  def __init__(self, *, strategy, train_step: step_lib.TrainStep, iterator,
               cadence: Cadence, global_batch: int, num_workers: int,
               summaries, checkpointer, schedule,
               evaluate: Optional[Callable[[], dict]] = None,
               stop: Optional[preemption.StopSignals] = None,
               profile_dir: str = "", progress=None, input_watchdog=None,
               epoch_log=None):
    """Keeps the step, its input and the actions' collaborators.

    Args:
      strategy: the strategy the step runs under.
      train_step: the inner loop (``step.TrainStep``).
      iterator: distributed input iterator of the step.
      cadence: when to log, evaluate, checkpoint, profile and stop.
      global_batch: examples per step (throughput figures).
      num_workers: hosts taking part (per-worker throughput, and whether a
        stop request must wait for the compiled loop's agreement).
      summaries: ``summaries.Summaries`` (a no-op on non-chief workers).
      checkpointer: ``checkpointing.Checkpointer``.
      schedule: the learning-rate schedule (logged).
      evaluate: called at the eval cadence; returns metrics (an
        ``EvalAction``), or None for no evaluation.
      stop: the stop signals to honour (their flag is the step's
        ``stop_flag``), if any.
      profile_dir: where a profiler trace goes.
      progress: ``progress.TrainProgress`` for the console lines (None:
        plain log lines of the metrics only).
      input_watchdog: a ``watchdog.ProgressWatchdog`` armed during every
        train call but the first (which includes compilation): it ends the
        run when the step stops moving (an input service that is gone).
      epoch_log: ``epoch_log.EpochLog`` written at each epoch's end before
        the last step (the trainer writes the last one after the final
        evaluation), or None.
    """
    self.strategy = strategy
    self.train_step = train_step
    self.iterator = iterator
    self.cadence = cadence
    self.global_batch = global_batch
    self.num_workers = num_workers
    self.summaries = summaries
    self.checkpointer = checkpointer
    self.schedule = schedule
    self.evaluate = evaluate
    self.stop = stop
    self.profile_dir = profile_dir
    self.progress = progress
    self.input_watchdog = input_watchdog
    self.epoch_log = epoch_log
    self.last_eval = None
    self.preempted = False

  def _stop_now(self, stopped_in_loop: bool) -> bool:
    """Whether to save and return now.

    ``stopped_in_loop`` is the compiled loop's decision, the same on every
    worker. One worker alone may also stop between calls on its own flag
    (no peer to agree with); several wait for the next step's agreement.
    """
    if stopped_in_loop:
      return True
    return bool(self.num_workers == 1 and self.stop is not None and
                self.stop.requested)

  def step(self) -> int:
    return int(self.train_step.global_step.numpy())

  def _check_call(self, bad_step: int, step: int) -> int:
    """Stops on a non-finite loss or variable; returns the new step."""
    if bad_step >= 0:
      raise NonFiniteLossError(
          f"training loss became NaN/Inf at global step {bad_step} (the "
          f"update from step {bad_step} to {bad_step + 1}); stopped without "
          "saving it. "
          f"{checkpointing.last_good_text(self.checkpointer.model_dir)} "
          "Try a lower --lr, --dtype=float32, or check the input data.")
    new_step = self.step()
    self.checkpointer.inject_due(new_step)   # test hook
    self.checkpointer.check_finite(new_step, since=step)
    return new_step

  def run(self) -> dict:
    """Trains to ``total_steps``; returns the last train metrics."""
    cadence = self.cadence
    step = self.step()
    log = TrainLog(summaries=self.summaries, schedule=self.schedule,
                   global_batch=self.global_batch,
                   num_workers=self.num_workers,
                   total_steps=cadence.total_steps, progress=self.progress)
    profiler = Profiler(cadence.profile, self.profile_dir)
    metrics = {}
    first_call = True
    if self.progress is not None and step < cadence.total_steps:
      self.progress.compiling()
    # The step's graph (about 1 MB even for a small network) is written by
    # the run that starts at step 0; a resumed run has the same graph, and
    # writing it again at every restart would only grow the event files.
    trace = step == 0 and cadence.total_steps > 0
    if trace:
      self.summaries.trace_graph()
    while step < cadence.total_steps:
      profiler.before(step)
      stop = cadence.next_stop(step)
      injection = self.checkpointer.injection_step(step)   # test hook
      if injection is not None:
        stop = min(stop, injection)
      begin = time.time()
      watch = self.input_watchdog is not None and not first_call
      if watch:
        self.input_watchdog.arm()
      loop_totals, bad_step, stopped = self.train_step.loop(
          self.iterator, tf.constant(stop - step, tf.int32))
      loop_totals, stopped = loop_totals.numpy(), bool(stopped)
      if watch:
        self.input_watchdog.disarm()
      elapsed = time.time() - begin
      new_step = self._check_call(int(bad_step.numpy()), step)
      log.record(loop_totals, new_step - step, elapsed)
      if self.epoch_log is not None:
        self.epoch_log.record(loop_totals, new_step - step, elapsed,
                              first_call)
      step = new_step
      if first_call and trace:
        self.summaries.write_graph("train_step", step)
      if self.progress is not None:
        self.progress.clear()
        if first_call:
          self.progress.first_call_done(step)
      first_call = False
      profiler.after(step)
      if (Cadence.hit(step, cadence.log_every) or
          step >= cadence.total_steps or stopped):
        metrics = log.write(step)
      if Cadence.hit(step, cadence.histogram_every):
        self.summaries.histograms(self.train_step.model, step)
      if (self.evaluate is not None and Cadence.hit(step, cadence.eval_every)
          and not self._stop_now(stopped)):
        try:
          self.last_eval = self.evaluate()
        except evaluator_lib.EvaluationStopped:
          logging.info("evaluation at step %d abandoned: stop requested",
                       step)
          stopped = True
      saved = False
      if Cadence.hit(step, cadence.checkpoint_every):
        self.checkpointer.save()
        saved = True
      if (self.epoch_log is not None and step < cadence.total_steps and
          step % self.epoch_log.steps_per_epoch == 0):
        self.epoch_log.write(step, self.last_eval)
      if self._stop_now(stopped) and step < cadence.total_steps:
        if not saved:
          self.checkpointer.save()
        self.preempted = True
        break
      if self.progress is not None:
        self.progress.update(step)
    if self.progress is not None:
      self.progress.clear()
    profiler.stop()
    self.summaries.flush()
    return metrics

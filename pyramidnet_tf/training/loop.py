"""The outer loop: when to train, log, evaluate, checkpoint and stop.

Why separate from ``step.py`` (orbit's Controller vs. its runners): the
cadence logic is plain Python over integers and can be read (and tested) on
its own, while the steps are compiled TensorFlow.

Each host iteration runs ``n`` steps in one call, with ``n`` the smallest of
``steps_per_loop`` and the distances to the next log, checkpoint, eval,
profiler or final step, so every event happens exactly on its step. After
each call: stop on a non-finite loss or on NaN/Inf in any checkpointed
variable (BN moving statistics and EMA included; before any save, so no
non-finite checkpoint is written), log, evaluate, checkpoint, and honour
SIGTERM by saving at the current step and returning.
"""

import dataclasses
import logging
import signal
import time
from typing import Callable, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.training import checkpointing
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

  def next_stop(self, step: int) -> int:
    """The step the next host call must end at."""
    target = min(step + self.steps_per_loop, self.total_steps)
    for every in (self.log_every, self.checkpoint_every, self.eval_every,
                  self.histogram_every):
      if every > 0:
        target = min(target, (step // every + 1) * every)
    for edge in self.profile:
      if edge > step:
        target = min(target, edge)
    return target

  @staticmethod
  def hit(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class SigtermFlag:
  """Remembers a SIGTERM so the loop can save and exit at a step boundary."""

  def __init__(self):
    self.received = False
    self._previous = None

  def install(self):
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


class Controller:
  """Drives a TrainStep; owns no TensorFlow state of its own."""

  def __init__(self, strategy, train_step: step_lib.TrainStep, iterator,
               cadence: Cadence, global_batch: int, num_workers: int,
               summaries, checkpointer, schedule,
               evaluate: Optional[Callable[[], dict]] = None,
               sigterm: Optional[SigtermFlag] = None,
               profile_dir: str = ""):
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
    self.sigterm = sigterm
    self.profile_dir = profile_dir
    self._agree = None
    if num_workers > 1:
      self._agree = tf.function(self._any_worker)
    self.last_eval = None
    self.preempted = False

  def _any_worker(self, flag):
    """Sum over workers of the local SIGTERM flags (so all stop together)."""
    per_replica = self.strategy.run(lambda: tf.identity(flag))
    return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica,
                                axis=None)

  def _stop_requested(self) -> bool:
    local = bool(self.sigterm and self.sigterm.received)
    if self._agree is None:
      return local
    return bool(self._agree(tf.constant(1.0 if local else 0.0)) > 0)

  def step(self) -> int:
    return int(self.train_step.global_step.numpy())

  def run(self) -> dict:
    """Trains to ``total_steps``; returns the last train metrics."""
    cadence = self.cadence
    step = self.step()
    totals = tf.zeros([4])
    window_time = 0.0   # seconds inside train calls since the last log
    window_steps = 0
    first_call = True
    metrics = {}
    profiling = False
    while step < cadence.total_steps:
      if cadence.profile[1] > cadence.profile[0] and (
          step == cadence.profile[0]) and not profiling:
        tf.profiler.experimental.start(self.profile_dir)
        profiling = True
      stop = cadence.next_stop(step)
      injection = self.checkpointer.injection_step(step)   # test hook
      if injection is not None:
        stop = min(stop, injection)
      begin = time.time()
      loop_totals, bad_step = self.train_step.loop(
          self.iterator, tf.constant(stop - step, tf.int32))
      loop_totals = loop_totals.numpy()
      bad_step = int(bad_step.numpy())
      elapsed = time.time() - begin
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
      if first_call:
        # Tracing and warm-up are excluded from throughput.
        first_call = False
        totals = tf.zeros([4]) + loop_totals
      else:
        totals += loop_totals
        window_steps += new_step - step
        window_time += elapsed
      last_time = elapsed / max(new_step - step, 1)
      step = new_step
      if profiling and step >= cadence.profile[1]:
        tf.profiler.experimental.stop()
        profiling = False
      if Cadence.hit(step, cadence.log_every) or step >= cadence.total_steps:
        metrics = step_lib.metrics_from_totals(totals.numpy())
        duration = window_time
        scalars = {
            "loss": metrics["loss"],
            "top1_error": metrics["top1_error"],
            "top5_error": metrics["top5_error"],
            "learning_rate": self.schedule.value(max(step - 1, 0)),
            "step_time": (duration / window_steps if window_steps
                          else last_time),
        }
        if window_steps:
          rate = window_steps * self.global_batch / duration
          scalars["examples_per_sec"] = rate
          scalars["examples_per_sec_per_worker"] = rate / self.num_workers
        self.summaries.scalars("train", scalars, step)
        logging.info("step %d/%d: %s", step, cadence.total_steps,
                     ", ".join(f"{k} {v:.4g}" for k, v in scalars.items()))
        totals = tf.zeros([4])
        window_time = 0.0
        window_steps = 0
      if Cadence.hit(step, cadence.histogram_every):
        self.summaries.histograms(self.train_step.model, step)
      if self.evaluate is not None and Cadence.hit(step, cadence.eval_every):
        self.last_eval = self.evaluate()
      if Cadence.hit(step, cadence.checkpoint_every):
        self.checkpointer.save()
      if self._stop_requested():
        logging.warning("SIGTERM received: saving at step %d and exiting",
                        step)
        self.checkpointer.save()
        self.preempted = True
        break
    if profiling:
      tf.profiler.experimental.stop()
    self.summaries.flush()
    return metrics

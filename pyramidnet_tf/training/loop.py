"""The outer loop: host calls of the inner step, and actions between them.

Why separate from ``step.py`` (orbit's Controller vs. its runners): the
inner step is compiled TensorFlow that runs many steps per call; the outer
loop is plain Python over integers that decides how many steps each call
runs and what happens after it. What happens after it is a list of actions
(``actions``: train log, histograms, evaluation, checkpoint, epoch record,
stop request, ...), each with its own cadence; the controller keeps the
cadence logic in one place:

* Each host call runs ``n`` steps, with ``n`` the smallest of
  ``steps_per_loop``, the distance to the final step and the distance to
  the step each action asks to stop at (``Action.next_stop``: its next
  multiple, a profiler edge), so every action runs exactly on its step.
* After the call every action observes it (``Action.observe``: accumulate
  metrics, check values), in list order; then every action that is due
  (``Action.due``) runs (``Action.run``), in list order. An action that
  ends the run (a stop request: ``Round.ended``) ends the round too.
"""

import dataclasses
import time
from typing import Callable, List, Optional, Sequence

import numpy as np
import tensorflow as tf


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or Inf."""


def hit(step: int, every: int) -> bool:
  """Whether ``step`` is a multiple of ``every`` (never for ``every`` 0)."""
  return every > 0 and step % every == 0


def next_multiple(step: int, every: int) -> Optional[int]:
  """The first multiple of ``every`` after ``step``; None for ``every`` 0."""
  return (step // every + 1) * every if every > 0 else None


@dataclasses.dataclass
class Round:
  """One host call of the inner step, as the actions see it.

  Attributes:
    start: the global step before the call.
    step: the global step after it.
    totals: the call's summed stats (``step.STAT_FIELDS``).
    elapsed: seconds the call took.
    first_call: the run's first call (tracing and compilation included).
    total_steps: the step the run ends at.
    stopped: the compiled loop took a stop request (the same on every
      worker), or an action did (an evaluation abandoned).
    bad_step: the step whose loss was NaN/Inf, or -1.
    stop_requested: a stop request this worker may act on between calls on
      its own (one worker: no peer to agree with).
    saved: a checkpoint of ``step`` was written in this round.
    ended: an action ended the run (saved, stopped by request).
  """
  start: int
  step: int
  totals: np.ndarray
  elapsed: float
  first_call: bool
  total_steps: int
  stopped: bool = False
  bad_step: int = -1
  stop_requested: Callable[[], bool] = lambda: False
  saved: bool = False
  ended: bool = False

  @property
  def steps(self) -> int:
    """Steps the call ran."""
    return self.step - self.start

  @property
  def final(self) -> bool:
    """Whether the call reached the run's last step."""
    return self.step >= self.total_steps

  def stop_now(self) -> bool:
    """Whether to save and return now: the compiled loop's decision, or
    this worker's own request when it is alone."""
    return self.stopped or bool(self.stop_requested())


class Action:
  """Something the outer loop does between host calls.

  ``every`` steps (0: as ``due`` decides) after the call that reaches such a
  step; subclasses override the hooks they need.
  """

  every: int = 0

  def start(self, step: int, total_steps: int) -> None:
    """Before the first call of the run, which starts at ``step``."""

  def next_stop(self, step: int) -> Optional[int]:
    """The step a call starting at ``step`` must end at for this action,
    or None (default: the next multiple of ``every``)."""
    return next_multiple(step, self.every)

  def before_call(self, step: int, first_call: bool) -> None:
    """Right before a call that starts at ``step``."""

  def observe(self, r: Round) -> None:
    """After every call, before any action runs."""

  def due(self, r: Round) -> bool:
    """Whether to run after this call (default: at multiples of ``every``)."""
    return hit(r.step, self.every)

  def run(self, r: Round) -> None:
    """The action itself, when due."""

  def finish(self) -> None:
    """When the run leaves the loop (finished or stopped by request)."""


class Controller:
  """Drives the inner step to the run's end, with actions between calls;
  owns no TensorFlow state of its own."""

  def __init__(self, *, train_step, iterator, total_steps: int,
               steps_per_loop: int, actions: Sequence[Action],
               stop_requested: Callable[[], bool] = lambda: False,
               clock: Callable[[], float] = time.time):
    """Keeps the step, its input and the actions.

    Args:
      train_step: the inner loop: ``loop(iterator, n)`` runs up to ``n``
        steps and returns (summed stats, the step of a NaN/Inf loss or -1,
        whether it stopped on a request); ``global_step`` is its counter
        (``step.TrainStep``).
      iterator: distributed input iterator of the step.
      total_steps: the step counter the run ends at.
      steps_per_loop: the most steps one call runs.
      actions: what runs between calls, in this order.
      stop_requested: a stop request this worker may act on between calls
        on its own (one worker alone; several wait for the compiled loop's
        agreement at the next step).
      clock: seconds, for the calls' timing.
    """
    self.train_step = train_step
    self.iterator = iterator
    self.total_steps = total_steps
    self.steps_per_loop = steps_per_loop
    self.actions: List[Action] = list(actions)
    self.stop_requested = stop_requested
    self.clock = clock
    self.preempted = False

  def step(self) -> int:
    return int(self.train_step.global_step.numpy())

  def next_stop(self, step: int) -> int:
    """The step the next host call must end at."""
    target = min(step + self.steps_per_loop, self.total_steps)
    for action in self.actions:
      stop = action.next_stop(step)
      if stop is not None:
        target = min(target, stop)
    return target

  def run(self) -> None:
    """Trains to ``total_steps``, or until an action ends the run (then
    ``preempted`` is True)."""
    step = self.step()
    for action in self.actions:
      action.start(step, self.total_steps)
    first_call = True
    while step < self.total_steps:
      stop = self.next_stop(step)
      for action in self.actions:
        action.before_call(step, first_call)
      begin = self.clock()
      totals, bad_step, stopped = self.train_step.loop(
          self.iterator, tf.constant(stop - step, tf.int32))
      totals, stopped = totals.numpy(), bool(stopped)
      elapsed = self.clock() - begin
      r = Round(start=step, step=self.step(), totals=totals,
                elapsed=elapsed, first_call=first_call,
                total_steps=self.total_steps, stopped=stopped,
                bad_step=int(bad_step.numpy()),
                stop_requested=self.stop_requested)
      for action in self.actions:
        action.observe(r)
      for action in self.actions:
        if action.due(r):
          action.run(r)
          if r.ended:
            break
      step, first_call = r.step, False
      if r.ended:
        self.preempted = True
        break
    for action in self.actions:
      action.finish()

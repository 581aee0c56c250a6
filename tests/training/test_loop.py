"""The outer loop: call lengths, and actions at their cadences (no network).

A fake inner step advances a counter by the steps it is asked for, so the
controller's arithmetic and the actions' order are tested on their own.
"""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import actions
from pyramidnet_tf.training import loop


class FakeStep:
  """``step.TrainStep``'s contract: ``loop(iterator, n)`` runs n steps."""

  def __init__(self, start=0, stop_at=None, nan_at=None):
    self.global_step = tf.Variable(start, dtype=tf.int64)
    self.calls = []
    self.stop_at = stop_at      # the compiled loop takes a stop request
    self.nan_at = nan_at        # the loss of this step is NaN

  def loop(self, iterator, n):
    start = int(self.global_step.numpy())
    n = int(n.numpy())
    self.calls.append((start, start + n))
    if self.nan_at is not None and start <= self.nan_at < start + n:
      self.global_step.assign(self.nan_at)
      return tf.zeros([4]), tf.constant(self.nan_at), tf.constant(False)
    if self.stop_at is not None and start < self.stop_at <= start + n:
      self.global_step.assign(self.stop_at)
      return tf.ones([4]), tf.constant(-1), tf.constant(True)
    self.global_step.assign(start + n)
    return tf.ones([4]), tf.constant(-1), tf.constant(False)


class Recorder(loop.Action):
  """Runs every ``every`` steps; records what it saw in a shared journal."""

  def __init__(self, name, every, journal, ends_run_at=None):
    self.name = name
    self.every = every
    self.journal = journal
    self.ends_run_at = ends_run_at

  def start(self, step, total_steps):
    self.journal.append((self.name, "start", step))

  def observe(self, r):
    self.journal.append((self.name, "observe", r.step))

  def run(self, r):
    self.journal.append((self.name, "run", r.step))
    if self.ends_run_at is not None and r.step >= self.ends_run_at:
      r.ended = True

  def finish(self):
    self.journal.append((self.name, "finish", None))


def _controller(step, actions_list, total=100, steps_per_loop=30, **kwargs):
  return loop.Controller(train_step=step, iterator=None, total_steps=total,
                         steps_per_loop=steps_per_loop, actions=actions_list,
                         **kwargs)


def test_calls_end_on_every_action_step_and_never_exceed_steps_per_loop():
  journal = []
  step = FakeStep()
  controller = _controller(step, [Recorder("log", 7, journal),
                                  Recorder("ckpt", 25, journal),
                                  Recorder("eval", 40, journal)])
  controller.run()
  stops = [end for _, end in step.calls]
  for every in (7, 25, 40):
    for k in range(every, 100, every):
      assert k in stops, (every, k)
  assert stops[-1] == 100
  assert all(end - start <= 30 for start, end in step.calls)
  for name, every in (("log", 7), ("ckpt", 25), ("eval", 40)):
    ran = [s for n, what, s in journal if n == name and what == "run"]
    assert ran == list(range(every, 101, every)), name
  assert not controller.preempted


def test_actions_observe_then_run_in_list_order_and_finish_once():
  journal = []
  controller = _controller(FakeStep(), [Recorder("a", 10, journal),
                                        Recorder("b", 5, journal)],
                           total=10, steps_per_loop=10)
  controller.run()
  assert journal == [
      ("a", "start", 0), ("b", "start", 0),
      ("a", "observe", 5), ("b", "observe", 5), ("b", "run", 5),
      ("a", "observe", 10), ("b", "observe", 10),
      ("a", "run", 10), ("b", "run", 10),
      ("a", "finish", None), ("b", "finish", None)]


def test_an_action_that_ends_the_run_ends_the_round_and_the_loop():
  journal = []
  step = FakeStep()
  controller = _controller(step, [Recorder("stop", 10, journal,
                                           ends_run_at=20),
                                  Recorder("after", 10, journal)])
  controller.run()
  assert controller.preempted
  assert step.calls[-1] == (10, 20)
  assert ("after", "run", 20) not in journal    # the round ended
  assert ("after", "run", 10) in journal
  assert journal[-2:] == [("stop", "finish", None), ("after", "finish", None)]


def test_profiler_edges_and_disabled_cadences():
  step = FakeStep()
  controller = _controller(step, [actions.Profiler((5, 9), "/unused"),
                                  Recorder("off", 0, [])],
                           total=50, steps_per_loop=100)
  assert controller.next_stop(0) == 5
  assert controller.next_stop(5) == 9
  assert controller.next_stop(9) == 50
  assert not loop.hit(10, 0)
  assert loop.hit(10, 5) and not loop.hit(11, 5)
  assert loop.next_multiple(10, 5) == 15 and loop.next_multiple(3, 0) is None


def test_a_resumed_run_continues_from_its_step():
  journal = []
  step = FakeStep(start=45)
  _controller(step, [Recorder("epoch", 20, journal)], total=100).run()
  assert step.calls[0] == (45, 60)
  assert [s for _, what, s in journal if what == "run"] == [60, 80, 100]
  assert ("epoch", "start", 45) in journal


class FakeCheckpointer:
  model_dir = "/nowhere"

  def __init__(self):
    self.saves = []
    self.checked = []

  def save(self):
    self.saves.append("save")

  def check_finite(self, step, since=None):
    self.checked.append((step, since))


class FakeEpochLog:

  def __init__(self):
    self.records = []
    self.writes = []

  def record(self, totals, steps, elapsed, first_call):
    self.records.append((steps, first_call))

  def write(self, step, eval_metrics):
    self.writes.append((step, eval_metrics))


def test_checkpoint_epoch_and_stop_actions_at_their_steps():
  checkpointer, epochs = FakeCheckpointer(), FakeEpochLog()
  requested = []
  step = FakeStep()
  controller = _controller(
      step, [actions.FiniteCheck(checkpointer),
             actions.Checkpoint(30, checkpointer),
             actions.EpochRecord(epochs, 20, lambda: {"step": 20}),
             actions.StopRequest(checkpointer)],
      total=100, steps_per_loop=100,
      stop_requested=lambda: bool(requested))
  real_loop = step.loop

  def loop_then_request(iterator, n):
    out = real_loop(iterator, n)
    if int(step.global_step.numpy()) == 60:
      requested.append(True)      # a signal while the call ran
    return out
  step.loop = loop_then_request
  controller.run()
  assert controller.preempted
  assert [end for _, end in step.calls] == [20, 30, 40, 60]
  # Saves at 30 and at 60 (a checkpoint step: the stop saves it only once).
  assert checkpointer.saves == ["save", "save"]
  assert checkpointer.checked == [(20, 0), (30, 20), (40, 30), (60, 40)]
  assert epochs.writes == [(20, {"step": 20}), (40, {"step": 20}),
                           (60, {"step": 20})]
  assert [first for _, first in epochs.records] == [True, False, False,
                                                    False]


def test_stop_request_between_checkpoints_saves_once_and_the_last_step_never():
  checkpointer = FakeCheckpointer()
  step = FakeStep(stop_at=35)
  controller = _controller(step, [actions.Checkpoint(50, checkpointer),
                                  actions.StopRequest(checkpointer)],
                           total=100)
  controller.run()
  assert controller.preempted and controller.step() == 35
  assert len(step.calls) == 2 and checkpointer.saves == ["save"]
  # A request at the last step: the run is over, nothing more to save.
  checkpointer = FakeCheckpointer()
  step = FakeStep(stop_at=100)
  controller = _controller(step, [actions.StopRequest(checkpointer)],
                           total=100, steps_per_loop=100)
  controller.run()
  assert not controller.preempted and checkpointer.saves == []


def test_nan_loss_stops_with_its_step_before_any_action_runs():
  journal = []
  controller = _controller(FakeStep(nan_at=12),
                           [actions.FiniteCheck(FakeCheckpointer()),
                            Recorder("log", 10, journal)], total=50)
  with pytest.raises(loop.NonFiniteLossError,
                     match="NaN/Inf at global step 12 .*update from step 12 "
                     "to 13"):
    controller.run()
  assert ("log", "run", 10) in journal
  assert not any(what == "observe" and s == 12 for _, what, s in journal)


def test_eval_is_skipped_when_a_stop_is_to_be_honoured_now():
  class Evaluation(actions.EvalAction):
    def __init__(self):
      super().__init__(None, None, None, "test", every=10)
      self.ran = []

    def __call__(self):
      self.ran.append(True)
      return {}

  evaluation = Evaluation()
  r = loop.Round(start=0, step=10, totals=np.zeros(4), elapsed=0.0,
                 first_call=False, total_steps=100)
  assert evaluation.due(r)
  r.stop_requested = lambda: True
  assert not evaluation.due(r)
  r = loop.Round(start=0, step=10, totals=np.zeros(4), elapsed=0.0,
                 first_call=False, total_steps=100, stopped=True)
  assert not evaluation.due(r)

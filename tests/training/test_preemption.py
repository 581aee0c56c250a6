"""Stop requests: signals become a flag the compiled loops read every step.

The loop tests run the real ``TrainStep``/``EvalStep`` with a stop flag on
one device and on two replicas (the flag is summed in the stats all-reduce);
the fault tests (``tests/faults/test_signals.py``) deliver real signals to
a training process.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import optim
from pyramidnet_tf.training import preemption
from pyramidnet_tf.training import schedules
from pyramidnet_tf.training import step as step_lib

BATCH = 4


def _wait_for(predicate, timeout=600.0):
  """Polls ``predicate`` (the watcher thread acts asynchronously); the
  timeout is a hang guard only."""
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, "condition never became true"
    time.sleep(0.01)


@pytest.fixture
def stop_signals():
  lines, aborts = [], []
  stop = preemption.StopSignals(abort=aborts.append, write=lines.append)
  stop.install()
  try:
    yield stop, lines, aborts
  finally:
    stop.uninstall()


@pytest.mark.parametrize("signum", preemption.STOP_SIGNALS)
def test_a_signal_sets_the_flag_and_says_so(stop_signals, signum):
  stop, lines, aborts = stop_signals
  flag = tf.Variable(0.0)
  stop.attach(flag)
  os.kill(os.getpid(), signum)
  _wait_for(lambda: float(flag.numpy()) == 1.0 and lines)
  assert stop.requested and stop.received == signum
  assert stop.signal_name == signal.Signals(signum).name
  assert lines and lines[0].startswith(f"got {stop.signal_name}: stopping "
                                       "after the step in progress")
  assert not aborts


def test_a_request_before_the_variable_exists_is_applied_on_attach(
    stop_signals):
  stop, _, _ = stop_signals
  os.kill(os.getpid(), signal.SIGTERM)
  _wait_for(lambda: stop.requested)
  flag = tf.Variable(0.0)
  stop.attach(flag)
  assert float(flag.numpy()) == 1.0


def test_second_ctrl_c_aborts_with_one_line_but_second_sigterm_does_not(
    stop_signals):
  stop, lines, aborts = stop_signals
  os.kill(os.getpid(), signal.SIGINT)
  _wait_for(lambda: lines)
  assert "Ctrl-C again to abort" in lines[0]
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(0.2)
  assert not aborts
  os.kill(os.getpid(), signal.SIGINT)
  _wait_for(lambda: aborts)
  assert aborts == [130]
  assert lines[-1].startswith("got SIGINT again: aborting without saving")


def test_uninstall_restores_the_handlers_and_ends_the_watcher():
  before = {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS}
  stop = preemption.StopSignals(abort=lambda code: None, write=lambda t: None)
  stop.install()
  assert all(signal.getsignal(s) != before[s]
             for s in preemption.STOP_SIGNALS)
  thread = stop._thread  # pylint: disable=protected-access
  stop.uninstall()
  assert {s: signal.getsignal(s) for s in preemption.STOP_SIGNALS} == before
  assert not thread.is_alive()


def _train_step(strategy, model, stop_flag):
  with strategy.scope():
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False)
    optimizer = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
  return step_lib.TrainStep(
      strategy=strategy, model=model, optimizer=optimizer,
      schedule=schedules.Schedule("step", 0.01, 10, 1000, ()),
      global_step=global_step, global_batch=BATCH, stop_flag=stop_flag)


def _iterator(strategy, on_batch=None):
  """Random CIFAR batches; ``on_batch(i)`` runs as batch ``i`` is made
  (a py_function: from inside the compiled loop, as a signal would)."""
  images = np.random.RandomState(0).rand(BATCH, 32, 32, 3).astype(np.float32)
  labels = np.arange(BATCH, dtype=np.int32) % 10

  def input_fn(context):
    dataset = tf.data.Dataset.from_tensors(
        (images[:BATCH // context.num_replicas_in_sync],
         labels[:BATCH // context.num_replicas_in_sync])).repeat()
    if on_batch is None:
      return dataset

    def tagged(i, batch):
      tf.py_function(lambda i: on_batch(int(i)), [i], [])
      return batch
    return dataset.enumerate().map(tagged)
  return iter(strategy.distribute_datasets_from_function(input_fn))


@pytest.mark.parametrize("replicas", [1, 2])
def test_train_loop_stops_after_the_step_in_progress(
    tiny_pyramidnet, two_replica_strategy, replicas):
  strategy = (two_replica_strategy if replicas == 2 else
              tf.distribute.OneDeviceStrategy("/cpu:0"))
  with strategy.scope():
    model = tiny_pyramidnet(seed=1)
  flag = tf.Variable(0.0)
  train_step = _train_step(strategy, model, flag)
  # The flag is set while batch 3 (the fourth step) is being made, i.e.
  # during a step: the loop of 200 steps must end right after it. Batches
  # are prefetched, so the set happens at most a few steps ahead of use.
  made = []

  def on_batch(i):
    made.append(i)
    if i == 3:
      flag.assign(1.0)
  totals, bad, stopped = train_step.loop(_iterator(strategy, on_batch),
                                         tf.constant(200))
  assert bool(stopped) and int(bad) == -1
  done = int(train_step.global_step.numpy())
  assert 1 <= done <= 5, done          # not 200: the request ended the loop
  assert step_lib.Totals.of(totals).examples == done * BATCH
  # A cleared flag trains on.
  flag.assign(0.0)
  _, _, stopped = train_step.loop(_iterator(strategy), tf.constant(3))
  assert not bool(stopped)
  assert int(train_step.global_step.numpy()) == done + 3


def test_train_loop_without_a_request_runs_every_step(tiny_pyramidnet):
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    model = tiny_pyramidnet(seed=1)
  train_step = _train_step(strategy, model, tf.Variable(0.0))
  _, _, stopped = train_step.loop(_iterator(strategy), tf.constant(4))
  assert not bool(stopped) and int(train_step.global_step.numpy()) == 4


def test_eval_loop_stops_early_on_a_request(tiny_pyramidnet,
                                            two_replica_strategy):
  strategy = two_replica_strategy
  with strategy.scope():
    model = tiny_pyramidnet(seed=1)
  flag = tf.Variable(1.0)
  eval_step = step_lib.EvalStep(strategy=strategy, model=model,
                                stop_flag=flag)
  totals, stopped = eval_step.loop(_iterator(strategy), tf.constant(50))
  assert bool(stopped)
  assert step_lib.Totals.of(totals).examples == BATCH   # one batch only
  flag.assign(0.0)
  totals, stopped = eval_step.loop(_iterator(strategy), tf.constant(5))
  assert not bool(stopped)
  assert step_lib.Totals.of(totals).examples == 5 * BATCH


def test_a_signal_from_another_thread_reaches_a_running_loop(tiny_pyramidnet):
  """The real path: the watcher thread sets the flag while the main thread
  is inside the compiled loop."""
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  with strategy.scope():
    model = tiny_pyramidnet(seed=1)
  stop = preemption.StopSignals(abort=lambda code: None, write=lambda t: None)
  stop.install()
  try:
    flag = tf.Variable(0.0)
    stop.attach(flag)
    train_step = _train_step(strategy, model, flag)
    train_step.loop(_iterator(strategy), tf.constant(1))   # trace first
    started = threading.Event()

    def on_batch(i):
      if i == 2:
        started.set()
    sender = threading.Thread(target=lambda: (
        started.wait(60), os.kill(os.getpid(), signal.SIGUSR1)))
    sender.start()
    _, _, stopped = train_step.loop(_iterator(strategy, on_batch),
                                    tf.constant(100000))
    sender.join()
  finally:
    stop.uninstall()
  assert bool(stopped)
  assert int(train_step.global_step.numpy()) < 1000

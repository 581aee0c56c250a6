"""Stop requests by signal, acted on at the next step boundary.

SIGTERM (Kubernetes eviction, Slurm preemption and ``scancel``), SIGUSR1
(Slurm's ``--signal=USR1@N`` before the time limit) and SIGINT (Ctrl-C) ask
the trainer to stop: it finishes the step in progress, saves a checkpoint of
that step on every worker and exits with ``exit_codes.PREEMPTED`` (143). A
second Ctrl-C aborts at once, without saving (``exit_codes.ABORTED``).

Why a watcher thread: Python runs signal handlers in the main thread, between
bytecodes, and the main thread spends the run inside one compiled call of
``steps_per_loop`` steps (200 in the ImageNet flagfiles, minutes of work), so
a handler would only run after it, too late for Slurm's and Kubernetes' 30 s
grace. Python's C-level handler also writes the signal's number to the
wake-up file descriptor at once; a thread blocked on that pipe sees it
within microseconds and sets a host variable that the compiled loop reads at
every step (``step.TrainStep``). The loop adds the flags of all replicas and
workers into its per-step stats all-reduce, so every worker stops after the
same step without an extra collective.
"""

import os
import signal
import sys
import threading
from typing import Callable, Optional, Sequence

from pyramidnet_tf import exit_codes

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


def _write_line(text: str) -> None:
  """One line on stderr, unbuffered (from any thread)."""
  try:
    os.write(sys.stderr.fileno(), (text + "\n").encode())
  except (OSError, ValueError):
    pass


class StopSignals:
  """Turns stop signals into a flag the compiled step reads.

  Install it (main thread) before anything slow, attach the host variable
  once TensorFlow has created it, uninstall when the run is over.
  """

  def __init__(self, signals: Sequence[int] = STOP_SIGNALS, *,
               abort: Callable[[int], None] = os._exit,
               write: Callable[[str], None] = _write_line):
    """Configures, installs nothing yet.

    Args:
      signals: the signals that request a stop.
      abort: ends the process on a second SIGINT (tests replace it).
      write: prints one line (tests replace it).
    """
    self.signals = tuple(signals)
    self._abort = abort
    self._write = write
    self._lock = threading.Lock()
    self._variable = None
    self._step = None
    self.received: Optional[int] = None   # the first stop signal's number
    self._previous = {}
    self._previous_wakeup_fd = -1
    self._read_fd = self._write_fd = -1
    self._thread: Optional[threading.Thread] = None

  @property
  def requested(self) -> bool:
    return self.received is not None

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.received).name if self.received else ""

  def install(self) -> None:
    """Installs the handlers and the watcher (call from the main thread)."""
    if self._thread is not None:
      return
    self._read_fd, self._write_fd = os.pipe()
    os.set_blocking(self._write_fd, False)
    self._previous_wakeup_fd = signal.set_wakeup_fd(
        self._write_fd, warn_on_full_buffer=False)
    for signum in self.signals:
      # The Python handler does nothing: the watcher acts on the wake-up
      # byte at once, the handler would run only after the compiled call.
      self._previous[signum] = signal.signal(signum, _ignore)
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name="stop-signals")
    self._thread.start()

  def reclaim(self) -> None:
    """Takes the signals back from TensorFlow (call after the strategy).

    Creating a multi-worker strategy starts TensorFlow's coordination
    service, whose C++ preemption notifier installs its own SIGTERM handler
    over Python's: without this, SIGTERM would only set TensorFlow's
    internal flag, which nothing here reads.
    """
    if self._thread is None:
      return
    for signum in self.signals:
      signal.signal(signum, _ignore)

  def uninstall(self) -> None:
    """Restores the previous handlers; the watcher thread ends."""
    if self._thread is None:
      return
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
    signal.set_wakeup_fd(self._previous_wakeup_fd)
    os.close(self._write_fd)   # the watcher's read returns b"": it ends
    self._thread.join(timeout=5)
    os.close(self._read_fd)
    self._thread = None

  def attach(self, variable, step=None) -> None:
    """Sets ``variable`` (a float tf.Variable) to 1 on a stop request.

    A request that came before it existed is applied at once.

    Args:
      variable: the host flag the compiled loops read.
      step: optional global-step variable, read when a signal arrives so
        its line says which step was in progress.
    """
    with self._lock:
      self._variable = variable
      self._step = step
      if self.requested:
        variable.assign(1.0)

  def _watch(self) -> None:
    while True:
      try:
        data = os.read(self._read_fd, 64)
      except OSError:
        return
      if not data:
        return
      for signum in data:
        if signum in self.signals:
          self.handle(signum)

  def handle(self, signum: int) -> None:
    """Acts on one delivered signal (called by the watcher thread)."""
    name = signal.Signals(signum).name
    with self._lock:
      first = self.received is None
      finished = None
      if first:
        self.received = signum
        # Read from this thread while a step runs: the loop stops at the
        # step named below or a neighbour of it (the counter moves inside a
        # step, and a step may read the request just before it is set).
        if self._step is not None:
          finished = int(self._step.numpy())
        if self._variable is not None:
          self._variable.assign(1.0)
    if first:
      # The counter counts finished steps: the one in progress is next.
      where = (f" during step {finished + 1}" if finished is not None
               else "")
      again = (" (Ctrl-C again to abort without saving)"
               if signum == signal.SIGINT else "")
      self._write(f"got {name}{where}: stopping after the step in progress "
                  f"and saving a checkpoint{again}")
    elif signum == signal.SIGINT:
      self._write(f"got SIGINT again: aborting without saving (exit code "
                  f"{exit_codes.ABORTED}); the newest checkpoint on disk is "
                  "where a rerun resumes")
      self._abort(exit_codes.ABORTED)


def _ignore(signum, frame) -> None:  # pylint: disable=unused-argument
  """The Python-level handler: the watcher thread does the work."""

"""Ends a run that waits forever on something outside it, with one line.

A tf.data service client waits without limit: for a dispatcher nobody
started (``grpc://localhost:1``), for workers that all died, for a job that
never produces. The wait happens inside a compiled call that Python cannot
interrupt, so the run would hang after its first line until a scheduler
kills it. ``ProgressWatchdog`` watches a progress counter (the global step)
from a thread while it is armed; when the counter has not moved for
``timeout_s`` seconds it prints its message and ends the process with
``exit_codes.FAILED``. It is armed only around waits whose length does not
depend on compilation (fetching a first element, train calls after the
first), so a slow first compile never trips it.

``wait_for_port`` is the cheap first check: a TCP connection to the
dispatcher, retried until the timeout, before anything waits on gRPC.
"""

import contextlib
import os
import socket
import sys
import threading
import time
from typing import Callable, Optional

from pyramidnet_tf import exit_codes


def _write_line(text: str) -> None:
  try:
    os.write(sys.stderr.fileno(), (text + "\n").encode())
  except (OSError, ValueError):
    pass


def wait_for_port(host: str, port: int, timeout_s: float, *,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> bool:
  """Whether ``host:port`` accepts a TCP connection within ``timeout_s``.

  Args:
    host: host name or address (brackets of an IPv6 address are removed).
    port: TCP port.
    timeout_s: how long to keep retrying (a dispatcher may start after the
      trainers).
    clock: monotonic seconds (tests inject one).
    sleep: waits between attempts (tests inject one).
  """
  host = host.strip("[]")
  deadline = clock() + timeout_s
  while True:
    try:
      with socket.create_connection((host, port),
                                    timeout=min(5.0, max(timeout_s, 0.1))):
        return True
    except OSError:
      if clock() >= deadline:
        return False
    sleep(min(1.0, max(deadline - clock(), 0.0)))


class ProgressWatchdog:
  """Ends the process when ``progress()`` stalls while armed.

  Args of the constructor:
    timeout_s: seconds without progress, while armed, before it fires.
    progress: returns a counter that grows while things work (called from
      the watchdog's thread).
    message: the line printed when it fires.
    on_timeout: ends the process (tests replace it); gets the exit code.
    write: prints the line (tests replace it).
    clock: monotonic seconds (tests inject one).
    poll_s: how often the thread looks.
  """

  def __init__(self, timeout_s: float, progress: Callable[[], int],
               message: str, *,
               on_timeout: Callable[[int], None] = os._exit,
               write: Callable[[str], None] = _write_line,
               clock: Callable[[], float] = time.monotonic,
               poll_s: Optional[float] = None):
    self.timeout_s = timeout_s
    self._progress = progress
    self.message = message
    self._on_timeout = on_timeout
    self._write = write
    self._clock = clock
    self._poll_s = poll_s if poll_s is not None else min(
        1.0, max(timeout_s / 10, 0.01))
    self._lock = threading.Lock()
    self._armed_since: Optional[float] = None
    self._last_value = None
    self._closed = threading.Event()
    self.fired = False
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name="progress-watchdog")
    self._thread.start()

  def arm(self) -> None:
    """Starts watching from now."""
    value = self._progress()
    with self._lock:
      self._armed_since = self._clock()
      self._last_value = value

  def disarm(self) -> None:
    with self._lock:
      self._armed_since = None

  @contextlib.contextmanager
  def armed(self):
    self.arm()
    try:
      yield
    finally:
      self.disarm()

  def check(self) -> None:
    """One look: fires when armed and stalled past the timeout."""
    with self._lock:
      if self._armed_since is None or self.fired:
        return
      since, last = self._armed_since, self._last_value
    value = self._progress()
    now = self._clock()
    with self._lock:
      if self._armed_since is None:
        return
      if value != last:
        self._armed_since, self._last_value = now, value
        return
      if now - since < self.timeout_s:
        return
      self.fired = True
    self._write(self.message)
    self._on_timeout(exit_codes.FAILED)

  def _watch(self) -> None:
    while not self._closed.wait(self._poll_s):
      self.check()

  def close(self) -> None:
    """Stops the thread."""
    self._closed.set()
    self._thread.join(timeout=5)

"""Progress reporting: a one-line bar on a terminal, periodic log lines otherwise."""

import sys
import time
from typing import Callable, Optional, TextIO

from absl import logging


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"


class Progress:
  """Counts finished images; shows images/s and ETA.

  On a terminal (`stream.isatty()`) the line is redrawn at most `refresh_s` apart; otherwise
  a plain log line is written every `log_every_s` seconds, so CI logs and `nohup` files stay
  readable.
  """

  def __init__(self, total: int, what: str, stream: Optional[TextIO] = None,
               refresh_s: float = 0.2, log_every_s: float = 30.0,
               clock: Callable[[], float] = time.monotonic):
    self.total = total
    self.what = what
    self.done = 0
    self._stream = stream if stream is not None else sys.stderr
    self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
    self._clock = clock
    self._start = clock()
    self._last_draw = -float("inf")
    self._interval = refresh_s if self._tty else log_every_s
    self._drawn = False
    if not self._tty:
      self._last_draw = self._start  # the first log line comes after one interval

  def line(self) -> str:
    elapsed = max(self._clock() - self._start, 1e-9)
    rate = self.done / elapsed
    if self.total:
      percent = 100.0 * self.done / self.total
      eta = _duration((self.total - self.done) / rate) if rate > 0 else "?"
      return (f"{self.what}: {self.done:,}/{self.total:,} images ({percent:5.1f}%) "
              f"{rate:,.0f} images/s, ETA {eta}")
    return f"{self.what}: {self.done:,} images, {rate:,.0f} images/s"

  def add(self, count: int) -> None:
    self.set(self.done + count)

  def set(self, done: int) -> None:
    self.done = done
    now = self._clock()
    if now - self._last_draw >= self._interval:
      self._last_draw = now
      self._draw()

  def _draw(self) -> None:
    if self._tty:
      bar_width = 24
      filled = int(bar_width * self.done / self.total) if self.total else 0
      bar = "#" * filled + "." * (bar_width - filled)
      self._stream.write(f"\r[{bar}] {self.line()}\x1b[K")
      self._stream.flush()
      self._drawn = True
    else:
      logging.info("%s", self.line())

  def close(self) -> None:
    """Draws the final state (and ends the terminal line)."""
    if self._tty:
      self._draw()
      self._stream.write("\n")
      self._stream.flush()
    else:
      logging.info("%s (done in %s)", self.line(), _duration(self._clock() - self._start))

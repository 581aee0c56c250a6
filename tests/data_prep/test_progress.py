"""data_prep.progress: a bar on a terminal, periodic log lines otherwise."""

import io

from data_prep import progress as progress_lib


class _Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_on_a_terminal_shows_rate_and_eta():
  clock, stream = _Clock(), _Terminal()
  bar = progress_lib.Progress(1000, "writing", stream=stream, clock=clock)
  clock.t = 2.0
  bar.add(500)
  text = stream.getvalue()
  assert text.startswith("\r[############............] writing: 500/1,000 images")
  assert "250 images/s, ETA 0:00:02" in text
  bar.close()
  assert stream.getvalue().endswith("\n")


def test_progress_without_terminal_logs_periodically(monkeypatch):
  lines = []
  monkeypatch.setattr(progress_lib.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  clock = _Clock()
  bar = progress_lib.Progress(100, "writing", stream=io.StringIO(), clock=clock,
                              log_every_s=30)
  clock.t = 10.0
  bar.add(10)
  assert lines == []
  clock.t = 31.0
  bar.add(10)
  assert lines == ["writing: 20/100 images ( 20.0%) 1 images/s, ETA 0:02:04"]
  bar.close()
  assert lines[-1].endswith("(done in 0:00:31)")

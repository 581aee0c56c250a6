"""bench_common.run_row_process's time box, on an injected clock.

The box is kept in seconds of the clock it is given, so these tests decide
every outcome with a fake clock: a stalled clock never ends a box (the child
ends by itself), a jumping one ends it at the first look, and a box counted
from a progress line starts only when the child prints it. Real time enters
only as the poll interval and hang guards.
"""

import itertools
import sys

from bench import bench_common

PREFIX = "ROW "


def _child(code: str):
  return [sys.executable, "-c", "import json, sys, time\n" + code]


def _say(record) -> str:
  return f"print({PREFIX!r} + json.dumps({record!r}), flush=True)\n"


def _jumping():
  """A clock that moves on by an hour at every reading."""
  hours = itertools.count(0, 3600)
  return lambda: float(next(hours))


def test_a_stalled_clock_never_ends_the_box():
  result = bench_common.run_row_process(
      _child("time.sleep(1)\n" + _say({"rate": 1.0})), PREFIX, timeout_s=1,
      clock=lambda: 0.0, poll_s=0.05)
  assert not result["timed_out"] and result["returncode"] == 0
  assert result["row"] == {"rate": 1.0} and result["wall_s"] == 0.0


def test_a_jumping_clock_ends_the_box_at_once():
  result = bench_common.run_row_process(
      _child(_say({"progress": "first_step"}) + "time.sleep(600)\n"),
      PREFIX, timeout_s=60, clock=_jumping(), poll_s=0.05)
  assert result["timed_out"] and result["returncode"] == -9
  assert result["row"] is None
  assert result["wall_s"] >= 60


def test_a_box_counted_from_a_progress_line_waits_for_it():
  # Before "hang" the clock jumps by hours and the box must not start; the
  # child then prints it and hangs, and the jumping clock ends the box.
  code = (_say({"progress": "first_step", "first_step_s": 0.5})
          + "time.sleep(1)\n" + _say({"progress": "hang"})
          + "time.sleep(600)\n")
  result = bench_common.run_row_process(
      _child(code), PREFIX, timeout_s=60, clock=_jumping(), box_from="hang",
      poll_s=0.05)
  assert result["timed_out"]
  assert result["progress"] == {"progress": "hang", "first_step_s": 0.5}
  # Without box_from the same child is killed before its hang.
  early = bench_common.run_row_process(
      _child(code), PREFIX, timeout_s=60, clock=_jumping(), poll_s=0.05)
  assert early["timed_out"] and early["progress"].get("progress") != "hang"

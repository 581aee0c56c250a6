"""The fault-injection suite's ledger: every test injects faults through the
``faults`` fixture, and the run ends with the totals (faults injected, how
many were handled, data lost), so that a regression shows as a number.

    def test_truncated_shard(faults, ...):
      with faults.inject("truncated shard: evaluate") as fault:
        ...                      # inject it, run the CLI, check the outcome
        fault.lost = 0           # records / steps / files lost, if any

A fault counts as handled when its block finishes without an exception (the
test's checks of the outcome passed). ``fault.lost`` is what the test measured
was lost (0 unless set); a test that finds data lost must also fail.
"""

import contextlib
from typing import Dict, List

import pytest

_KEY = "fault"   # the user_properties entries this suite adds to reports


class Ledger:
  """The faults one test injects, recorded in its report.

  Each fault is a dict in the test item's ``user_properties``, which pytest
  copies into the test's reports, and pytest-xdist sends from the worker
  that ran the test to the process that prints the summary.
  """

  def __init__(self, user_properties: list):
    self._user_properties = user_properties

  @contextlib.contextmanager
  def inject(self, name: str):
    fault = {"name": name, "handled": False, "lost": 0}
    self._user_properties.append((_KEY, fault))
    yield _Outcome(fault)
    fault["handled"] = True


class _Outcome:
  """What a test measured of one fault: ``lost`` (records, steps, files)."""

  def __init__(self, fault: dict):
    self._fault = fault

  @property
  def lost(self) -> int:
    return self._fault["lost"]

  @lost.setter
  def lost(self, value: int) -> None:
    self._fault["lost"] = int(value)


@pytest.fixture
def faults(request) -> Ledger:
  return Ledger(request.node.user_properties)


def _recorded(terminalreporter) -> List[Dict]:
  """Every fault of the run, from the reports of the tests' call phase."""
  recorded = []
  for reports in terminalreporter.stats.values():
    for report in reports:
      if getattr(report, "when", None) != "call":
        continue
      recorded += [value for key, value in getattr(
          report, "user_properties", ()) if key == _KEY]
  return recorded


def pytest_terminal_summary(terminalreporter):
  recorded = _recorded(terminalreporter)
  if not recorded:
    return
  handled = sum(f["handled"] for f in recorded)
  lost = sum(f["lost"] for f in recorded)
  terminalreporter.section("fault injection")
  terminalreporter.write_line(
      f"faults injected: {len(recorded)}, handled: {handled}, "
      f"data lost: {lost}")
  for fault in recorded:
    if not fault["handled"] or fault["lost"]:
      terminalreporter.write_line(
          f"  NOT HANDLED: {fault['name']}" if not fault["handled"] else
          f"  LOST {fault['lost']}: {fault['name']}")

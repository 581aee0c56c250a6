"""The fault-injection ledger: what each test injected, and the run's totals.

``tests/faults/conftest.py`` gives tests a ``Ledger`` (the ``faults``
fixture); ``tests/conftest.py`` prints ``write_summary`` at the end of the
run. The summary hook sits in the top-level conftest because under
pytest-xdist only that one is loaded by the process that prints it.
"""

import contextlib
from typing import Dict, List

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


def recorded(terminalreporter) -> List[Dict]:
  """Every fault of the run, from the reports of the tests' call phase."""
  found = []
  for reports in terminalreporter.stats.values():
    for report in reports:
      if getattr(report, "when", None) != "call":
        continue
      found += [value for key, value in getattr(
          report, "user_properties", ()) if key == _KEY]
  return found


def write_summary(terminalreporter) -> None:
  """The totals and every fault not handled or with data lost."""
  found = recorded(terminalreporter)
  if not found:
    return
  handled = sum(f["handled"] for f in found)
  lost = sum(f["lost"] for f in found)
  terminalreporter.section("fault injection")
  terminalreporter.write_line(
      f"faults injected: {len(found)}, handled: {handled}, "
      f"data lost: {lost}")
  for fault in found:
    if not fault["handled"] or fault["lost"]:
      terminalreporter.write_line(
          f"  NOT HANDLED: {fault['name']}" if not fault["handled"] else
          f"  LOST {fault['lost']}: {fault['name']}")

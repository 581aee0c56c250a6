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
import dataclasses
from typing import List

import pytest


@dataclasses.dataclass
class Fault:
  name: str
  handled: bool = False
  lost: int = 0


class Ledger:
  """Faults of this pytest run, in the order they were injected."""

  def __init__(self):
    self.faults: List[Fault] = []

  @contextlib.contextmanager
  def inject(self, name: str):
    fault = Fault(name)
    self.faults.append(fault)
    yield fault
    fault.handled = True

  def totals(self) -> dict:
    return {"injected": len(self.faults),
            "handled": sum(f.handled for f in self.faults),
            "data lost": sum(f.lost for f in self.faults)}


_LEDGER = Ledger()


@pytest.fixture
def faults() -> Ledger:
  return _LEDGER


def pytest_terminal_summary(terminalreporter):
  if not _LEDGER.faults:
    return
  totals = _LEDGER.totals()
  terminalreporter.section("fault injection")
  terminalreporter.write_line(
      f"faults injected: {totals['injected']}, handled: {totals['handled']}, "
      f"data lost: {totals['data lost']}")
  for fault in _LEDGER.faults:
    if not fault.handled or fault.lost:
      terminalreporter.write_line(
          f"  NOT HANDLED: {fault.name}" if not fault.handled else
          f"  LOST {fault.lost}: {fault.name}")

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

import pytest

from tests.faults import ledger


@pytest.fixture
def faults(request) -> ledger.Ledger:
  return ledger.Ledger(request.node.user_properties)

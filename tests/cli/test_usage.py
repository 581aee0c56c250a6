"""Every flag of every tool is placed: in a --help group or among the knobs."""

import subprocess
import sys

import pytest

from tests import REPO_ROOT

# (tool module, groups name, knobs name)
TOOLS = [
    ("train", "TRAIN_GROUPS", "TRAIN_KNOBS"),
    ("evaluate", "EVALUATE_GROUPS", "EVALUATE_KNOBS"),
    ("export", "EXPORT_GROUPS", "EXPORT_KNOBS"),
    ("predict", "PREDICT_GROUPS", "PREDICT_KNOBS"),
    ("describe", "DESCRIBE_GROUPS", "DESCRIBE_KNOBS"),
    ("import_torch", "IMPORT_GROUPS", "IMPORT_KNOBS"),
    ("export_torch", "EXPORT_TORCH_GROUPS", "EXPORT_TORCH_KNOBS"),
    ("data_service", "DATA_SERVICE_GROUPS", "DATA_SERVICE_KNOBS"),
]

_PROGRAM = """
import json, sys
from absl import flags
import pyramidnet_tf.{tool}
from pyramidnet_tf.cli import usage
groups = usage.{groups}
knobs = usage.{knobs}
grouped = [n for _, names in groups for n in names]
print(json.dumps(dict(defined=usage.defined_names(), grouped=grouped,
                      knobs=None if knobs is None else list(knobs))))
"""


@pytest.mark.parametrize("tool,groups,knobs", TOOLS, ids=[t[0] for t in TOOLS])
def test_every_flag_of_the_tool_is_in_a_group_or_a_knob(tool, groups, knobs):
  import json  # pylint: disable=g-import-not-at-top
  result = subprocess.run(
      [sys.executable, "-c", _PROGRAM.format(tool=tool, groups=groups,
                                             knobs=knobs)],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  info = json.loads(result.stdout.strip().splitlines()[-1])
  defined, grouped = set(info["defined"]), info["grouped"]
  assert len(grouped) == len(set(grouped)), "a flag is in two groups"
  missing = set(grouped) - defined
  assert not missing, f"grouped but not defined by {tool}: {sorted(missing)}"
  if info["knobs"] is None:  # describe: every other flag is a knob
    return
  knob_set = set(info["knobs"])
  assert not knob_set & set(grouped)
  unplaced = defined - set(grouped) - knob_set
  assert not unplaced, (
      f"flags of {tool} in no --help group and not listed as knobs in "
      f"pyramidnet_tf/cli/usage.py: {sorted(unplaced)}")

"""Which modules may import TensorFlow: the tools check their flags and
answer --help before TensorFlow's seconds-long start, so ``cli/``, the tool
modules (their flag definitions and checks) and the TF-free helpers they use
import no TensorFlow; everything else may import it at the top.
"""

import os
import pkgutil
import subprocess
import sys

import pytest

import pyramidnet_tf
from pyramidnet_tf import cli as cli_package

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

TOOLS = ["train", "evaluate", "export", "export_torch", "import_torch",
         "predict", "describe", "data_service", "launch_local"]
# TF-free modules below cli/ that it and the tools use.
FOUNDATION = ["exit_codes", "options", "errors", "console_base",
              "recipe_book", "runtime.cluster_env", "runtime.service_address"]


def _cli_modules():
  return [f"pyramidnet_tf.cli.{m.name}"
          for m in pkgutil.iter_modules(cli_package.__path__)]




def test_the_list_names_every_tool_and_cli_module():
  """A tool added to the package is added here (or the test cannot see it
  importing TensorFlow at flag-checking time)."""
  top = {m.name for m in pkgutil.iter_modules(pyramidnet_tf.__path__)
         if not m.ispkg}
  assert top - {"tf_import"} == set(TOOLS) | {
      name for name in FOUNDATION if "." not in name}
  assert len(_cli_modules()) > 10


@pytest.mark.parametrize("group", ["foundation and cli"] + TOOLS)
def test_cli_and_the_tools_import_no_tensorflow(no_tensorflow, group):
  """Each tool in a process of its own (tools define flags of the same
  names); cli/ and the foundation together."""
  modules = (["pyramidnet_tf"] + _cli_modules() +
             [f"pyramidnet_tf.{name}" for name in FOUNDATION]
             if group == "foundation and cli" else [f"pyramidnet_tf.{group}"])
  program = (
      "import importlib, sys\n"
      "for name in sys.argv[1:]:\n"
      "  try:\n"
      "    importlib.import_module(name)\n"
      "  except ImportError as e:\n"
      "    sys.exit(f'{name}: {e}')\n")
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join([no_tensorflow, REPO_ROOT]))
  proc = subprocess.run([sys.executable, "-c", program] + modules,
                        capture_output=True, text=True, env=env,
                        cwd=REPO_ROOT, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_blocker_does_block(no_tensorflow):
  """The check above would pass vacuously if the stand-in package did not
  shadow TensorFlow."""
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join([no_tensorflow, REPO_ROOT]))
  proc = subprocess.run([sys.executable, "-c", "import tensorflow"],
                        capture_output=True, text=True, env=env,
                        timeout=300)
  assert proc.returncode != 0
  assert "TensorFlow was imported" in proc.stderr


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))

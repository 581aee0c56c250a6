"""Every import arrow points down the layers of docs/architecture.md.

``scripts/code_metrics.py`` holds the layers (foundation, model, data and
runtime and model_dir and convert, training, cli and the tools and
data_prep); a module that imports from a layer above its own (a library
module importing from ``cli/``, data_prep importing anything of
pyramidnet_tf but the foundation) fails here with the arrow named.
"""

import importlib.util
import os

from tests import REPO_ROOT


def _code_metrics():
  path = os.path.join(REPO_ROOT, "scripts", "code_metrics.py")
  spec = importlib.util.spec_from_file_location("code_metrics", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_no_import_points_up_a_layer():
  assert _code_metrics().measure()["upward_imports"] == []


"""pyramidnet-tf's tests; their layout mirrors the package's subpackages."""

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

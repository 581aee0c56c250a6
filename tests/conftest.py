"""Test session set-up and fixtures shared by every test file.

Two logical CPU devices let single-host tests run MirroredStrategy with two
replicas (sync BN, per-replica batches) on a CPU-only machine. This must
happen before TensorFlow initialises its devices, hence here.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pyramidnet_tf  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import  (TF without Keras) # noqa: F401
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

# After the device set-up above, which must come first.
# pylint: disable=g-import-not-at-top,wrong-import-position
import pytest

from pyramidnet_tf.model import network as model_lib
# pylint: enable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session")
def tiny_pyramidnet():
  """Factory for the small PyramidNets that unit tests build by the dozen.

  Returns ``build(depth=8, alpha=4, bottleneck=False, *, dataset="cifar10",
  seed=None, **kwargs)``, which calls ``PyramidNet(dataset, depth, alpha,
  bottleneck, **kwargs)``: the defaults are the smallest valid CIFAR network
  (the CLI tests' ``TINY_MODEL``), so a test names only what it varies.
  With ``seed`` it first calls ``tf.random.set_seed(seed)``, for tests that
  compare against or depend on the random initialisation. Variables are
  created where ``build`` is called, e.g. under a strategy's scope.

  The factory holds no state, hence one per session (usable from fixtures
  of any scope).
  """
  def build(depth=8, alpha=4, bottleneck=False, *, dataset="cifar10",
            seed=None, **kwargs):
    if seed is not None:
      tf.random.set_seed(seed)
    return model_lib.PyramidNet(dataset, depth, alpha, bottleneck, **kwargs)
  return build


@pytest.fixture
def two_replica_strategy():
  """A MirroredStrategy with one replica on each of the two logical CPUs.

  The replicas exercise what a single device cannot: sync BN's all-reduce,
  per-replica batches and random draws. ReductionToOneDevice is what
  MirroredStrategy picks for CPU devices by default; it is named here so
  that the reduction is explicit. A fresh strategy per test, so that no
  test sees another's variables or traced functions.
  Skips when the logical devices were not set up (TensorFlow initialised
  before this conftest ran).
  """
  devices = tf.config.list_logical_devices("CPU")
  if len(devices) < 2:
    pytest.skip("needs 2 logical CPU devices (set up before TF runs)")
  return tf.distribute.MirroredStrategy(
      [d.name for d in devices[:2]],
      cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.fixture(scope="session")
def no_tensorflow(tmp_path_factory):
  """A PYTHONPATH entry whose ``tensorflow`` fails to import: put first, a
  tool that reaches any TensorFlow import ends with that error instead,
  which shows what a tool does before TensorFlow starts."""
  root = tmp_path_factory.mktemp("no_tf")
  (root / "tensorflow").mkdir()
  (root / "tensorflow" / "__init__.py").write_text(
      "raise ImportError('TensorFlow was imported')\n")
  return str(root)


def pytest_terminal_summary(terminalreporter):
  """The fault-injection suite's totals (tests/faults/ledger.py)."""
  from tests.faults import ledger  # pylint: disable=g-import-not-at-top
  ledger.write_summary(terminalreporter)


# The files that take longest, longest first. pytest-xdist's --dist loadfile
# with --no-loadscope-reorder (scripts/test.sh; by default it orders files by
# their number of tests) hands files to its workers in collection order, so
# starting these first
# keeps one of them from running alone at the end while the other worker
# idles (on 2 cores the build-and-train container test alone takes 10 min or
# more). Files not listed keep their order after them.
LONGEST_FIRST = (
    "tests/container/test_image.py",
    "tests/cluster/test_slurm_real.py",
    "tests/cli/test_flagfile_networks.py",
    "tests/model/test_path_matrix.py",
    "tests/cli/test_train.py",
    "tests/cli/test_end_to_end.py",
    "tests/runtime/test_data_service.py",
    "tests/cli/test_tensorboard.py",
    "tests/runtime/test_multi_worker.py",
    "tests/faults/test_signals.py",
    "tests/faults/test_cli_inputs.py",
    "tests/faults/test_checkpoints.py",
)


def pytest_collection_modifyitems(config, items):
  """Runs the longest files first (see LONGEST_FIRST); a stable sort, so
  every xdist worker collects the same order."""
  del config
  rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  items.sort(key=lambda item: rank.get(
      os.path.relpath(str(item.path), root), len(rank)))

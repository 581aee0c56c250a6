"""Importing author-style PyTorch checkpoints: exact logits, clear errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch

from tests import REPO_ROOT
from pyramidnet_tf import import_torch
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io
from tests import torch_pyramidnet

REPO = REPO_ROOT

# (dataset, depth, alpha, bottleneck, image size)
CONFIGS = {
    "cifar_basic": ("cifar10", 20, 12, False, 32),
    "cifar_bottleneck": ("cifar100", 29, 24, True, 32),
    "imagenet_small": ("imagenet", 26, 20, True, 64),
}


def _torch_logits(net, x, train):
  net.train(train)
  return torch_pyramidnet.logits(net, x)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_author_checkpoint_gives_the_same_logits(name, tmp_path):
  dataset, depth, alpha, bottleneck, size = CONFIGS[name]
  torch.manual_seed(0)
  net = torch_pyramidnet.randomize(
      torch_pyramidnet.TorchPyramidNet(dataset, depth, alpha, bottleneck))
  path = str(tmp_path / "model_best.pth.tar")
  torch_pyramidnet.save_like_authors(net, path)
  checkpoint = torch.load(path, weights_only=True)
  assert all(k.startswith("module.") for k in checkpoint["state_dict"])

  model = model_lib.PyramidNet(dataset, depth, alpha, bottleneck)
  loaded = import_torch.load_state_dict(model, checkpoint)
  assert loaded == len(net.state_dict()) - sum(
      k.endswith("num_batches_tracked") for k in net.state_dict())

  x = np.random.RandomState(1).randn(4, size, size, 3).astype(np.float32)
  eval_ref = _torch_logits(net, x, train=False)
  eval_got = model(tf.constant(x), training=False).numpy()
  assert torch_pyramidnet.max_relative_error(eval_got, eval_ref) <= 1e-5
  # Train mode: batch statistics, and the same moving-average update.
  train_ref = _torch_logits(net, x, train=True)
  train_got = model(tf.constant(x), training=True).numpy()
  np.testing.assert_allclose(train_got, train_ref, rtol=1e-4,
                             atol=1e-5 * np.abs(train_ref).max())
  np.testing.assert_allclose(model.bn_final.moving_variance.numpy(),
                             net.bn_final.running_var.numpy(), rtol=1e-5)


def test_bare_state_dict_without_counters_and_numpy_values():
  net = torch_pyramidnet.randomize(
      torch_pyramidnet.TorchPyramidNet("cifar10", 20, 12, False), seed=3)
  state = {k: v.numpy() for k, v in net.state_dict().items()
           if not k.endswith("num_batches_tracked")}
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  import_torch.load_state_dict(model, state)
  np.testing.assert_array_equal(
      model.conv1.kernel.numpy(),
      net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.fc.kernel.numpy(),
                                net.fc.weight.detach().numpy().T)


def test_wrong_alpha_lists_mismatched_shapes_and_assigns_nothing():
  net = torch_pyramidnet.TorchPyramidNet("cifar10", 20, 12, False)
  model = model_lib.PyramidNet("cifar10", 20, 16, False)
  before = model.conv1.kernel.numpy().copy()
  with pytest.raises(import_torch.StateDictMismatch) as error:
    import_torch.load_state_dict(model, {"state_dict": net.state_dict()})
  message = str(error.value)
  assert "first shape mismatches: layer1.0.conv1.weight: expected [18, 16, 3, " \
         "3], got [17, 16, 3, 3]" in message
  assert "checkpoint holds: CIFAR stem (3x3); basic units 3/3/3 (depth 20); " \
         "28 features -> 10 classes" in message
  np.testing.assert_array_equal(model.conv1.kernel.numpy(), before)


def test_wrong_depth_lists_missing_and_unexpected_keys():
  net = torch_pyramidnet.TorchPyramidNet("cifar10", 29, 24, True)
  model = model_lib.PyramidNet("cifar10", 26, 24, False)  # 4 units a stage
  with pytest.raises(import_torch.StateDictMismatch) as error:
    import_torch.load_state_dict(model, net.state_dict())
  message = str(error.value)
  assert "first missing keys (expected [shape]): layer1.3.bn1.weight" in message
  assert "first unexpected keys (got [shape]): layer1.0.conv3.weight" in message
  assert "bottleneck units 3/3/3 (depth 29)" in message


def test_forced_npz_format_reads_any_file_name(tmp_path):
  net = torch_pyramidnet.randomize(
      torch_pyramidnet.TorchPyramidNet("cifar10", 20, 12, False), seed=7)
  path = str(tmp_path / "weights.bin")
  with open(path, "wb") as f:
    np.savez(f, **{k: v.numpy() for k, v in net.state_dict().items()})
  _, metadata = import_torch.import_checkpoint(
      path, str(tmp_path / "out"), file_format="npz", dataset="cifar10",
      depth=20, alpha=12, bottleneck=False)
  assert metadata["format"] == "npz" and metadata["arrays_loaded"] == 137


def test_not_a_state_dict():
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  with pytest.raises(import_torch.StateDictMismatch, match="no parameter"):
    import_torch.load_state_dict(model, {"state_dict": {}, "epoch": {}})


def _run_cli(*args):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", "pyramidnet_tf.import_torch",
                         *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300, check=False)


def test_cli_writes_a_model_directory_that_loads(tmp_path):
  net = torch_pyramidnet.randomize(
      torch_pyramidnet.TorchPyramidNet("cifar100", 29, 24, True), seed=5)
  path = str(tmp_path / "checkpoint.pth.tar")
  torch_pyramidnet.save_like_authors(net, path, epoch=299)
  out = str(tmp_path / "imported")
  result = _run_cli(f"--checkpoint={path}", f"--output_dir={out}",
                    "--dataset=cifar100", "--depth=29", "--alpha=24",
                    "--bottleneck")
  assert result.returncode == 0, result.stderr
  assert "imported 182 arrays" in result.stdout
  model, metadata = model_io.load_model(out)
  assert metadata["source"] == "pytorch" and metadata["epoch"] == 299
  assert metadata["input_convention"]["mean"][0] == pytest.approx(125.3 / 255)
  x = np.random.RandomState(2).randn(2, 32, 32, 3).astype(np.float32)
  ref = _torch_logits(net, x, train=False)
  assert torch_pyramidnet.max_relative_error(model(tf.constant(x)).numpy(), ref) <= 1e-5


def test_cli_errors_name_the_problem(tmp_path):
  result = _run_cli("--output_dir=/tmp/x", "--depth=20", "--alpha=12")
  assert result.returncode != 0 and "--checkpoint is required" in result.stderr
  missing = str(tmp_path / "nope.pth")
  result = _run_cli(f"--checkpoint={missing}", f"--output_dir={tmp_path}",
                    "--depth=20", "--alpha=12", "--nobottleneck")
  assert result.returncode != 0
  assert f"--checkpoint: {missing} does not exist" in result.stderr
  net = torch_pyramidnet.TorchPyramidNet("cifar10", 20, 12, False)
  path = str(tmp_path / "c.pth")
  torch.save(net.state_dict(), path)
  result = _run_cli(f"--checkpoint={path}", f"--output_dir={tmp_path}/o",
                    "--depth=20", "--alpha=13", "--nobottleneck")
  assert result.returncode != 0
  assert "checkpoint does not match the model" in result.stderr
  assert not os.path.exists(f"{tmp_path}/o")

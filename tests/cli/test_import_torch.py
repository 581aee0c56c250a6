"""The import_torch command line: model directories and one-line errors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch

from tests import REPO_ROOT
from pyramidnet_tf.model_dir import store as model_io
from tests import torch_pyramidnet

REPO = REPO_ROOT


def _torch_logits(net, x, train):
  net.train(train)
  return torch_pyramidnet.logits(net, x)


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
  assert torch_pyramidnet.max_relative_error(
      model(tf.constant(x)).numpy(), ref) <= 1e-5


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

"""export_torch: TF model directory -> the authors' .pth -> PyTorch logits."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch

from pyramidnet_tf.convert import exporter
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.model_dir import ema as ema_lib
from tests import REPO_ROOT
from tests import torch_pyramidnet


def _randomize_tf(model, seed):
  """Random weights and BN statistics, none of them symmetric under a
  transpose, so a layout slip changes the logits."""
  rng = np.random.RandomState(seed)
  for variable in model.variables:
    shape = variable.shape.as_list()
    if "moving_variance" in variable.name or "gamma" in variable.name:
      value = 0.5 + rng.rand(*shape)
    else:
      value = 0.2 * rng.randn(*shape)
    variable.assign(value.astype(np.float32))


def _authors_net(path, dataset, depth, alpha, bottleneck):
  """The file loaded as the authors' code loads its checkpoints (strict)."""
  checkpoint = torch.load(path, weights_only=True)
  assert set(checkpoint) == {"epoch", "arch", "state_dict", "pyramidnet_tf"}
  net = torch_pyramidnet.TorchPyramidNet(dataset, depth, alpha, bottleneck)
  torch.nn.DataParallel(net).load_state_dict(checkpoint["state_dict"])
  return net.eval(), checkpoint


def _run(*args):
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=300,
                        check=False)


@pytest.mark.parametrize("dataset,depth,alpha,bottleneck,size", [
    ("cifar100", 29, 24, True, 32),
    ("cifar10", 20, 12, False, 32),
    ("imagenet", 26, 20, True, 64),
])
def test_tf_weights_give_the_same_logits_in_the_pytorch_reference(
    tmp_path, dataset, depth, alpha, bottleneck, size):
  model = model_lib.PyramidNet(dataset, depth, alpha, bottleneck)
  _randomize_tf(model, seed=1)
  model_dir = str(tmp_path / "model")
  model_io.save_model(model, model_dir, step=7)
  output = str(tmp_path / "model.pth")
  exported = exporter.export_torch(model_dir, output)
  reference = torch_pyramidnet.TorchPyramidNet(dataset, depth, alpha,
                                               bottleneck)
  assert (exported.step, exported.count, exported.averaged) == (
      7, len(reference.state_dict()), False)
  net, checkpoint = _authors_net(output, dataset, depth, alpha, bottleneck)
  assert checkpoint["epoch"] == 7 and checkpoint["arch"] == "pyramidnet"
  x = np.random.RandomState(2).randn(2, size, size, 3).astype(np.float32)
  got = torch_pyramidnet.logits(net, x)
  want = model(tf.constant(x), training=False).numpy()
  assert torch_pyramidnet.max_relative_error(got, want) <= 1e-5
  assert os.listdir(tmp_path) == ["model", "model.pth"]  # no temporary left


def test_the_ema_is_written_when_the_run_kept_one(tmp_path):
  model = model_lib.PyramidNet("cifar10", 8, 4, False)
  _randomize_tf(model, seed=3)
  ema = ema_lib.Ema(ema_lib.averaged_variables(model), 0.9)
  for average in ema.averages:
    average.assign(average + 0.05)
  model_dir = str(tmp_path / "model")
  model_io.write_config(model_dir, model, {"source": "test", "ema_decay": 0.9})
  tf.train.CheckpointManager(tf.train.Checkpoint(model=model, ema=ema),
                             model_dir, 1).save(checkpoint_number=3)
  x = np.random.RandomState(4).randn(2, 32, 32, 3).astype(np.float32)
  raw = model(tf.constant(x), training=False).numpy()
  for variable, average in zip(ema_lib.averaged_variables(model),
                               ema.averages):
    variable.assign(average)
  averaged_logits = model(tf.constant(x), training=False).numpy()
  want = {"auto": averaged_logits, "no": raw}
  for flag, expected in want.items():
    output = str(tmp_path / f"{flag}.pth")
    exported = exporter.export_torch(model_dir, output, use_ema=flag)
    assert exported.averaged == (flag == "auto")
    net, _ = _authors_net(output, "cifar10", 8, 4, False)
    assert torch_pyramidnet.max_relative_error(
        torch_pyramidnet.logits(net, x), expected) <= 1e-5


def test_cli_round_trip_from_the_authors_file_and_its_errors(tmp_path):
  net = torch_pyramidnet.random_eval_net("imagenet", 26, 20, True, seed=3)
  source = str(tmp_path / "source.pth.tar")
  torch_pyramidnet.save_like_authors(net, source)
  model_dir = str(tmp_path / "model")
  result = _run("pyramidnet_tf.import_torch", f"--checkpoint={source}",
                f"--output_dir={model_dir}")
  assert result.returncode == 0, result.stderr
  output = str(tmp_path / "out.pth")
  result = _run("pyramidnet_tf.export_torch", f"--model_dir={model_dir}",
                f"--output={output}")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith(
      f"wrote {len(net.state_dict())} tensors (the weights at step 0) to "
      f"{output}"), result.stdout
  back, _ = _authors_net(output, "imagenet", 26, 20, True)
  x = np.random.RandomState(4).randn(2, 64, 64, 3).astype(np.float32)
  # PyTorch -> TF -> PyTorch moves float32 values only: bit for bit.
  np.testing.assert_array_equal(torch_pyramidnet.logits(back, x),
                                torch_pyramidnet.logits(net, x))

  def error(*args, code=1):
    result = _run("pyramidnet_tf.export_torch", *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]

  prefix = "pyramidnet_tf.export_torch: error: "
  assert error(f"--model_dir={model_dir}", f"--output={output}", code=2) == (
      f"{prefix}--output={output} exists; pass --overwrite to replace it")
  assert error(f"--model_dir={model_dir}", code=2) == (
      f"{prefix}--output required")
  assert error(f"--model_dir={model_dir}", f"--output={output}",
               "--overwrite", "--use_ema=yes").startswith(
                   f"{prefix}{model_dir}/ckpt-0 holds no EMA weights")
  missing = str(tmp_path / "none")
  line = error(f"--model_dir={missing}", f"--output={tmp_path}/x.pth",
               code=2)
  assert line.startswith(prefix) and missing in line, line
  assert error(f"--model_dir={model_dir}",
               f"--output={tmp_path}/no/such/x.pth", code=2) == (
                   f"{prefix}--output={tmp_path}/no/such/x.pth: directory "
                   f"{tmp_path}/no/such does not exist")
  assert not os.path.exists(f"{tmp_path}/x.pth")
  result = _run("pyramidnet_tf.export_torch", f"--model_dir={model_dir}",
                f"--output={output}", "--overwrite")
  assert result.returncode == 0, result.stderr

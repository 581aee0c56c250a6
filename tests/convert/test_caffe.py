"""Importing Caffe .caffemodel (PyramidNet-caffe) nets: logits and errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch

from tests import REPO_ROOT
from pyramidnet_tf.convert import caffe
from pyramidnet_tf.convert import caffe_reader
from pyramidnet_tf.convert import structure
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io
from tests import caffe_writer
from tests import torch_pyramidnet

REPO = REPO_ROOT

# name: (dataset, depth, alpha, bottleneck, image size, writer options)
CONFIGS = {
    # alpha 4: some units keep their width (identity shortcut) and one
    # stride-2 unit only pools (no zero channels).
    "cifar_basic": ("cifar10", 20, 4, False, 32, {}),
    "imagenet_dropout": ("imagenet", 26, 20, True, 64,
                         {"dropout": 0.5, "eps": 1e-3,
                          "unpacked_factor": True}),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_caffemodel_gives_the_same_logits(name, tmp_path):
  dataset, depth, alpha, bottleneck, size, options = CONFIGS[name]
  net = torch_pyramidnet.random_eval_net(dataset, depth, alpha, bottleneck,
                                         seed=5)
  path = str(tmp_path / "model.caffemodel")
  caffe_writer.save(path, net, **options)
  model = model_lib.PyramidNet(dataset, depth, alpha, bottleneck,
                               drop_rate=options.get("dropout", 0.0))
  report = caffe.load_caffe(model, path)
  assert report["arrays_loaded"] == sum(
      not k.endswith("num_batches_tracked") for k in net.state_dict())
  if "eps" in options:  # every BN declared eps 1e-3
    assert report["bn_eps_folded_into_variance"] == len(
        [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)])
  x = np.random.RandomState(1).randn(3, size, size, 3).astype(np.float32)
  got = model(tf.constant(x), training=False).numpy()
  assert torch_pyramidnet.max_relative_error(
      got, torch_pyramidnet.logits(net, x)) <= 1e-5


def test_batch_norm_statistics_are_divided_by_the_scale_factor(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False, seed=2)
  path = str(tmp_path / "m.caffemodel")
  caffe_writer.save(path, net, factor=4.0)
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  caffe.load_caffe(model, path)
  np.testing.assert_allclose(model.layer2[1].bn2.moving_mean.numpy(),
                             net.layer2[1].bn2.running_mean.numpy(),
                             rtol=1e-6)
  np.testing.assert_allclose(model.bn_final.gamma.numpy(),
                             net.bn_final.weight.detach().numpy())


def test_nonzero_padding_convolution_is_rejected(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False)
  path = str(tmp_path / "m.caffemodel")
  caffe_writer.save(path, net, zero_conv_value=0.5)
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  with pytest.raises(structure.ImportMismatch,
                     match=f"{path}: padding convolution 'zero_conv1_1' "
                     r"\(Convolution\) is not all zero \(max \|value\| 0.5\)"):
    caffe.load_caffe(model, path)


def test_truncated_and_mismatched_files(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False)
  data = caffe_writer.pyramidnet_caffe(net)
  path = str(tmp_path / "cut.caffemodel")
  with open(path, "wb") as f:
    f.write(data[:len(data) - 100])
  with pytest.raises(caffe_reader.CaffeFormatError,
                     match=f"{path}: not a valid Caffe NetParameter"):
    caffe_reader.load(path)
  short = str(tmp_path / "short.caffemodel")
  caffe_writer.save(short, net, truncate_units=1)
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  with pytest.raises(structure.ImportMismatch,
                     match="the file has 8 basic units 3/3/2, 27 features; "
                     "the model is cifar10 depth 20 alpha 12: 9 basic units "
                     "3/3/3, 28 features"):
    caffe.load_caffe(model, short)
  full = tmp_path / "full.caffemodel"
  full.write_bytes(data)
  wrong = model_lib.PyramidNet("cifar10", 20, 12, False, num_classes=100)
  with pytest.raises(structure.ImportMismatch,
                     match=r"classifier weight \[10, 28\] / bias \[10\], "
                     r"expected \[100, 28\] / \[100\]"):
    caffe.load_caffe(wrong, str(full))


def test_v1_and_empty_nets_are_explained():
  v1 = caffe_writer.chunk(2, caffe_writer.string(4, "conv1"))
  with pytest.raises(caffe_reader.CaffeFormatError,
                     match="x.caffemodel: uses the old V1 'layers' format"):
    caffe_reader.parse_net(v1, "x.caffemodel")
  with pytest.raises(caffe_reader.CaffeFormatError, match="holds no layers"):
    caffe_reader.parse_net(caffe_writer.string(1, "empty"), "x.caffemodel")


def test_cli_imports_a_caffemodel_with_its_input_convention(tmp_path):
  net = torch_pyramidnet.random_eval_net("imagenet", 26, 20, True, seed=6)
  path = str(tmp_path / "PyramidNet.caffemodel")
  caffe_writer.save(path, net)
  out = str(tmp_path / "imported")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.import_torch",
       f"--checkpoint={path}", f"--output_dir={out}", "--dataset=imagenet",
       "--depth=26", "--alpha=20", "--bottleneck"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr
  assert "format: caffe" in result.stdout
  assert "note: Caffe's pooling rounds output sizes up" in result.stdout
  with open(os.path.join(out, "model_config.json")) as f:
    metadata = json.load(f)["metadata"]
  assert metadata["source"] == "caffe"
  convention = metadata["input_convention"]
  assert convention["color"] == "BGR" and convention["scale"] == 1.0
  assert convention["mean"] == [104.0, 117.0, 124.0]
  assert convention["std"] == [pytest.approx(1 / 0.017352)] * 3
  model, _ = model_io.load_model(out)
  x = np.random.RandomState(2).randn(2, 64, 64, 3).astype(np.float32)
  assert torch_pyramidnet.max_relative_error(
      model(tf.constant(x)).numpy(), torch_pyramidnet.logits(net, x)) <= 1e-5
  # Forcing the wrong format gives that format's error, naming the file.
  result = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.import_torch",
       f"--checkpoint={path}", f"--output_dir={out}2", "--format=torch7",
       "--dataset=imagenet", "--depth=26", "--alpha=20", "--bottleneck"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode != 0
  assert f"{path}: unknown type tag" in result.stderr
  assert not os.path.exists(f"{out}2")

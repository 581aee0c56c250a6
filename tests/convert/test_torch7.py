"""Importing Torch7 (.t7, fb.resnet.torch) PyramidNets: exact logits, errors."""

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import REPO_ROOT
from pyramidnet_tf.convert import structure
from pyramidnet_tf.convert import torch7
from pyramidnet_tf.convert import torch7_reader
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io
from tests import torch7_writer
from tests import torch_pyramidnet

REPO = REPO_ROOT

# name: (dataset, depth, alpha, bottleneck, image size, writer options)
CONFIGS = {
    # alpha 4: some units keep their width (identity shortcut) and one
    # stride-2 unit only pools (no zero channels).
    "cifar_basic": ("cifar10", 20, 4, False, 32, {}),
    "cifar_bottleneck": ("cifar100", 29, 24, True, 32,
                         {"stem_bias": True, "shortcut_first": True,
                          "conv_type": "nn.SpatialConvolutionMM"}),
    "imagenet_dropout": ("imagenet", 26, 20, True, 64,
                         {"dropout": 0.5, "data_parallel": True,
                          "stem_bias": True}),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_t7_model_gives_the_same_logits(name, tmp_path):
  dataset, depth, alpha, bottleneck, size, options = CONFIGS[name]
  net = torch_pyramidnet.random_eval_net(dataset, depth, alpha, bottleneck,
                                         seed=3)
  path = str(tmp_path / "model.t7")
  torch7_writer.save_fb_resnet_model(path, net, **options)
  model = model_lib.PyramidNet(dataset, depth, alpha, bottleneck,
                               drop_rate=options.get("dropout", 0.0))
  report = torch7.load_torch7(model, path)
  assert report["arrays_loaded"] == sum(
      not k.endswith("num_batches_tracked") for k in net.state_dict())
  x = np.random.RandomState(1).randn(3, size, size, 3).astype(np.float32)
  got = model(tf.constant(x), training=False).numpy()
  assert torch_pyramidnet.max_relative_error(
      got, torch_pyramidnet.logits(net, x)) <= 1e-5


def test_reader_decodes_values_references_and_strided_tensors():
  w = torch7_writer
  shared = w.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
  data = w.dumps({"n": 2.5, "i": 3, "s": "abc", "t": True, "f": False,
                  "list": [shared, shared], "obj": w.Obj("nn.Foo", k=1)})
  obj = torch7_reader.loads(data)
  assert (obj["n"], obj["i"], obj["s"], obj["t"], obj["f"]) == (
      2.5, 3, "abc", True, False)
  first, second = torch7_reader.lua_list(obj["list"])
  assert first is second  # one object written once, referenced twice
  np.testing.assert_array_equal(first, np.arange(6).reshape(2, 3))
  assert obj["obj"].typename == "nn.Foo" and obj["obj"]["k"] == 1

  # A transposed view (size 3x2, stride 1x3) at storage offset 2 of a
  # DoubleStorage of 7 elements, written byte by byte.
  def s(text):
    return struct.pack("<i", len(text)) + text.encode()
  raw = (struct.pack("<ii", 4, 1) + s("V 1") + s("torch.DoubleTensor") +
         struct.pack("<i", 2) + struct.pack("<qq", 3, 2) +
         struct.pack("<qq", 1, 3) + struct.pack("<q", 2) +
         struct.pack("<ii", 4, 2) + s("V 1") + s("torch.DoubleStorage") +
         struct.pack("<q", 7) + np.arange(7, dtype="<f8").tobytes())
  np.testing.assert_array_equal(torch7_reader.loads(raw),
                                np.arange(1, 7).reshape(2, 3).T)


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False)
  data = torch7_writer.dumps(torch7_writer.fb_resnet_model(net))
  path = str(tmp_path / "cut.t7")
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(torch7_reader.Torch7FormatError,
                     match=f"{path}: truncated: .* needs .* bytes at byte"):
    torch7_reader.load(path)
  with pytest.raises(torch7_reader.Torch7FormatError,
                     match="unknown type tag 9 at byte 0"):
    torch7_reader.loads(struct.pack("<ii", 9, 1), "x.t7")
  with pytest.raises(torch7_reader.Torch7FormatError, match="unexpected bytes"):
    torch7_reader.loads(torch7_writer.dumps(1.0) + b"\0", "x.t7")


def test_wrong_alpha_names_the_unit_and_the_shapes(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False)
  path = str(tmp_path / "m.t7")
  torch7_writer.save_fb_resnet_model(path, net)
  model = model_lib.PyramidNet("cifar10", 20, 16, False)
  before = model.conv1.kernel.numpy().copy()
  with pytest.raises(structure.ImportMismatch) as error:
    torch7.load_torch7(model, path)
  message = str(error.value)
  assert message.startswith(f"{path}: unit 1 of 9 (layer1.0, 16->18 "
                            "channels, stride 1; in the file: "
                            "model.modules[3].modules[1].modules[1]): the "
                            "shortcut "
                            "appends 1 zero channels, expected 2")
  assert ("the file has 9 basic units 3/3/3, 28 features, the model cifar10 "
          "depth 20 alpha 16: 9 basic units 3/3/3, 32 features") in message
  np.testing.assert_array_equal(model.conv1.kernel.numpy(), before)


def test_wrong_depth_and_dropout_are_reported(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar100", 29, 24, True)
  path = str(tmp_path / "m.t7")
  torch7_writer.save_fb_resnet_model(path, net, dropout=0.25)
  deeper = model_lib.PyramidNet("cifar100", 38, 24, True, drop_rate=0.25)
  with pytest.raises(structure.ImportMismatch,
                     match="the file has 9 bottleneck units 3/3/3, 160 "
                     "features; the model is cifar100 depth 38 alpha 24: 12 "
                     "bottleneck units 4/4/4, 160 features"):
    torch7.load_torch7(deeper, path)
  no_dropout = model_lib.PyramidNet("cifar100", 29, 24, True)
  with pytest.raises(structure.ImportMismatch,
                     match="dropout 0.25 .* pass --drop_rate=0.25"):
    torch7.load_torch7(no_dropout, path)


def test_unexpected_modules_are_rejected(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False)
  tree = torch7_writer.fb_resnet_model(net)
  # A shortcut that pads with ones instead of zeros.
  unit = tree.fields["modules"][2].fields["modules"][0]
  shortcut = unit.fields["modules"][0].fields["modules"][1]
  shortcut.fields["modules"][0].fields["value"] = 1
  path = str(tmp_path / "ones.t7")
  torch7_writer.save(path, tree)
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  with pytest.raises(structure.ImportMismatch,
                     match="unexpected shortcut module .*nn.Padding"):
    torch7.load_torch7(model, path)
  tree = torch7_writer.fb_resnet_model(net)
  tree.fields["modules"].insert(2, torch7_writer.Obj("nn.Tanh"))
  torch7_writer.save(path, tree)
  with pytest.raises(structure.ImportMismatch,
                     match=r"unsupported module nn.Tanh at model.modules\[3\]"):
    torch7.load_torch7(model, path)


def test_cli_detects_t7_and_records_the_input_convention(tmp_path):
  net = torch_pyramidnet.random_eval_net("imagenet", 26, 20, True, seed=4)
  path = str(tmp_path / "pyramidnet.t7")
  torch7_writer.save_fb_resnet_model(path, net, dropout=0.5)
  out = str(tmp_path / "imported")
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.import_torch",
       f"--checkpoint={path}", f"--output_dir={out}", "--dataset=imagenet",
       "--depth=26", "--alpha=20", "--bottleneck", "--drop_rate=0.5"],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 0, result.stderr
  assert "format: torch7" in result.stdout
  with open(os.path.join(out, "model_config.json")) as f:
    metadata = json.load(f)["metadata"]
  assert metadata["source"] == "torch7" and metadata["format"] == "torch7"
  assert metadata["input_convention"] == {
      "color": "RGB", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
      "std": [0.229, 0.224, 0.225]}
  model, _ = model_io.load_model(out)
  assert model.drop_rate == 0.5
  x = np.random.RandomState(2).randn(2, 64, 64, 3).astype(np.float32)
  assert torch_pyramidnet.max_relative_error(
      model(tf.constant(x)).numpy(), torch_pyramidnet.logits(net, x)) <= 1e-5

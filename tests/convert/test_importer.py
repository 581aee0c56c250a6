"""Format detection and the whole import into a model directory."""

import numpy as np
import pytest
import torch

from pyramidnet_tf.convert import importer
from tests import caffe_writer
from tests import torch7_writer
from tests import torch_pyramidnet


def test_format_detection(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 12, False)
  paths = {"caffe": tmp_path / "a.bin", "torch7": tmp_path / "b.bin",
           "pytorch": tmp_path / "c.bin", "npz": tmp_path / "d.npz"}
  caffe_writer.save(str(paths["caffe"]), net)
  torch7_writer.save_fb_resnet_model(str(paths["torch7"]), net)
  torch.save(net.state_dict(), str(paths["pytorch"]))
  np.savez(str(paths["npz"]), a=np.zeros(2))
  for expected, path in paths.items():
    assert importer.detect_format(str(path)) == expected
  junk = tmp_path / "junk.bin"
  junk.write_bytes(b"\xff\xfe hello")
  with pytest.raises(ValueError, match="cannot tell the format .* pass "
                     "--format"):
    importer.detect_format(str(junk))


def test_forced_npz_format_reads_any_file_name(tmp_path):
  net = torch_pyramidnet.randomize(
      torch_pyramidnet.TorchPyramidNet("cifar10", 20, 12, False), seed=7)
  path = str(tmp_path / "weights.bin")
  with open(path, "wb") as f:
    np.savez(f, **{k: v.numpy() for k, v in net.state_dict().items()})
  _, metadata = importer.import_checkpoint(
      path, str(tmp_path / "out"), file_format="npz", dataset="cifar10",
      depth=20, alpha=12, bottleneck=False)
  assert metadata["format"] == "npz" and metadata["arrays_loaded"] == 137

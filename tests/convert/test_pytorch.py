"""Loading author-style PyTorch state_dicts: exact logits, clear errors."""

import numpy as np
import pytest
import tensorflow as tf
import torch

from pyramidnet_tf.convert import pytorch
from pyramidnet_tf.model import network as model_lib
from tests import torch_pyramidnet

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
  loaded = pytorch.load_state_dict(model, checkpoint)
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
  pytorch.load_state_dict(model, state)
  np.testing.assert_array_equal(
      model.conv1.kernel.numpy(),
      net.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(model.fc.kernel.numpy(),
                                net.fc.weight.detach().numpy().T)


def test_wrong_alpha_lists_mismatched_shapes_and_assigns_nothing():
  net = torch_pyramidnet.TorchPyramidNet("cifar10", 20, 12, False)
  model = model_lib.PyramidNet("cifar10", 20, 16, False)
  before = model.conv1.kernel.numpy().copy()
  with pytest.raises(pytorch.StateDictMismatch) as error:
    pytorch.load_state_dict(model, {"state_dict": net.state_dict()})
  message = str(error.value)
  assert ("first shape mismatches: layer1.0.conv1.weight: expected [18, 16, "
          "3, 3], got [17, 16, 3, 3]") in message
  assert ("checkpoint holds: CIFAR stem (3x3); basic units 3/3/3 (depth 20); "
          "28 features -> 10 classes") in message
  np.testing.assert_array_equal(model.conv1.kernel.numpy(), before)


def test_wrong_depth_lists_missing_and_unexpected_keys():
  net = torch_pyramidnet.TorchPyramidNet("cifar10", 29, 24, True)
  model = model_lib.PyramidNet("cifar10", 26, 24, False)  # 4 units a stage
  with pytest.raises(pytorch.StateDictMismatch) as error:
    pytorch.load_state_dict(model, net.state_dict())
  message = str(error.value)
  assert "first missing keys (expected [shape]): layer1.3.bn1.weight" in message
  assert "first unexpected keys (got [shape]): layer1.0.conv3.weight" in message
  assert "bottleneck units 3/3/3 (depth 29)" in message


def test_not_a_state_dict():
  model = model_lib.PyramidNet("cifar10", 20, 12, False)
  with pytest.raises(pytorch.StateDictMismatch, match="no parameter"):
    pytorch.load_state_dict(model, {"state_dict": {}, "epoch": {}})

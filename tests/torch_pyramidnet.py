"""An independent PyTorch PyramidNet, written from the spec, for parity tests.

It reproduces the state_dict names, order and shapes of the authors' PyTorch
code (dyhan0920/PyramidNet-PyTorch; spec section 2) so that tests can create
"author-style" checkpoints and compare logits with the TF model. The width
schedule is computed here on its own (not imported from pyramidnet_tf), so a
bug in one does not hide in the other.
"""

import math
import os

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

_IMAGENET_TABLE = {18: (False, [2, 2, 2, 2]), 34: (False, [3, 4, 6, 3]),
                   50: (True, [3, 4, 6, 3]), 101: (True, [3, 4, 23, 3]),
                   152: (True, [3, 8, 36, 3]), 200: (True, [3, 24, 36, 3])}


def torch_widths(start, alpha, num_units, mode="add", rounding="py3"):
  """Planes per unit: float accumulated in unit order, then rounded."""
  w = float(start)
  out = []
  for _ in range(num_units):
    if mode == "add":
      w += alpha / (num_units * 1.0)
    else:
      w *= alpha ** (1.0 / num_units)
    out.append(int(round(w)) if rounding == "py3" else int(math.floor(w + 0.5)))
  return out


class _Basic(nn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes)
    self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes)
    self.stride = stride

  def branch(self, x):
    out = self.conv1(self.bn1(x))
    out = F.relu(self.bn2(out))
    return self.bn3(self.conv2(out))


class _Bottleneck(nn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride):
    super().__init__()
    self.bn1 = nn.BatchNorm2d(inplanes)
    self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(planes)
    self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
    self.bn3 = nn.BatchNorm2d(planes)
    self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn4 = nn.BatchNorm2d(planes * 4)
    self.stride = stride

  def branch(self, x):
    out = self.conv1(self.bn1(x))
    out = F.relu(self.bn2(out))
    out = F.relu(self.bn3(self.conv2(out)))
    return self.bn4(self.conv3(out))


def _forward_unit(unit, x):
  out = unit.branch(x)
  shortcut = x
  if unit.stride != 1:
    shortcut = F.avg_pool2d(x, 2, 2, ceil_mode=True)
  extra = out.shape[1] - shortcut.shape[1]
  if extra > 0:
    zeros = shortcut.new_zeros(shortcut.shape[0], extra, shortcut.shape[2],
                               shortcut.shape[3])
    shortcut = torch.cat([shortcut, zeros], dim=1)
  return out + shortcut


class TorchPyramidNet(nn.Module):
  """PyramidNet with the authors' PyTorch key names (conv1, bn1, layerK.i...)."""

  def __init__(self, dataset, depth, alpha, bottleneck, mode="add",
               num_classes=None, rounding="py3"):
    super().__init__()
    self.dataset = dataset
    if dataset == "imagenet":
      if depth in _IMAGENET_TABLE:
        bottleneck, stages = _IMAGENET_TABLE[depth]
      else:
        n = (depth - 2) // (12 if bottleneck else 8)
        stages = [n] * 4
      start = 64
      num_classes = num_classes or 1000
    else:
      n = (depth - 2) // (9 if bottleneck else 6)
      stages = [n] * 3
      start = 16
      num_classes = num_classes or (10 if dataset == "cifar10" else 100)
    block = _Bottleneck if bottleneck else _Basic
    planes = torch_widths(start, alpha, sum(stages), mode, rounding)
    if dataset == "imagenet":
      self.conv1 = nn.Conv2d(3, start, 7, 2, 3, bias=False)
    else:
      self.conv1 = nn.Conv2d(3, start, 3, 1, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(start)
    inplanes = start
    k = 0
    for s, count in enumerate(stages):
      units = []
      for i in range(count):
        stride = 2 if (s > 0 and i == 0) else 1
        units.append(block(inplanes, planes[k], stride))
        inplanes = planes[k] * block.expansion
        k += 1
      setattr(self, f"layer{s + 1}", nn.Sequential(*units))
    self.num_stages = len(stages)
    self.bn_final = nn.BatchNorm2d(inplanes)
    self.fc = nn.Linear(inplanes, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
        m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
      elif isinstance(m, nn.BatchNorm2d):
        m.weight.data.fill_(1)
        m.bias.data.zero_()

  def forward(self, x):
    x = self.bn1(self.conv1(x))
    if self.dataset == "imagenet":
      x = F.max_pool2d(F.relu(x), 3, 2, 1)
    for s in range(self.num_stages):
      for unit in getattr(self, f"layer{s + 1}"):
        x = _forward_unit(unit, x)
    x = F.relu(self.bn_final(x))
    x = x.mean(dim=(2, 3))
    return self.fc(x)


def randomize(model, seed=0):
  """Random weights and non-trivial BN statistics (so BN is really tested)."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for m in model.modules():
      if isinstance(m, nn.BatchNorm2d):
        c = m.num_features
        m.weight.copy_(0.5 + torch.rand(c, generator=g))
        m.bias.copy_(0.2 * torch.randn(c, generator=g))
        m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
        m.running_var.copy_(0.5 + torch.rand(c, generator=g))
        m.num_batches_tracked.fill_(1234)
      elif isinstance(m, nn.Linear):
        m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=g))
        m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
  return model


def random_eval_net(dataset, depth, alpha, bottleneck, seed=0):
  """A randomized TorchPyramidNet in eval mode: the reference for imports."""
  return randomize(TorchPyramidNet(dataset, depth, alpha, bottleneck),
                   seed).eval()


def logits(net, x_nhwc):
  """The net's logits (in its current train/eval mode) for NHWC numpy x."""
  with torch.no_grad():
    return net(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2))).numpy()


def max_relative_error(got, want):
  """max |got - want| / max |want|: the parity measure of the import tests."""
  return float(np.abs(got - want).max() / np.abs(want).max())


def save_like_authors(model, path, epoch=3):
  """Saves as the authors' train.py: DataParallel keys under 'state_dict'."""
  wrapped = nn.DataParallel(model)
  torch.save({"epoch": epoch, "arch": "pyramidnet",
              "state_dict": wrapped.state_dict(), "best_err1": 12.5,
              "best_err5": 3.25, "optimizer": {"state": {}, "param_groups": []}},
             path)


def imported_model_dir(root, name, seed, dataset="cifar10", depth=8, alpha=4,
                       bottleneck=False):
  """``<root>/<name>``: a model directory of import_torch holding a random
  authors' PyramidNet (its state_dict saved as .npz, then imported); the
  source of fine-tuning tests."""
  from pyramidnet_tf.convert import importer  # pylint: disable=g-import-not-at-top  (TensorFlow)
  net = randomize(TorchPyramidNet(dataset, depth, alpha, bottleneck),
                  seed=seed)
  path = os.path.join(str(root), f"{name}.npz")
  np.savez(path, **{k: v.numpy() for k, v in net.state_dict().items()})
  out = os.path.join(str(root), name)
  importer.import_checkpoint(path, out, dataset=dataset, depth=depth,
                             alpha=alpha, bottleneck=bottleneck)
  return out

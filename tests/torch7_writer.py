"""Writes Torch7 binary files (``torch.save`` format) for the import tests.

Follows ``torch/File.lua`` ``writeObject`` and the C ``write`` methods of
tensors and storages: little-endian, int = 4 bytes, long = 8 bytes, doubles
for Lua numbers, 1-based reference indices for tables and Torch objects,
``"V 1"`` class versions, tensors as nDimension / sizes / strides / 1-based
storage offset / storage, storages as element count / raw elements.

``fb_resnet_model(net)`` builds the module tree that jhkim89/PyramidNet's
``addpyramidnet.lua`` creates inside fb.resnet.torch, filled with the weights
of a ``tests.torch_pyramidnet.TorchPyramidNet``.
"""

import struct

import numpy as np


class Obj:
  """A Lua Torch class instance: class name and field table."""

  def __init__(self, typename, **fields):
    self.typename = typename
    self.fields = fields


class Tensor:
  """A tensor to write as ``torch.<kind>Tensor`` (default Float)."""

  def __init__(self, array, kind="Float", shared_storage=None):
    self.array = np.asarray(array)
    self.kind = kind
    self.storage = shared_storage


_DTYPES = {"Float": "<f4", "Double": "<f8", "Long": "<i8", "Cuda": "<f4"}


class _Writer:

  def __init__(self):
    self.out = bytearray()
    self.index = {}

  def int(self, value):
    self.out += struct.pack("<i", value)

  def long(self, value):
    self.out += struct.pack("<q", value)

  def string_body(self, text):
    raw = text.encode("latin-1")
    self.int(len(raw))
    self.out += raw

  def _reference(self, obj, tag):
    """Writes tag + index; True if the object was written before."""
    self.int(tag)
    key = id(obj)
    if key in self.index:
      self.int(self.index[key][0])
      return True
    self.index[key] = (len(self.index) + 1, obj)  # keep obj alive
    self.int(self.index[key][0])
    return False

  def write(self, obj):
    if obj is None:
      self.int(0)
    elif isinstance(obj, bool):
      self.int(5)
      self.int(1 if obj else 0)
    elif isinstance(obj, (int, float)):
      self.int(1)
      self.out += struct.pack("<d", float(obj))
    elif isinstance(obj, str):
      self.int(2)
      self.string_body(obj)
    elif isinstance(obj, (dict, list)):
      if self._reference(obj, 3):
        return
      items = (list(obj.items()) if isinstance(obj, dict) else
               [(i + 1, v) for i, v in enumerate(obj)])
      items = [(k, v) for k, v in items if v is not None]  # Lua drops nils
      self.int(len(items))
      for key, value in items:
        self.write(key)
        self.write(value)
    elif isinstance(obj, Tensor):
      if self._reference(obj, 4):
        return
      self.string_body("V 1")
      self.string_body(f"torch.{obj.kind}Tensor")
      array = obj.array
      self.int(array.ndim)
      if array.size == 0:
        for size in array.shape:
          self.long(size)
        for _ in array.shape:
          self.long(1)
        self.long(1)
        self.int(0)  # no storage
        return
      for size in array.shape:
        self.long(size)
      strides = [s // array.itemsize for s in
                 np.ascontiguousarray(array).strides]
      for stride in strides:
        self.long(stride)
      self.long(1)
      storage = obj.storage if obj.storage is not None else _Storage(
          array, obj.kind)
      self.write(storage)
    elif isinstance(obj, _Storage):
      if self._reference(obj, 4):
        return
      self.string_body("V 1")
      self.string_body(f"torch.{obj.kind}Storage")
      flat = np.ascontiguousarray(obj.array, dtype=_DTYPES[obj.kind]).ravel()
      self.long(flat.size)
      self.out += flat.tobytes()
    elif isinstance(obj, Obj):
      if self._reference(obj, 4):
        return
      self.string_body("V 1")
      self.string_body(obj.typename)
      self.write(dict(obj.fields))
    else:
      raise TypeError(f"cannot write {type(obj).__name__}")


class _Storage:

  def __init__(self, array, kind):
    self.array = array
    self.kind = kind


def dumps(obj):
  writer = _Writer()
  writer.write(obj)
  return bytes(writer.out)


def save(path, obj):
  with open(path, "wb") as f:
    f.write(dumps(obj))


# ---- fb.resnet.torch / addpyramidnet.lua module trees ----------------------

def _empty():
  return Tensor(np.zeros((0,), np.float32))


def _module(typename, **fields):
  fields.setdefault("output", _empty())
  fields.setdefault("gradInput", _empty())
  fields.setdefault("train", False)
  return Obj(typename, **fields)


def _np(t):
  return t.detach().numpy().astype(np.float32)


def conv(c, stride, pad, typename="cudnn.SpatialConvolution", bias=None):
  weight = _np(c.weight)
  out, inp, kh, kw = weight.shape
  if typename == "nn.SpatialConvolutionMM":  # stores a 2-D weight
    weight = weight.reshape(out, inp * kh * kw)
  fields = dict(nInputPlane=inp, nOutputPlane=out, kW=kw, kH=kh, dW=stride,
                dH=stride, padW=pad, padH=pad, weight=Tensor(weight),
                gradWeight=Tensor(np.zeros_like(weight)), groups=1)
  if bias is not None:
    fields["bias"] = Tensor(bias)
    fields["gradBias"] = Tensor(np.zeros_like(bias))
  return _module(typename, **fields)


def batch_norm(bn, typename="nn.SpatialBatchNormalization", mean_shift=None):
  mean = _np(bn.running_mean)
  if mean_shift is not None:
    mean = mean + mean_shift
  return _module(typename, eps=bn.eps, momentum=bn.momentum, affine=True,
                 weight=Tensor(_np(bn.weight)), bias=Tensor(_np(bn.bias)),
                 running_mean=Tensor(mean),
                 running_var=Tensor(_np(bn.running_var)),
                 save_mean=_empty(), save_std=_empty())


def relu():
  return _module("cudnn.ReLU", inplace=True, mode="CUDNN_ACTIVATION_RELU")


def sequential(*modules):
  return _module("nn.Sequential", modules=list(modules))


def _unit(unit, in_channels, bottleneck, conv_type):
  if bottleneck:
    branch = sequential(batch_norm(unit.bn1), conv(unit.conv1, 1, 0, conv_type),
                        batch_norm(unit.bn2), relu(),
                        conv(unit.conv2, unit.stride, 1, conv_type),
                        batch_norm(unit.bn3), relu(),
                        conv(unit.conv3, 1, 0, conv_type),
                        batch_norm(unit.bn4))
    out_channels = unit.conv3.out_channels
  else:
    branch = sequential(batch_norm(unit.bn1),
                        conv(unit.conv1, unit.stride, 1, conv_type),
                        batch_norm(unit.bn2), relu(),
                        conv(unit.conv2, 1, 1, conv_type),
                        batch_norm(unit.bn3))
    out_channels = unit.conv2.out_channels
  shortcut = []
  if unit.stride == 2:
    shortcut.append(_module("nn.SpatialAveragePooling", kW=2, kH=2, dW=2, dH=2,
                            padW=0, padH=0, ceil_mode=False,
                            count_include_pad=True, divide=True))
  if out_channels != in_channels:
    shortcut.append(_module("nn.Padding", dim=1, pad=out_channels - in_channels,
                            nInputDim=3, value=0, index=1))
  else:
    shortcut.append(_module("nn.Identity"))
  return sequential(_module("nn.ConcatTable", modules=[branch,
                                                       sequential(*shortcut)]),
                    _module("nn.CAddTable", inplace=True)), out_channels


def fb_resnet_model(net, dropout=None, stem_bias=False, shortcut_first=False,
                    data_parallel=False,
                    conv_type="cudnn.SpatialConvolution"):
  """The addpyramidnet.lua tree for ``net`` (a TorchPyramidNet).

  Args:
    net: the PyTorch model whose numbers to write.
    dropout: p of an nn.Dropout before the classifier (ImageNet a=450).
    stem_bias: give the stem conv a random bias and shift the stem BN's
      running mean by it, so the network's function is unchanged (Torch convs
      may carry biases; the importer must fold them into the next BN).
    shortcut_first: put the shortcut before the branch in each ConcatTable.
    data_parallel: wrap the model in nn.DataParallelTable (as saved without
      fb.resnet.torch's unwrapping).
    conv_type: class of the units' convolutions (nn.SpatialConvolutionMM
      stores its weight as [out, in * kh * kw]).
  """
  imagenet = net.dataset == "imagenet"
  modules = []
  bias = None
  if stem_bias:
    bias = np.random.RandomState(7).randn(net.conv1.out_channels).astype(
        np.float32)
  modules.append(conv(net.conv1, 2 if imagenet else 1, 3 if imagenet else 1,
                      typename="nn.SpatialConvolution", bias=bias))
  modules.append(batch_norm(net.bn1, mean_shift=bias))
  if imagenet:
    modules.append(relu())
    modules.append(_module("nn.SpatialMaxPooling", kW=3, kH=3, dW=2, dH=2,
                           padW=1, padH=1, ceil_mode=False))
  channels = net.conv1.out_channels
  for s in range(net.num_stages):
    for unit in getattr(net, f"layer{s + 1}"):
      tree, channels = _unit(unit, channels, hasattr(unit, "conv3"),
                             conv_type)
      if shortcut_first:
        concat = tree.fields["modules"][0]
        concat.fields["modules"].reverse()
      # ImageNet units sit directly in the model; CIFAR ones in a layer().
      modules.append(tree if imagenet else sequential(tree))
  modules.append(_module("nn.Copy", intype="torch.CudaTensor",
                         outtype="torch.CudaTensor", dontCast=True))
  modules.append(batch_norm(net.bn_final,
                            typename="cudnn.SpatialBatchNormalization"))
  modules.append(relu())
  size = 7 if imagenet else 8
  modules.append(_module("cudnn.SpatialAveragePooling", kW=size, kH=size, dW=1,
                         dH=1, padW=0, padH=0, count_include_pad=True))
  modules.append(_module("nn.View", size=_Storage(np.array([channels]), "Long"),
                         numElements=channels, numInputDims=3))
  if dropout is not None:
    modules.append(_module("nn.Dropout", p=dropout, v2=True, inplace=True,
                           noise=_empty()))
  fc_weight = _np(net.fc.weight)
  modules.append(_module("nn.Linear", weight=Tensor(fc_weight),
                         bias=Tensor(_np(net.fc.bias)),
                         gradWeight=Tensor(np.zeros_like(fc_weight))))
  model = sequential(*modules)
  if data_parallel:
    model = _module("nn.DataParallelTable", modules=[model], dimension=1,
                    gpuAssignments=[1])
  return model


def save_fb_resnet_model(path, net, **kwargs):
  save(path, fb_resnet_model(net, **kwargs))

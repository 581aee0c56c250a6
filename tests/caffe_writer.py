"""Writes ``.caffemodel`` files (binary caffe.NetParameter) for import tests.

The protobuf wire format is encoded by hand here (varints, tags = field
number << 3 | wire type, length-delimited sub-messages, little-endian
floats), from the field numbers of BVLC caffe.proto, independently of the
message definitions in ``pyramidnet_tf.convert.caffe_reader``: a wrong field number
on either side makes the tests fail.

``pyramidnet_caffe(net)`` lays out a ``tests.torch_pyramidnet.TorchPyramidNet``
as jhkim89/PyramidNet-caffe's prototxts do: Convolution (no bias) ->
BatchNorm (mean, variance, scale-factor blobs) -> Scale (gamma, beta) ->
ReLU; per unit, the first BN reads the unit input, the shortcut concatenates
the (2x2 average-pooled) input with a frozen all-zero 1x1 convolution of it,
and an Eltwise SUM adds the two; then BN/Scale/ReLU, global average Pooling,
[Dropout], InnerProduct and Softmax.
"""

import struct

import numpy as np

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


def _varint(value: int) -> bytes:
  if value < 0:
    value += 1 << 64
  out = bytearray()
  while True:
    byte = value & 0x7F
    value >>= 7
    if value:
      out.append(byte | 0x80)
    else:
      out.append(byte)
      return bytes(out)


def _tag(field: int, wire: int) -> bytes:
  return _varint(field << 3 | wire)


def uint(field, value):
  return _tag(field, VARINT) + _varint(int(value))


def boolean(field, value):
  return uint(field, 1 if value else 0)


def f32(field, value):
  return _tag(field, FIXED32) + struct.pack("<f", value)


def chunk(field, payload: bytes):
  return _tag(field, BYTES) + _varint(len(payload)) + payload


def string(field, text):
  return chunk(field, text.encode("utf-8"))


# caffe.proto field numbers
_NET_NAME, _NET_INPUT, _NET_INPUT_DIM, _NET_LAYER = 1, 3, 4, 100
_L_NAME, _L_TYPE, _L_BOTTOM, _L_TOP, _L_BLOBS = 1, 2, 3, 4, 7
_L_CONCAT, _L_CONV, _L_DROPOUT, _L_ELTWISE = 104, 106, 108, 110
_L_IP, _L_POOL, _L_BN, _L_SCALE = 117, 121, 139, 142
_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH = 1, 2, 3, 4
_B_DATA, _B_SHAPE = 5, 7
_SHAPE_DIM = 1


def blob(array, legacy_4d=False, packed=True):
  array = np.asarray(array, dtype=np.float32)
  out = b""
  if legacy_4d:
    dims = [1] * (4 - array.ndim) + list(array.shape)
    for field, dim in zip((_B_NUM, _B_CHANNELS, _B_HEIGHT, _B_WIDTH), dims):
      out += uint(field, dim)
  else:
    out += chunk(_B_SHAPE, chunk(_SHAPE_DIM,
                                 b"".join(_varint(d) for d in array.shape)))
  flat = array.ravel()
  if packed:
    out += chunk(_B_DATA, flat.astype("<f4").tobytes())
  else:
    out += b"".join(f32(_B_DATA, float(v)) for v in flat)
  return out


def layer(name, kind, bottoms, tops, blobs=(), **params):
  out = string(_L_NAME, name) + string(_L_TYPE, kind)
  for b in bottoms:
    out += string(_L_BOTTOM, b)
  for t in tops:
    out += string(_L_TOP, t)
  for b in blobs:
    out += chunk(_L_BLOBS, b)
  for field, payload in params.items():
    out += chunk({"concat": _L_CONCAT, "conv": _L_CONV, "dropout": _L_DROPOUT,
                  "eltwise": _L_ELTWISE, "ip": _L_IP, "pool": _L_POOL,
                  "bn": _L_BN, "scale": _L_SCALE}[field], payload)
  return out


def conv_param(num_output, kernel, stride, pad):
  # ConvolutionParameter: num_output 1, bias_term 2, pad 3, kernel_size 4,
  # stride 6.
  return (uint(1, num_output) + boolean(2, False) + uint(3, pad) +
          uint(4, kernel) + uint(6, stride))


def pool_param(method, kernel=None, stride=None, pad=None, global_pool=False):
  # PoolingParameter: pool 1 (MAX 0, AVE 1), kernel_size 2, stride 3, pad 4,
  # global_pooling 12.
  out = uint(1, method)
  if global_pool:
    return out + boolean(12, True)
  return out + uint(2, kernel) + uint(3, stride) + uint(4, pad)


class _Builder:

  def __init__(self, factor, eps_override, unpacked_factor):
    self.layers = []
    self.factor = factor
    self.eps_override = eps_override
    self.unpacked_factor = unpacked_factor

  def add(self, *args, **kwargs):
    self.layers.append(layer(*args, **kwargs))

  def conv(self, name, bottom, top, weight, stride, pad):
    weight = weight.detach().numpy()
    self.add(name, "Convolution", [bottom], [top], [blob(weight)],
             conv=conv_param(weight.shape[0], weight.shape[2], stride, pad))

  def bn_scale(self, bn_name, scale_name, bottom, top, bn):
    """BatchNorm with Caffe's stored (sum-like) statistics, then Scale."""
    mean = bn.running_mean.numpy().astype(np.float64)
    var = bn.running_var.numpy().astype(np.float64)
    eps = 1e-5
    bn_param = boolean(1, True)  # use_global_stats
    if self.eps_override is not None:
      eps = self.eps_override
      bn_param += f32(3, eps)
      var = var + 1e-5 - eps  # same function as eps 1e-5 with var
    factor = self.factor
    self.add(bn_name, "BatchNorm", [bottom], [top],
             [blob(mean * factor), blob(var * factor),
              blob([factor], packed=not self.unpacked_factor)], bn=bn_param)
    self.add(scale_name, "Scale", [top], [top],
             [blob(bn.weight.detach().numpy()), blob(bn.bias.detach().numpy())],
             scale=boolean(4, True))  # ScaleParameter.bias_term


def pyramidnet_caffe(net, dropout=None, factor=999.982, eps=None,
                     unpacked_factor=False, zero_conv_value=0.0,
                     truncate_units=0):
  """NetParameter bytes for ``net`` (a TorchPyramidNet), PyramidNet-caffe style.

  Args:
    net: the PyTorch model whose numbers to write.
    dropout: ratio of a Dropout layer before the classifier.
    factor: BatchNorm's third blob; mean and variance are stored times it.
    eps: a BatchNorm eps to declare (variances adjusted so the network
      computes the same function as with eps 1e-5).
    unpacked_factor: write the scale-factor blobs as unpacked floats.
    zero_conv_value: value to put in the first padding convolution (0 is
      right; anything else must be rejected).
    truncate_units: leave out the last n residual units' layers entirely.
  """
  b = _Builder(factor, eps, unpacked_factor)
  imagenet = net.dataset == "imagenet"
  b.conv("conv1", "data", "conv1", net.conv1.weight, 2 if imagenet else 1,
         3 if imagenet else 1)
  b.bn_scale("bn1", "scale1", "conv1", "conv1", net.bn1)
  x = "conv1"
  if imagenet:
    b.add("relu1", "ReLU", ["conv1"], ["conv1"])
    b.add("max1", "Pooling", ["conv1"], ["max1"],
          pool=pool_param(0, 3, 2, 1))
    x = "max1"
  channels = net.conv1.out_channels
  zero_value = zero_conv_value
  all_units = [(s, i, unit) for s in range(net.num_stages)
               for i, unit in enumerate(getattr(net, f"layer{s + 1}"))]
  for s, i, unit in all_units[:len(all_units) - truncate_units]:
    tag = f"{s + 1}_{i + 1}"
    b.bn_scale(f"bn{tag}", f"scale{tag}", x, f"bn{tag}", unit.bn1)
    convs = [unit.conv1, unit.conv2] + ([unit.conv3] if hasattr(unit, "conv3")
                                        else [])
    bns = [unit.bn2, unit.bn3] + ([unit.bn4] if hasattr(unit, "bn4") else [])
    bottom = f"bn{tag}"
    for k, (conv, bn) in enumerate(zip(convs, bns)):
      name = f"conv{tag}_{k + 1}"
      kernel = conv.weight.shape[2]
      b.conv(name, bottom, name, conv.weight, conv.stride[0], kernel // 2)
      b.bn_scale(f"bn{tag}_{k + 1}", f"scale{tag}_{k + 1}", name, name, bn)
      if k + 1 < len(convs):
        b.add(f"relu{tag}_{k + 1}", "ReLU", [name], [name])
      bottom = name
    short = x
    if unit.stride == 2:
      b.add(f"pool{tag}", "Pooling", [x], [f"pool{tag}"],
            pool=pool_param(1, 2, 2, 0))
      short = f"pool{tag}"
    out_channels = convs[-1].weight.shape[0]
    if out_channels > channels:
      zeros = np.full((out_channels - channels, channels, 1, 1), zero_value,
                      np.float32)
      zero_value = 0.0
      b.add(f"zero_conv{tag}", "Convolution", [short], [f"zero_conv{tag}"],
            [blob(zeros)], conv=conv_param(out_channels - channels, 1, 1, 0))
      b.add(f"zero{tag}", "Concat", [short, f"zero_conv{tag}"],
            [f"zero{tag}"], concat=uint(2, 1))
      short = f"zero{tag}"
    b.add(f"res{tag}", "Eltwise", [short, bottom], [f"res{tag}"],
          eltwise=uint(1, 1))
    x = f"res{tag}"
    channels = out_channels
  b.bn_scale("bn_final", "scale_final", x, "bn_final", net.bn_final)
  b.add("relu_final", "ReLU", ["bn_final"], ["bn_final"])
  b.add("global_avg_pool", "Pooling", ["bn_final"], ["global_avg_pool"],
        pool=pool_param(1, global_pool=True))
  feed = "global_avg_pool"
  if dropout is not None:
    b.add("dropout", "Dropout", [feed], [feed], dropout=f32(1, dropout))
  fc_w = net.fc.weight.detach().numpy()
  b.add("fc", "InnerProduct", [feed], ["fc"],
        [blob(fc_w, legacy_4d=True), blob(net.fc.bias.detach().numpy())],
        ip=uint(1, fc_w.shape[0]))
  b.add("prob", "Softmax", ["fc"], ["prob"])
  size = 224 if imagenet else 32
  header = string(_NET_NAME, "PyramidNet") + string(_NET_INPUT, "data")
  for dim in (1, 3, size, size):
    header += uint(_NET_INPUT_DIM, dim)
  return header + b"".join(chunk(_NET_LAYER, l) for l in b.layers)


def save(path, net, **kwargs):
  data = pyramidnet_caffe(net, **kwargs)
  with open(path, "wb") as f:
    f.write(data)
  return data

"""Maps a Caffe (.caffemodel) PyramidNet graph onto our network.

jhkim89/PyramidNet-caffe releases its ImageNet models as binary
NetParameters. ``caffe_reader`` parses the file's bytes into protobuf
messages; this module rebuilds the layer graph from the blob names and
describes it as a ``structure.Net``, which ``structure.assign`` checks
against and loads into our ``PyramidNet``.

Residual units are found by the graph, not by layer order: a unit is an
``Eltwise`` SUM whose two inputs trace back to the same unit input, one
through the BatchNorm/Scale/Convolution/ReLU branch, the other through the
shortcut (an optional 2x2 average pool, then a ``Concat`` with a frozen
all-zero 1x1 convolution, which supplies the zero channels). A ``BatchNorm``
(whose statistics are divided by its stored scale factor) and the ``Scale``
after it become one batch norm.
"""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pyramidnet_tf.convert import caffe_reader
from pyramidnet_tf.convert import structure

_SOURCES = ("Input", "Data", "ImageData", "DummyData", "MemoryData",
            "HDF5Data", "WindowData", "AnnotatedData")
_SINKS = ("Softmax", "SoftmaxWithLoss", "Accuracy", "Silence")
_OPS = ("Convolution", "BatchNorm", "Scale", "ReLU", "Pooling", "Eltwise",
        "Concat", "InnerProduct", "Dropout")


class _Node:
  """One computing layer of the graph, or a net input."""

  def __init__(self, layer, inputs: List["_Node"]):
    self.layer = layer  # None for a net input
    self.inputs = inputs

  @property
  def type(self) -> str:
    return self.layer.type if self.layer is not None else "<input>"

  @property
  def name(self) -> str:
    return self.layer.name if self.layer is not None else "<net input>"


def _graph(net, path: str) -> List[_Node]:
  """One node per computing layer; in-place layers get their own node."""
  current: Dict[str, _Node] = {name: _Node(None, []) for name in net.input}
  nodes = []
  for layer in net.layer:
    kind = layer.type
    if kind in _SINKS:
      continue
    if kind in _SOURCES:
      for top in layer.top:
        current[top] = _Node(None, [])
      continue
    missing = [b for b in layer.bottom if b not in current]
    if missing:
      # An input blob declared nowhere (e.g. a stripped data layer).
      for b in missing:
        current[b] = _Node(None, [])
    inputs = [current[b] for b in layer.bottom]
    if kind == "Split":
      for top in layer.top:
        current[top] = inputs[0]
      continue
    if kind not in _OPS:
      raise structure.ImportMismatch(
          f"{path}: layer '{layer.name}' has type {kind}, which a PyramidNet "
          f"does not use (expected one of {', '.join(_OPS)})")
    if len(layer.top) != 1:
      raise structure.ImportMismatch(
          f"{path}: layer '{layer.name}' ({kind}) has {len(layer.top)} "
          "outputs, expected 1")
    node = _Node(layer, inputs)
    nodes.append(node)
    current[layer.top[0]] = node
  return nodes


def _square(param, single, h, w, default, where, path) -> int:
  """A square kernel/stride/pad value from Caffe's several spellings."""
  field = getattr(param, single)
  if isinstance(field, int):  # optional scalar (PoolingParameter)
    values = [field]
  else:  # repeated (ConvolutionParameter)
    values = list(field) or [default]
  if param.HasField(h) or param.HasField(w):
    values = [getattr(param, h), getattr(param, w)]
  if len(set(values)) != 1:
    raise structure.ImportMismatch(
        f"{path}: layer {where} has non-square {single} {values}")
  return int(values[0])


def _conv(node: _Node, path: str) -> structure.Conv:
  layer, p = node.layer, node.layer.convolution_param
  where = f"'{layer.name}'"
  if p.group != 1 or any(d != 1 for d in p.dilation):
    raise structure.ImportMismatch(
        f"{path}: convolution {where} is grouped or dilated, which "
        "PyramidNet never uses")
  blobs = caffe_reader.layer_blobs(layer)
  if not blobs or blobs[0].ndim != 4:
    raise structure.ImportMismatch(
        f"{path}: convolution {where} should hold a 4-D weight blob, found "
        f"{[list(b.shape) for b in blobs]}")
  bias = blobs[1].reshape(-1) if len(blobs) > 1 else None
  return structure.Conv(
      blobs[0], _square(p, "stride", "stride_h", "stride_w", 1, where, path),
      _square(p, "pad", "pad_h", "pad_w", 0, where, path), bias,
      f"{where} (Convolution)")


def _bn(bn_node: _Node, scale_node: Optional[_Node],
        path: str) -> structure.BN:
  """One batch norm from a BatchNorm layer and the Scale after it (if any)."""
  layer = bn_node.layer
  blobs = caffe_reader.layer_blobs(layer)
  if len(blobs) != 3 or blobs[2].size != 1:
    raise structure.ImportMismatch(
        f"{path}: BatchNorm '{layer.name}' should hold 3 blobs (mean, "
        f"variance, scale factor [1]), found {[list(b.shape) for b in blobs]}")
  factor = float(blobs[2].reshape(-1)[0])
  scale = 0.0 if factor == 0 else 1.0 / factor
  mean = blobs[0].reshape(-1).astype(np.float64) * scale
  var = blobs[1].reshape(-1).astype(np.float64) * scale
  where = f"'{layer.name}'"
  if scale_node is None:
    gamma, beta = np.ones_like(mean), np.zeros_like(mean)
  else:
    s = scale_node.layer
    if len(scale_node.inputs) != 1 or s.scale_param.axis != 1 or (
        s.scale_param.num_axes != 1):
      raise structure.ImportMismatch(
          f"{path}: Scale '{s.name}' must scale channels (one input, axis 1, "
          "num_axes 1)")
    scale_blobs = caffe_reader.layer_blobs(s)
    if len(scale_blobs) not in (1, 2):
      raise structure.ImportMismatch(
          f"{path}: Scale '{s.name}' holds {len(scale_blobs)} blobs, "
          "expected 1 or 2")
    gamma = scale_blobs[0].reshape(-1)
    beta = (scale_blobs[1].reshape(-1) if len(scale_blobs) == 2 else
            np.zeros_like(gamma))
    where += f" + '{s.name}'"
  return structure.BN(gamma, beta, mean, var,
                      float(layer.batch_norm_param.eps),
                      f"{where} (BatchNorm+Scale)")


def _pool(node: _Node, path: str) -> structure.Op:
  p = node.layer.pooling_param
  where = f"'{node.layer.name}'"
  kind = {caffe_reader.POOL_MAX: "maxpool",
          caffe_reader.POOL_AVE: "avgpool"}.get(p.pool)
  if kind is None:
    raise structure.ImportMismatch(
        f"{path}: pooling {where} uses method {p.pool}, expected MAX or AVE")
  params = {"global": bool(p.global_pooling)}
  if not p.global_pooling:
    params.update(
        kernel=_square(p, "kernel_size", "kernel_h", "kernel_w", 0, where,
                       path),
        stride=_square(p, "stride", "stride_h", "stride_w", 1, where, path),
        pad=_square(p, "pad", "pad_h", "pad_w", 0, where, path))
  return structure.Op(kind, f"{where} (Pooling)", params)


def _ops(nodes: List[_Node], path: str) -> List[Any]:
  """Forward-ordered nodes of a single-input chain -> Conv/BN/Op list."""
  ops, i = [], 0
  while i < len(nodes):
    node = nodes[i]
    kind = node.type
    if kind == "Convolution":
      ops.append(_conv(node, path))
    elif kind == "BatchNorm":
      scale = None
      if i + 1 < len(nodes) and nodes[i + 1].type == "Scale":
        scale = nodes[i + 1]
        i += 1
      ops.append(_bn(node, scale, path))
    elif kind == "Scale":
      raise structure.ImportMismatch(
          f"{path}: Scale '{node.name}' does not follow a BatchNorm layer")
    elif kind == "ReLU":
      ops.append(structure.Op("relu", f"'{node.name}' (ReLU)"))
    elif kind == "Pooling":
      ops.append(_pool(node, path))
    elif kind == "Dropout":
      ops.append(structure.Op(
          "dropout", f"'{node.name}' (Dropout)",
          {"p": float(node.layer.dropout_param.dropout_ratio)}))
    else:
      ops.append(structure.Op(kind.lower(), f"'{node.name}' ({kind})"))
    i += 1
  return ops


def _chain(node: _Node) -> List[_Node]:
  """``node`` and its ancestors through single-input layers.

  Also through the identity input of a Concat, up to and including the first
  Eltwise, net input or other multi-input layer.
  """
  chain = [node]
  while True:
    if node.type in ("Eltwise", "<input>"):
      return chain
    if node.type == "Concat" or len(node.inputs) == 1:
      node = node.inputs[0]
      chain.append(node)
    else:
      return chain


def _unit(eltwise: _Node, path: str) -> Tuple[structure.Unit, _Node]:
  """The Unit ending at ``eltwise``, and the node that feeds the unit."""
  layer = eltwise.layer
  where = f"'{layer.name}'"
  p = layer.eltwise_param
  if p.operation != caffe_reader.ELTWISE_SUM or any(c != 1 for c in p.coeff):
    raise structure.ImportMismatch(
        f"{path}: Eltwise {where} must be a plain SUM")
  if len(eltwise.inputs) != 2:
    raise structure.ImportMismatch(
        f"{path}: Eltwise {where} has {len(eltwise.inputs)} inputs, "
        "expected 2")
  chains = [_chain(x) for x in eltwise.inputs]
  ids = [{id(n) for n in c} for c in chains]
  fork = next((n for n in chains[0] if id(n) in ids[1]), None)
  if fork is None:
    raise structure.ImportMismatch(
        f"{path}: the two inputs of Eltwise {where} do not come from a "
        "common unit input")
  paths = [c[:[id(n) for n in c].index(id(fork))][::-1] for c in chains]
  is_branch = [any(n.type == "Convolution" for n in p) for p in paths]
  if sum(is_branch) != 1 or any(
      n.type == "Concat" for n in paths[is_branch.index(True)]):
    raise structure.ImportMismatch(
        f"{path}: residual unit {where}: expected one input through "
        "BatchNorm/Scale/Convolution/ReLU layers and one through the "
        f"shortcut (pooling / Concat), found "
        f"{[[n.name for n in p] for p in paths]}")
  branch_nodes = paths[is_branch.index(True)]
  shortcut_nodes = paths[is_branch.index(False)]
  for node in branch_nodes:
    if node.type not in ("BatchNorm", "Scale", "Convolution", "ReLU"):
      raise structure.ImportMismatch(
          f"{path}: residual branch of {where} contains {node.type} "
          f"'{node.name}'")
  stride, pad = 1, 0
  for node in shortcut_nodes:
    if node.type == "Pooling" and stride == 1 and pad == 0:
      op = _pool(node, path)
      if op.kind != "avgpool" or op.params.get("global") or (
          op.params["kernel"], op.params["stride"], op.params["pad"]) != (
              2, 2, 0):
        raise structure.ImportMismatch(
            f"{path}: shortcut pooling {op.where} of {where} is {op.kind} "
            f"{op.params}, expected AVE 2x2 stride 2")
      stride = 2
    elif node.type == "Concat" and pad == 0:
      pad = _zero_padding(node, path)
    else:
      raise structure.ImportMismatch(
          f"{path}: unexpected {node.type} '{node.name}' in the shortcut of "
          f"{where}")
  unit = structure.Unit(_ops(branch_nodes, path), stride, pad,
                        f"{where} (Eltwise)")
  return unit, fork


def _zero_padding(concat: _Node, path: str) -> int:
  """Checks a Concat(x, zero_conv(x)); returns the zero channels added."""
  layer = concat.layer
  p = layer.concat_param
  axis = p.axis if p.HasField("axis") else p.concat_dim
  if axis != 1 or len(concat.inputs) != 2:
    raise structure.ImportMismatch(
        f"{path}: shortcut Concat '{layer.name}' must join 2 inputs on the "
        "channel axis")
  zero = concat.inputs[1]
  if zero.type != "Convolution" or zero.inputs[0] is not concat.inputs[0]:
    raise structure.ImportMismatch(
        f"{path}: shortcut Concat '{layer.name}': its second input should be "
        "a 1x1 convolution of its first input (the frozen all-zero "
        f"padding convolution), found {zero.type} '{zero.name}'")
  conv = _conv(zero, path)
  if conv.weight.shape[2:] != (1, 1) or conv.stride != 1 or conv.padding:
    raise structure.ImportMismatch(
        f"{path}: padding convolution {conv.where} must be 1x1, stride 1, "
        "pad 0")
  biggest = float(np.abs(conv.weight).max()) if conv.weight.size else 0.0
  if conv.bias is not None and conv.bias.size:
    biggest = max(biggest, float(np.abs(conv.bias).max()))
  if biggest != 0.0:
    raise structure.ImportMismatch(
        f"{path}: padding convolution {conv.where} is not all zero (max "
        f"|value| {biggest:g}); its output would not be zero channels, which "
        "our shortcut assumes")
  return int(conv.weight.shape[0])


def _classifier(fc: _Node, path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(weight [classes, features], bias [classes]) of the InnerProduct."""
  layer = fc.layer
  p = layer.inner_product_param
  blobs = caffe_reader.layer_blobs(layer)
  if p.axis != 1 or len(blobs) not in (1, 2):
    raise structure.ImportMismatch(
        f"{path}: InnerProduct '{layer.name}': expected axis 1 and 1-2 "
        f"blobs, found axis {p.axis}, {len(blobs)} blobs")
  outputs = p.num_output or blobs[0].shape[0]
  if p.transpose:  # stored [in, out]
    weight = blobs[0].reshape(-1, outputs).T
  else:
    weight = blobs[0].reshape(outputs, -1)
  bias = blobs[1].reshape(-1) if len(blobs) == 2 else np.zeros(
      weight.shape[0], np.float32)
  return weight, bias


def parse_caffe(net, path: str) -> structure.Net:
  """The structural description of a PyramidNet-caffe NetParameter.

  Args:
    net: the file's NetParameter, as ``caffe_reader.load`` returns it.
    path: the file, for error messages.

  Returns:
    The network, for ``structure.assign``.

  Raises:
    structure.ImportMismatch: if the graph is not a PyramidNet (other layer
      types, units that do not chain, a non-zero padding convolution, an
      unexpected head).
  """
  nodes = _graph(net, path)
  fcs = [n for n in nodes if n.type == "InnerProduct"]
  if len(fcs) != 1:
    raise structure.ImportMismatch(
        f"{path}: expected one InnerProduct (classifier) layer, found "
        f"{len(fcs)}")
  fc = fcs[0]
  head_chain = _chain(fc.inputs[0])
  last = head_chain[-1]
  if last.type != "Eltwise":
    raise structure.ImportMismatch(
        f"{path}: the classifier does not follow a residual unit (no "
        "Eltwise found before it)")
  head = _ops(head_chain[:-1][::-1], path)
  kinds = [structure.op_kind(op) for op in head]
  dropout = None
  expected = ["bn", "relu", "avgpool"]
  if "dropout" in kinds:
    dropout = head[kinds.index("dropout")].params["p"]
    expected.append("dropout")
  if kinds != expected:
    raise structure.ImportMismatch(
        f"{path}: between the last residual unit and the classifier found "
        f"[{', '.join(kinds)}], expected [{', '.join(expected)}]")
  found = []
  node = last
  while node.type == "Eltwise":
    unit, node = _unit(node, path)
    found.append(unit)
  found.reverse()
  eltwise_count = sum(n.type == "Eltwise" for n in nodes)
  if eltwise_count != len(found):
    raise structure.ImportMismatch(
        f"{path}: {eltwise_count} Eltwise layers but only {len(found)} form "
        "the chain of residual units ending at the classifier")
  stem_chain = _chain(node)
  if stem_chain[-1].type != "<input>":
    raise structure.ImportMismatch(
        f"{path}: the stem before the first unit does not start at the net "
        "input")
  stem = _ops(stem_chain[:-1][::-1], path)
  weight, bias = _classifier(fc, path)
  result = structure.Net(stem=stem, units=found, head_bn=head[0],
                         fc_weight=weight, fc_bias=bias, dropout=dropout,
                         where=path)
  if len(stem) == 4 and stem[3].kind == "maxpool":
    result.notes.append(
        "Caffe's pooling rounds output sizes up: its 3x3/2 pad-1 stem max pool"
        " gives 57x57 at 224x224 input where this model (like the Torch "
        "original) gives 56x56, so logits differ slightly from Caffe's own")
  return result


def load_caffe(model, path: str) -> Dict[str, Any]:
  """Reads a .caffemodel into ``model``.

  Args:
    model: a ``PyramidNet`` built with the file's architecture.
    path: the .caffemodel file.

  Returns:
    Import metadata (see ``structure.assign``).

  Raises:
    caffe_reader.CaffeFormatError: if the file is not a valid NetParameter.
    structure.ImportMismatch: if its network does not fit ``model`` (nothing
      is assigned).
  """
  net = parse_caffe(caffe_reader.load(path), path)
  return structure.assign(model, net)

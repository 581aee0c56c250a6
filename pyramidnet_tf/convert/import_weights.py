r"""Maps the authors' Torch7 (.t7) and Caffe (.caffemodel) PyramidNets to ours.

Both formats are first turned into the same structural description (``Net``):
a stem, the residual units in network order, each with its residual branch
(BN / conv / ReLU in order) and its parameter-free shortcut (pooling stride,
zero channels appended), and the head. Units are found by the graph, not by
parameter order: in a .t7 tree a unit is an ``nn.ConcatTable`` (branch,
shortcut) followed by ``nn.CAddTable``; in a Caffe net it is an ``Eltwise``
SUM whose two inputs trace back to the same unit input, one through the
BN/Scale/Convolution/ReLU branch, the other through the shortcut (optional
2x2 average pool, then a ``Concat`` with a frozen all-zero 1x1 convolution).

``assign`` then checks every unit against the model (op sequence, kernel
sizes, strides, paddings, shapes, shortcut pooling and padding) and fails
with the unit, the place in the file, and expected vs found. Conv biases are
folded into the following BN (its mean shifts by the bias); a BN eps other
than ours (1e-5) is folded into the variance (var + eps - 1e-5, exact at
inference) and reported in the metadata.

    python -m pyramidnet_tf.import_torch --checkpoint=PyramidNet-200.t7 \
        --dataset=imagenet --depth=200 --alpha=300 --output_dir=/tmp/pn200
"""

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from pyramidnet_tf.convert import caffe_reader
from pyramidnet_tf.convert import torch7_reader
from pyramidnet_tf.model import units

BN_EPSILON = 1e-5

# What the published numbers were measured with (spec 4.2).
# Torch7 / fb.resnet.torch: RGB scaled to [0, 1], then (x - mean) / std.
TORCH7_INPUT_CONVENTION = {
    "color": "RGB", "scale": 1.0 / 255.0,
    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
}
# Caffe (jhkim89/PyramidNet-caffe): BGR pixels 0-255, minus (104, 117, 124),
# times 0.017352, i.e. std = 1 / 0.017352 in the common formula
# (pixel * scale - mean) / std.
CAFFE_SCALE = 0.017352
CAFFE_INPUT_CONVENTION = {
    "color": "BGR", "scale": 1.0,
    "mean": [104.0, 117.0, 124.0], "std": [1.0 / CAFFE_SCALE] * 3,
}
# fb.resnet.torch's CIFAR statistics (0-255 units) for CIFAR .t7 models.
TORCH7_CIFAR_CONVENTION = {
    "cifar10": {"color": "RGB", "scale": 1.0,
                "mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]},
    "cifar100": {"color": "RGB", "scale": 1.0,
                 "mean": [129.3, 124.1, 112.4], "std": [68.2, 65.4, 70.4]},
}


class ImportMismatch(ValueError):
  """The file's network does not fit the model (or is not a PyramidNet)."""


@dataclasses.dataclass
class Conv:
  weight: np.ndarray  # [out, in, kh, kw]
  stride: int
  padding: int
  bias: Optional[np.ndarray]
  where: str


@dataclasses.dataclass
class BN:
  gamma: np.ndarray
  beta: np.ndarray
  mean: np.ndarray
  var: np.ndarray
  eps: float
  where: str


@dataclasses.dataclass
class Op:
  """A parameter-free op: "relu", "maxpool", "avgpool", ..."""
  kind: str
  where: str
  params: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Unit:
  branch: List[Any]  # Conv / BN / Op("relu") in order
  pool_stride: int  # 2 if the shortcut average-pools, else 1
  pad_channels: int  # zero channels the shortcut appends
  where: str


@dataclasses.dataclass
class Net:
  stem: List[Any]  # Conv, BN[, Op relu, Op maxpool]
  units: List[Unit]
  head_bn: BN
  fc_weight: np.ndarray  # [classes, features]
  fc_bias: np.ndarray
  dropout: Optional[float]
  where: str  # the file
  notes: List[str] = dataclasses.field(default_factory=list)


def _kinds(ops) -> str:
  names = []
  for op in ops:
    if isinstance(op, Conv):
      k = op.weight.shape[-1]
      names.append(f"conv{k}x{k}/s{op.stride}")
    elif isinstance(op, BN):
      names.append("bn")
    else:
      names.append(op.kind)
  return ", ".join(names)


def _fail(net_or_path, message: str):
  path = net_or_path.where if isinstance(net_or_path, Net) else net_or_path
  raise ImportMismatch(f"{path}: {message}")


def _expected_branch(unit) -> List[Tuple[str, Optional[str]]]:
  """(kind, attribute name) of each op of our unit's residual branch."""
  if hasattr(unit, "conv3"):
    return [("bn", "bn1"), ("conv", "conv1"), ("bn", "bn2"), ("relu", None),
            ("conv", "conv2"), ("bn", "bn3"), ("relu", None),
            ("conv", "conv3"), ("bn", "bn4")]
  return [("bn", "bn1"), ("conv", "conv1"), ("bn", "bn2"), ("relu", None),
          ("conv", "conv2"), ("bn", "bn3")]


def _kind(op) -> str:
  if isinstance(op, Conv):
    return "conv"
  if isinstance(op, BN):
    return "bn"
  return op.kind


class _Collector:
  """Builds the PyTorch-named state_dict while checking each piece."""

  def __init__(self, net: Net):
    self.net = net
    self.state: Dict[str, np.ndarray] = {}
    self.eps_adjusted: List[str] = []

  def conv(self, key: str, op: Conv, conv, next_bn: BN, context: str):
    want = (conv.out_channels, conv.in_channels, conv.kernel_size,
            conv.kernel_size)
    if tuple(op.weight.shape) != want:
      _fail(self.net, f"{context}: convolution {op.where} has weight "
            f"{list(op.weight.shape)}, expected {list(want)} "
            "[out, in, kh, kw]")
    if op.stride != conv.stride or op.padding != conv.padding:
      _fail(self.net, f"{context}: convolution {op.where} has stride "
            f"{op.stride} / padding {op.padding}, expected stride "
            f"{conv.stride} / padding {conv.padding}")
    self.state[f"{key}.weight"] = op.weight
    if op.bias is not None:
      if op.bias.shape != (want[0],):
        _fail(self.net, f"{context}: convolution {op.where} has bias "
              f"{list(op.bias.shape)}, expected [{want[0]}]")
      # BN(conv(x) + b) == BN'(conv(x)) with running mean - b.
      next_bn.mean = next_bn.mean.astype(np.float64) - op.bias

  def bn(self, key: str, op: BN, bn, context: str):
    for name in ("gamma", "beta", "mean", "var"):
      value = getattr(op, name)
      if tuple(value.shape) != (bn.channels,):
        _fail(self.net, f"{context}: batch norm {op.where} has {name} of "
              f"shape {list(value.shape)}, expected [{bn.channels}]")
    var = op.var.astype(np.float64)
    if abs(op.eps - BN_EPSILON) > 1e-12:
      var = var + op.eps - BN_EPSILON
      if np.any(var <= 0):
        _fail(self.net, f"{context}: batch norm {op.where} uses eps "
              f"{op.eps:g}; folding it into our eps {BN_EPSILON:g} gives a "
              "non-positive variance")
      self.eps_adjusted.append(op.where)
    self.state[f"{key}.weight"] = op.gamma
    self.state[f"{key}.bias"] = op.beta
    self.state[f"{key}.running_mean"] = op.mean
    self.state[f"{key}.running_var"] = var


def _map_branch(collector: _Collector, prefix: str, ops: List[Any], unit,
                context: str):
  expected = _expected_branch(unit)
  got = [_kind(op) for op in ops]
  if got != [kind for kind, _ in expected]:
    _fail(collector.net, f"{context}: the residual branch is "
          f"[{_kinds(ops)}], expected "
          f"[{', '.join(kind for kind, _ in expected)}] "
          f"({'bottleneck' if hasattr(unit, 'conv3') else 'basic'} unit)")
  for position, (op, (kind, name)) in enumerate(zip(ops, expected)):
    if kind == "conv":
      collector.conv(f"{prefix}.{name}", op, getattr(unit, name),
                     ops[position + 1], context)
  for op, (kind, name) in zip(ops, expected):
    if kind == "bn":
      collector.bn(f"{prefix}.{name}", op, getattr(unit, name), context)


def _describe_units(units: List[Unit]) -> str:
  if not units:
    return "no residual units"
  stages, count = [], 0
  for unit in units:
    if unit.pool_stride == 2 and count:
      stages.append(count)
      count = 0
    count += 1
  stages.append(count)
  convs = sum(isinstance(op, Conv) for op in units[0].branch)
  kind = "bottleneck" if convs == 3 else "basic" if convs == 2 else (
      f"{convs}-conv")
  final = [op for op in units[-1].branch if isinstance(op, Conv)]
  width = final[-1].weight.shape[0] if final else "?"
  return (f"{len(units)} {kind} units {'/'.join(map(str, stages))}, "
          f"{width} features")


def to_state_dict(model, net: Net) -> Tuple[Dict[str, np.ndarray], List[str]]:
  """PyTorch-named arrays for ``model`` from ``net``, checked unit by unit.

  Returns:
    (state_dict, names of the BNs whose eps was folded into the variance).
  """
  collector = _Collector(net)
  imagenet = model.dataset == "imagenet"
  ours = (f"{model.dataset} depth {model.arch.depth} alpha "
          f"{model.arch.alpha:g}: {sum(map(len, model.stages))} "
          f"{'bottleneck' if model.arch.bottleneck else 'basic'} units "
          f"{'/'.join(str(len(s)) for s in model.stages)}, "
          f"{model.num_features} features")
  stem_kinds = ["conv", "bn"] + (["relu", "maxpool"] if imagenet else [])
  if [_kind(op) for op in net.stem] != stem_kinds:
    _fail(net, f"stem is [{_kinds(net.stem)}], expected "
          f"[{', '.join(stem_kinds)}] for {model.dataset}")
  if imagenet:
    pool = net.stem[3].params
    if (pool.get("kernel"), pool.get("stride"), pool.get("pad")) != (3, 2, 1):
      _fail(net, f"stem max pool {net.stem[3].where} is {pool}, expected "
            "kernel 3, stride 2, pad 1")
  collector.conv("conv1", net.stem[0], model.conv1, net.stem[1], "stem")
  collector.bn("bn1", net.stem[1], model.bn1, "stem")

  units = [u for stage in model.stages for u in stage]
  if len(net.units) != len(units):
    _fail(net, f"the file has {_describe_units(net.units)}; the model "
          f"is {ours}")
  position = 0
  for s, stage in enumerate(model.stages):
    for i, unit in enumerate(stage):
      found = net.units[position]
      context = (f"unit {position + 1} of {len(units)} (layer{s + 1}.{i}, "
                 f"{unit.in_channels}->{unit.out_channels} channels, stride "
                 f"{unit.stride}; in the file: {found.where})")
      if found.pool_stride != unit.stride:
        _fail(net, f"{context}: the shortcut "
              f"{'pools' if found.pool_stride == 2 else 'does not pool'}, "
              f"expected stride {unit.stride}")
      if found.pad_channels != unit.out_channels - unit.in_channels:
        _fail(net, f"{context}: the shortcut appends {found.pad_channels} "
              f"zero channels, expected "
              f"{unit.out_channels - unit.in_channels}; the file has "
              f"{_describe_units(net.units)}, the model {ours}")
      _map_branch(collector, f"layer{s + 1}.{i}", found.branch, unit, context)
      position += 1
  collector.bn("bn_final", net.head_bn, model.bn_final, "head")
  want = (model.num_classes, model.num_features)
  if tuple(net.fc_weight.shape) != want or net.fc_bias.shape != (want[0],):
    _fail(net, f"classifier weight {list(net.fc_weight.shape)} / bias "
          f"{list(net.fc_bias.shape)}, expected {list(want)} / [{want[0]}]")
  collector.state["fc.weight"] = net.fc_weight
  collector.state["fc.bias"] = net.fc_bias
  if net.dropout is not None and abs(net.dropout - model.drop_rate) > 1e-9:
    _fail(net, f"the file has dropout {net.dropout:g} before the "
          f"classifier but the model was built with drop_rate "
          f"{model.drop_rate:g}; pass --drop_rate={net.dropout:g}")
  return collector.state, collector.eps_adjusted


def assign(model, net: Net) -> Dict[str, Any]:
  """Loads ``net`` into ``model``; returns what was done (for metadata).

  Nothing is assigned unless every variable of the model gets an array of
  its shape (all-or-nothing).
  """
  state, eps_adjusted = to_state_dict(model, net)
  pairs = []
  for key, (variable, layout) in model.torch_variables().items():
    if variable is None:  # num_batches_tracked
      continue
    if key not in state:
      _fail(net, f"internal error: no array mapped to {key}")
    array = np.asarray(state.pop(key), np.float32)
    if tuple(array.shape) != units.torch_shape(variable, layout):
      _fail(net, f"{key}: expected {list(units.torch_shape(variable, layout))}, "
            f"got {list(array.shape)}")
    pairs.append((variable, units.to_tf_layout(array, layout)))
  if state:
    _fail(net, f"internal error: arrays mapped to unknown keys {sorted(state)}")
  for variable, value in pairs:
    variable.assign(value)
  report = {"arrays_loaded": len(pairs)}
  if eps_adjusted:
    report["bn_eps_folded_into_variance"] = len(eps_adjusted)
  if net.notes:
    report["notes"] = list(net.notes)
  return report


# ---- Torch7 ----------------------------------------------------------------

_T7_CONV = ("nn.SpatialConvolution", "cudnn.SpatialConvolution",
            "nn.SpatialConvolutionMM")
_T7_BN = ("nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization",
          "fbnn.SpatialBatchNormalization")
_T7_SIMPLE = {
    "nn.ReLU": "relu", "cudnn.ReLU": "relu",
    "nn.SpatialMaxPooling": "maxpool", "cudnn.SpatialMaxPooling": "maxpool",
    "nn.SpatialAveragePooling": "avgpool",
    "cudnn.SpatialAveragePooling": "avgpool",
    "nn.View": "view", "nn.Reshape": "view", "nn.Copy": "copy",
    "nn.Identity": "identity", "nn.Padding": "padding",
    "nn.Dropout": "dropout",
}
_T7_CONTAINERS = ("nn.Sequential",)


def _t7_array(module, field, where, path) -> np.ndarray:
  value = module.get(field)
  if not isinstance(value, np.ndarray):
    raise ImportMismatch(
        f"{path}: {module.typename} {where} has no tensor '{field}' "
        f"(found {type(value).__name__})")
  return value


def _t7_leaf(module, where: str, path: str):
  name = module.typename
  if name in _T7_CONV:
    weight = _t7_array(module, "weight", where, path)
    shape = (module.get("nOutputPlane"), module.get("nInputPlane"),
             module.get("kH"), module.get("kW"))
    if weight.ndim == 2 and weight.size == np.prod(shape):
      weight = weight.reshape(shape)  # SpatialConvolutionMM's 2-D weight
    if module.get("dW") != module.get("dH") or (
        module.get("padW", 0) != module.get("padH", 0)):
      raise ImportMismatch(f"{path}: {name} {where} has unequal strides or "
                           "paddings, which PyramidNet never uses")
    if module.get("groups", 1) not in (1, None):
      raise ImportMismatch(f"{path}: {name} {where} is a grouped convolution")
    bias = module.get("bias")
    return Conv(weight, module.get("dW"), module.get("padW", 0),
                bias if isinstance(bias, np.ndarray) and bias.size else None,
                f"{where} ({name})")
  if name in _T7_BN:
    mean = _t7_array(module, "running_mean", where, path)
    if not isinstance(module.get("running_var"), np.ndarray):
      raise ImportMismatch(
          f"{path}: {name} {where} has no running_var (fields: "
          f"{sorted(map(str, module.fields))}); files from nn versions that "
          "stored running_std are not supported")
    var = module.get("running_var")
    gamma = module.get("weight")
    beta = module.get("bias")
    if module.get("affine") is False or gamma is None:
      gamma, beta = np.ones_like(mean), np.zeros_like(mean)
    return BN(gamma, beta, mean, var, float(module.get("eps", 1e-5)),
              f"{where} ({name})")
  if name in _T7_SIMPLE:
    kind = _T7_SIMPLE[name]
    params = {}
    if kind in ("maxpool", "avgpool"):
      if module.get("kW") != module.get("kH") or (
          module.get("dW") != module.get("dH")) or (
              module.get("padW", 0) != module.get("padH", 0)):
        raise ImportMismatch(f"{path}: {name} {where} is not square")
      params = {"kernel": module.get("kW"), "stride": module.get("dW"),
                "pad": module.get("padW", 0)}
    elif kind == "padding":
      params = {"dim": module.get("dim"), "pad": module.get("pad"),
                "nInputDim": module.get("nInputDim"),
                "value": module.get("value", 0),
                "index": module.get("index", 1)}
    elif kind == "dropout":
      params = {"p": module.get("p", 0.5)}
    return Op(kind, f"{where} ({name})", params)
  if name == "nn.Linear":
    return Op("linear", f"{where} ({name})",
              {"weight": _t7_array(module, "weight", where, path),
               "bias": _t7_array(module, "bias", where, path)})
  raise ImportMismatch(
      f"{path}: unsupported module {name} at {where}; a PyramidNet .t7 holds "
      "nn.Sequential, ConcatTable/CAddTable units, (cudnn.)Spatial"
      "Convolution, SpatialBatchNormalization, ReLU, pooling, nn.Padding, "
      "nn.Identity, nn.Copy, nn.View, nn.Dropout and nn.Linear")


def _t7_modules(module, where, path) -> List[Any]:
  modules = torch7_reader.lua_list(module.get("modules"))
  for i, m in enumerate(modules):
    if not isinstance(m, torch7_reader.TorchObject):
      raise ImportMismatch(f"{path}: {where}.modules[{i + 1}] is a "
                           f"{type(m).__name__}, expected an nn module")
  return modules


def _t7_flatten(module, where: str, path: str, out: List[Any]):
  """Leaves in forward order; ConcatTable+CAddTable pairs become Units."""
  name = module.typename
  if name == "nn.DataParallelTable":
    inner = _t7_modules(module, where, path)
    if not inner:
      raise ImportMismatch(f"{path}: empty nn.DataParallelTable at {where}")
    _t7_flatten(inner[0], f"{where}.modules[1]", path, out)
    return
  if name not in _T7_CONTAINERS:
    out.append(_t7_leaf(module, where, path))
    return
  modules = _t7_modules(module, where, path)
  i = 0
  while i < len(modules):
    child, child_where = modules[i], f"{where}.modules[{i + 1}]"
    if child.typename == "nn.ConcatTable":
      following = modules[i + 1].typename if i + 1 < len(modules) else None
      if following != "nn.CAddTable":
        raise ImportMismatch(
            f"{path}: nn.ConcatTable at {child_where} is followed by "
            f"{following or 'nothing'}, expected nn.CAddTable (a residual "
            "unit)")
      out.append(_t7_unit(child, child_where, path))
      i += 2
      continue
    _t7_flatten(child, child_where, path, out)
    i += 1


def _t7_unit(concat, where: str, path: str) -> Unit:
  parts = _t7_modules(concat, where, path)
  if len(parts) != 2:
    raise ImportMismatch(f"{path}: residual unit {where} has {len(parts)} "
                         "paths, expected 2 (branch and shortcut)")
  flat = []
  for i, part in enumerate(parts):
    leaves: List[Any] = []
    _t7_flatten(part, f"{where}.modules[{i + 1}]", path, leaves)
    if any(isinstance(x, Unit) for x in leaves):
      raise ImportMismatch(f"{path}: nested residual unit inside {where}")
    flat.append(leaves)
  has_conv = [any(isinstance(x, Conv) for x in leaves) for leaves in flat]
  if has_conv.count(True) != 1:
    raise ImportMismatch(
        f"{path}: residual unit {where}: expected exactly one path with "
        f"convolutions (the branch), found {has_conv.count(True)}")
  branch = flat[has_conv.index(True)]
  shortcut = flat[has_conv.index(False)]
  stride, pad = 1, 0
  for op in shortcut:
    if op.kind == "identity":
      continue
    if op.kind == "avgpool" and (op.params["kernel"], op.params["stride"],
                                 op.params["pad"]) == (2, 2, 0) and stride == 1:
      stride = 2
    elif op.kind == "padding" and op.params["dim"] == 1 and (
        op.params["nInputDim"] == 3) and op.params["pad"] > 0 and (
            op.params["value"] == 0) and op.params["index"] == 1 and pad == 0:
      pad = int(op.params["pad"])
    else:
      raise ImportMismatch(
          f"{path}: residual unit {where}: unexpected shortcut module "
          f"{op.where} {op.params}; expected an optional 2x2/2 average pool "
          "then nn.Padding(1, +n, 3) appending zero channels, or "
          "nn.Identity")
  branch = [op for op in branch if not (isinstance(op, Op) and
                                        op.kind in ("copy", "identity"))]
  return Unit(branch, stride, pad, where)


def parse_torch7(obj, path: str) -> Net:
  """The structural description of a fb.resnet.torch PyramidNet tree."""
  if not isinstance(obj, torch7_reader.TorchObject):
    raise ImportMismatch(
        f"{path}: expected an nn module at the top of the file (as "
        f"fb.resnet.torch saves models), found {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, dict)
           else ""))
  leaves: List[Any] = []
  _t7_flatten(obj, "model", path, leaves)
  leaves = [x for x in leaves if not (isinstance(x, Op) and
                                      x.kind in ("copy", "identity"))]
  first_unit = next((i for i, x in enumerate(leaves) if isinstance(x, Unit)),
                    None)
  if first_unit is None:
    raise ImportMismatch(f"{path}: no residual units (nn.ConcatTable + "
                         "nn.CAddTable) found; is this a PyramidNet?")
  stem = leaves[:first_unit]
  rest = leaves[first_unit:]
  units = []
  while rest and isinstance(rest[0], Unit):
    units.append(rest.pop(0))
  kinds = [_kind(x) if not isinstance(x, Unit) else "unit" for x in rest]
  expected = ["bn", "relu", "avgpool", "view", "linear"]
  dropout = None
  if "dropout" in kinds:
    dropout = float(rest[kinds.index("dropout")].params["p"])
    expected = ["bn", "relu", "avgpool", "view", "dropout", "linear"]
  if kinds != expected:
    raise ImportMismatch(
        f"{path}: after the last residual unit found [{', '.join(kinds)}], "
        f"expected [{', '.join(expected)}]")
  linear = rest[-1]
  return Net(stem=stem, units=units, head_bn=rest[0],
             fc_weight=linear.params["weight"], fc_bias=linear.params["bias"],
             dropout=dropout, where=path)


def load_torch7(model, path: str) -> Dict[str, Any]:
  """Reads a .t7 model file into ``model``; returns import metadata."""
  net = parse_torch7(torch7_reader.load(path), path)
  return assign(model, net)


# ---- Caffe -----------------------------------------------------------------

_CAFFE_SOURCES = ("Input", "Data", "ImageData", "DummyData", "MemoryData",
                  "HDF5Data", "WindowData", "AnnotatedData")
_CAFFE_SINKS = ("Softmax", "SoftmaxWithLoss", "Accuracy", "Silence")
_CAFFE_OPS = ("Convolution", "BatchNorm", "Scale", "ReLU", "Pooling",
              "Eltwise", "Concat", "InnerProduct", "Dropout")


class _Node:

  def __init__(self, layer, inputs: List["_Node"]):
    self.layer = layer  # None for a net input
    self.inputs = inputs

  @property
  def type(self) -> str:
    return self.layer.type if self.layer is not None else "<input>"

  @property
  def name(self) -> str:
    return self.layer.name if self.layer is not None else "<net input>"


def _caffe_graph(net, path: str) -> List[_Node]:
  """One node per computing layer; in-place layers get their own node."""
  current: Dict[str, _Node] = {name: _Node(None, []) for name in net.input}
  nodes = []
  for layer in net.layer:
    kind = layer.type
    if kind in _CAFFE_SINKS:
      continue
    if kind in _CAFFE_SOURCES:
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
    if kind not in _CAFFE_OPS:
      raise ImportMismatch(
          f"{path}: layer '{layer.name}' has type {kind}, which a PyramidNet "
          f"does not use (expected one of {', '.join(_CAFFE_OPS)})")
    if len(layer.top) != 1:
      raise ImportMismatch(f"{path}: layer '{layer.name}' ({kind}) has "
                           f"{len(layer.top)} outputs, expected 1")
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
    raise ImportMismatch(f"{path}: layer {where} has non-square "
                         f"{single} {values}")
  return int(values[0])


def _caffe_conv(node: _Node, path: str) -> Conv:
  layer, p = node.layer, node.layer.convolution_param
  where = f"'{layer.name}'"
  if p.group != 1 or any(d != 1 for d in p.dilation):
    raise ImportMismatch(f"{path}: convolution {where} is grouped or "
                         "dilated, which PyramidNet never uses")
  blobs = caffe_reader.layer_blobs(layer)
  if not blobs or blobs[0].ndim != 4:
    raise ImportMismatch(f"{path}: convolution {where} should hold a 4-D "
                         f"weight blob, found "
                         f"{[list(b.shape) for b in blobs]}")
  bias = blobs[1].reshape(-1) if len(blobs) > 1 else None
  return Conv(blobs[0], _square(p, "stride", "stride_h", "stride_w", 1, where,
                                path),
              _square(p, "pad", "pad_h", "pad_w", 0, where, path), bias,
              f"{where} (Convolution)")


def _caffe_bn(bn_node: _Node, scale_node: Optional[_Node], path: str) -> BN:
  layer = bn_node.layer
  blobs = caffe_reader.layer_blobs(layer)
  if len(blobs) != 3 or blobs[2].size != 1:
    raise ImportMismatch(
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
      raise ImportMismatch(f"{path}: Scale '{s.name}' must scale channels "
                           "(one input, axis 1, num_axes 1)")
    scale_blobs = caffe_reader.layer_blobs(s)
    if len(scale_blobs) not in (1, 2):
      raise ImportMismatch(f"{path}: Scale '{s.name}' holds "
                           f"{len(scale_blobs)} blobs, expected 1 or 2")
    gamma = scale_blobs[0].reshape(-1)
    beta = (scale_blobs[1].reshape(-1) if len(scale_blobs) == 2 else
            np.zeros_like(gamma))
    where += f" + '{s.name}'"
  return BN(gamma, beta, mean, var, float(layer.batch_norm_param.eps),
            f"{where} (BatchNorm+Scale)")


def _caffe_pool(node: _Node, path: str) -> Op:
  p = node.layer.pooling_param
  where = f"'{node.layer.name}'"
  kind = {caffe_reader.POOL_MAX: "maxpool",
          caffe_reader.POOL_AVE: "avgpool"}.get(p.pool)
  if kind is None:
    raise ImportMismatch(f"{path}: pooling {where} uses method {p.pool}, "
                         "expected MAX or AVE")
  params = {"global": bool(p.global_pooling)}
  if not p.global_pooling:
    params.update(
        kernel=_square(p, "kernel_size", "kernel_h", "kernel_w", 0, where,
                       path),
        stride=_square(p, "stride", "stride_h", "stride_w", 1, where, path),
        pad=_square(p, "pad", "pad_h", "pad_w", 0, where, path))
  return Op(kind, f"{where} (Pooling)", params)


def _caffe_ops(nodes: List[_Node], path: str) -> List[Any]:
  """Forward-ordered nodes of a single-input chain -> Conv/BN/Op list."""
  ops, i = [], 0
  while i < len(nodes):
    node = nodes[i]
    kind = node.type
    if kind == "Convolution":
      ops.append(_caffe_conv(node, path))
    elif kind == "BatchNorm":
      scale = None
      if i + 1 < len(nodes) and nodes[i + 1].type == "Scale":
        scale = nodes[i + 1]
        i += 1
      ops.append(_caffe_bn(node, scale, path))
    elif kind == "Scale":
      raise ImportMismatch(f"{path}: Scale '{node.name}' does not follow a "
                           "BatchNorm layer")
    elif kind == "ReLU":
      ops.append(Op("relu", f"'{node.name}' (ReLU)"))
    elif kind == "Pooling":
      ops.append(_caffe_pool(node, path))
    elif kind == "Dropout":
      ops.append(Op("dropout", f"'{node.name}' (Dropout)",
                    {"p": float(node.layer.dropout_param.dropout_ratio)}))
    else:
      ops.append(Op(kind.lower(), f"'{node.name}' ({kind})"))
    i += 1
  return ops


def _chain(node: _Node) -> List[_Node]:
  """``node`` and its ancestors through single-input layers (and the
  identity input of a Concat), up to and including the first Eltwise, net
  input or other multi-input layer."""
  chain = [node]
  while True:
    if node.type in ("Eltwise", "<input>"):
      return chain
    if node.type == "Concat" or len(node.inputs) == 1:
      node = node.inputs[0]
      chain.append(node)
    else:
      return chain


def _caffe_unit(eltwise: _Node, path: str) -> Tuple[Unit, _Node]:
  layer = eltwise.layer
  where = f"'{layer.name}'"
  p = layer.eltwise_param
  if p.operation != caffe_reader.ELTWISE_SUM or any(c != 1 for c in p.coeff):
    raise ImportMismatch(f"{path}: Eltwise {where} must be a plain SUM")
  if len(eltwise.inputs) != 2:
    raise ImportMismatch(f"{path}: Eltwise {where} has "
                         f"{len(eltwise.inputs)} inputs, expected 2")
  chains = [_chain(x) for x in eltwise.inputs]
  ids = [{id(n) for n in c} for c in chains]
  fork = next((n for n in chains[0] if id(n) in ids[1]), None)
  if fork is None:
    raise ImportMismatch(f"{path}: the two inputs of Eltwise {where} do not "
                         "come from a common unit input")
  paths = [c[:[id(n) for n in c].index(id(fork))][::-1] for c in chains]
  is_branch = [any(n.type == "Convolution" for n in p) for p in paths]
  if sum(is_branch) != 1 or any(
      n.type == "Concat" for n in paths[is_branch.index(True)]):
    raise ImportMismatch(
        f"{path}: residual unit {where}: expected one input through "
        "BatchNorm/Scale/Convolution/ReLU layers and one through the "
        f"shortcut (pooling / Concat), found "
        f"{[[n.name for n in p] for p in paths]}")
  branch_nodes = paths[is_branch.index(True)]
  shortcut_nodes = paths[is_branch.index(False)]
  for node in branch_nodes:
    if node.type not in ("BatchNorm", "Scale", "Convolution", "ReLU"):
      raise ImportMismatch(f"{path}: residual branch of {where} contains "
                           f"{node.type} '{node.name}'")
  stride, pad = 1, 0
  for node in shortcut_nodes:
    if node.type == "Pooling" and stride == 1 and pad == 0:
      op = _caffe_pool(node, path)
      if op.kind != "avgpool" or op.params.get("global") or (
          op.params["kernel"], op.params["stride"], op.params["pad"]) != (
              2, 2, 0):
        raise ImportMismatch(f"{path}: shortcut pooling {op.where} of {where}"
                             f" is {op.kind} {op.params}, expected AVE 2x2 "
                             "stride 2")
      stride = 2
    elif node.type == "Concat" and pad == 0:
      pad = _zero_padding(node, path)
    else:
      raise ImportMismatch(f"{path}: unexpected {node.type} '{node.name}' in "
                           f"the shortcut of {where}")
  unit = Unit(_caffe_ops(branch_nodes, path), stride, pad,
              f"{where} (Eltwise)")
  return unit, fork


def _zero_padding(concat: _Node, path: str) -> int:
  """Checks a Concat(x, zero_conv(x)); returns the zero channels added."""
  layer = concat.layer
  p = layer.concat_param
  axis = p.axis if p.HasField("axis") else p.concat_dim
  if axis != 1 or len(concat.inputs) != 2:
    raise ImportMismatch(f"{path}: shortcut Concat '{layer.name}' must join "
                         "2 inputs on the channel axis")
  zero = concat.inputs[1]
  if zero.type != "Convolution" or zero.inputs[0] is not concat.inputs[0]:
    raise ImportMismatch(
        f"{path}: shortcut Concat '{layer.name}': its second input should be "
        "a 1x1 convolution of its first input (the frozen all-zero "
        f"padding convolution), found {zero.type} '{zero.name}'")
  conv = _caffe_conv(zero, path)
  if conv.weight.shape[2:] != (1, 1) or conv.stride != 1 or conv.padding:
    raise ImportMismatch(f"{path}: padding convolution {conv.where} must be "
                         "1x1, stride 1, pad 0")
  biggest = float(np.abs(conv.weight).max()) if conv.weight.size else 0.0
  if conv.bias is not None and conv.bias.size:
    biggest = max(biggest, float(np.abs(conv.bias).max()))
  if biggest != 0.0:
    raise ImportMismatch(
        f"{path}: padding convolution {conv.where} is not all zero (max "
        f"|value| {biggest:g}); its output would not be zero channels, which "
        "our shortcut assumes")
  return int(conv.weight.shape[0])


def parse_caffe(net, path: str) -> Net:
  """The structural description of a PyramidNet-caffe NetParameter."""
  nodes = _caffe_graph(net, path)
  fcs = [n for n in nodes if n.type == "InnerProduct"]
  if len(fcs) != 1:
    raise ImportMismatch(f"{path}: expected one InnerProduct (classifier) "
                         f"layer, found {len(fcs)}")
  fc = fcs[0]
  head_chain = _chain(fc.inputs[0])
  last = head_chain[-1]
  if last.type != "Eltwise":
    raise ImportMismatch(f"{path}: the classifier does not follow a residual "
                         "unit (no Eltwise found before it)")
  head = _caffe_ops(head_chain[:-1][::-1], path)
  kinds = [_kind(op) for op in head]
  dropout = None
  expected = ["bn", "relu", "avgpool"]
  if "dropout" in kinds:
    dropout = head[kinds.index("dropout")].params["p"]
    expected.append("dropout")
  if kinds != expected:
    raise ImportMismatch(
        f"{path}: between the last residual unit and the classifier found "
        f"[{', '.join(kinds)}], expected [{', '.join(expected)}]")
  units = []
  node = last
  while node.type == "Eltwise":
    unit, node = _caffe_unit(node, path)
    units.append(unit)
  units.reverse()
  eltwise_count = sum(n.type == "Eltwise" for n in nodes)
  if eltwise_count != len(units):
    raise ImportMismatch(
        f"{path}: {eltwise_count} Eltwise layers but only {len(units)} form "
        "the chain of residual units ending at the classifier")
  stem_chain = _chain(node)
  if stem_chain[-1].type != "<input>":
    raise ImportMismatch(f"{path}: the stem before the first unit does not "
                         "start at the net input")
  stem = _caffe_ops(stem_chain[:-1][::-1], path)
  layer = fc.layer
  p = layer.inner_product_param
  blobs = caffe_reader.layer_blobs(layer)
  if p.axis != 1 or len(blobs) not in (1, 2):
    raise ImportMismatch(f"{path}: InnerProduct '{layer.name}': expected axis"
                         f" 1 and 1-2 blobs, found axis {p.axis}, "
                         f"{len(blobs)} blobs")
  outputs = p.num_output or blobs[0].shape[0]
  if p.transpose:  # stored [in, out]
    weight = blobs[0].reshape(-1, outputs).T
  else:
    weight = blobs[0].reshape(outputs, -1)
  bias = blobs[1].reshape(-1) if len(blobs) == 2 else np.zeros(
      weight.shape[0], np.float32)
  result = Net(stem=stem, units=units, head_bn=head[0], fc_weight=weight,
               fc_bias=bias, dropout=dropout, where=path)
  if len(stem) == 4 and stem[3].kind == "maxpool":
    result.notes.append(
        "Caffe's pooling rounds output sizes up: its 3x3/2 pad-1 stem max pool"
        " gives 57x57 at 224x224 input where this model (like the Torch "
        "original) gives 56x56, so logits differ slightly from Caffe's own")
  return result


def load_caffe(model, path: str) -> Dict[str, Any]:
  """Reads a .caffemodel into ``model``; returns import metadata."""
  net = parse_caffe(caffe_reader.load(path), path)
  return assign(model, net)

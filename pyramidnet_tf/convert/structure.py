"""The structure of a foreign PyramidNet, and its mapping onto ours.

Each foreign format (``torch7``, ``caffe``) is turned into the same
format-independent description, a ``Net``: the stem, the residual units in
network order, each with its residual branch (BN / conv / ReLU in order) and
its parameter-free shortcut (pooling stride, zero channels appended), and the
head. Keeping one description means one matcher checks every format the same
way, and a new format only has to produce a ``Net``.

``to_state_dict`` checks every unit of a ``Net`` against our ``PyramidNet``
(op sequence, kernel sizes, strides, paddings, shapes, shortcut pooling and
padding) and fails with the unit, the place in the file, and expected vs
found; ``assign`` then loads the arrays into the model all-or-nothing. Conv
biases are folded into the following BN (its mean shifts by the bias); a BN
eps other than ours (``layers.BN_EPSILON``) is folded into the variance
(var + eps - ours, exact at inference) and reported in the metadata.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pyramidnet_tf.model import layers
from pyramidnet_tf.model import units


class ImportMismatch(ValueError):
  """The file's network does not fit the model (or is not a PyramidNet)."""


@dataclasses.dataclass
class Conv:
  """A convolution as stored in the file.

  Attributes:
    weight: the kernel, [out, in, kh, kw].
    stride: the (square) stride.
    padding: the (symmetric) padding.
    bias: the bias, or None if the convolution has none.
    where: the place in the file, for error messages.
  """
  weight: np.ndarray
  stride: int
  padding: int
  bias: Optional[np.ndarray]
  where: str


@dataclasses.dataclass
class BN:
  """A batch norm in inference form (Caffe's BatchNorm + Scale, or one op).

  Attributes:
    gamma: the scale, [channels].
    beta: the offset, [channels].
    mean: the running mean, [channels].
    var: the running variance, [channels].
    eps: the epsilon the file's framework adds to the variance.
    where: the place in the file, for error messages.
  """
  gamma: np.ndarray
  beta: np.ndarray
  mean: np.ndarray
  var: np.ndarray
  eps: float
  where: str


@dataclasses.dataclass
class Op:
  """A parameter-free op: "relu", "maxpool", "avgpool", ...

  Attributes:
    kind: what the op is.
    where: the place in the file, for error messages.
    params: what the op needs to be checked (kernel, stride, pad, ...).
  """
  kind: str
  where: str
  params: Dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Unit:
  """A residual unit: its branch and its parameter-free shortcut.

  Attributes:
    branch: Conv / BN / Op("relu") in forward order.
    pool_stride: 2 if the shortcut average-pools, else 1.
    pad_channels: zero channels the shortcut appends.
    where: the place in the file, for error messages.
  """
  branch: List[Any]
  pool_stride: int
  pad_channels: int
  where: str


@dataclasses.dataclass
class Net:
  """A whole PyramidNet as found in a file.

  Attributes:
    stem: Conv, BN[, Op("relu"), Op("maxpool")].
    units: the residual units in forward order.
    head_bn: the BN after the last unit.
    fc_weight: the classifier weight, [classes, features].
    fc_bias: the classifier bias, [classes].
    dropout: the dropout rate before the classifier, or None.
    where: the file.
    notes: remarks for the user on how the import differs from the file's
      framework.
  """
  stem: List[Any]
  units: List[Unit]
  head_bn: BN
  fc_weight: np.ndarray
  fc_bias: np.ndarray
  dropout: Optional[float]
  where: str
  notes: List[str] = dataclasses.field(default_factory=list)


def op_kind(op) -> str:
  """The kind of a Conv, BN or Op: "conv", "bn" or the Op's ``kind``.

  Args:
    op: a ``Conv``, ``BN`` or ``Op``.

  Returns:
    The name the matchers compare op sequences by.
  """
  if isinstance(op, Conv):
    return "conv"
  if isinstance(op, BN):
    return "bn"
  return op.kind


def _describe_ops(ops: Sequence[Any]) -> str:
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
    if abs(op.eps - layers.BN_EPSILON) > 1e-12:
      var = var + op.eps - layers.BN_EPSILON
      if np.any(var <= 0):
        _fail(self.net, f"{context}: batch norm {op.where} uses eps "
              f"{op.eps:g}; folding it into our eps {layers.BN_EPSILON:g} "
              "gives a non-positive variance")
      self.eps_adjusted.append(op.where)
    self.state[f"{key}.weight"] = op.gamma
    self.state[f"{key}.bias"] = op.beta
    self.state[f"{key}.running_mean"] = op.mean
    self.state[f"{key}.running_var"] = var


def _map_branch(collector: _Collector, prefix: str, ops: List[Any], unit,
                context: str):
  """Checks one residual branch against ``unit`` and collects its arrays."""
  expected = _expected_branch(unit)
  got = [op_kind(op) for op in ops]
  if got != [kind for kind, _ in expected]:
    _fail(collector.net, f"{context}: the residual branch is "
          f"[{_describe_ops(ops)}], expected "
          f"[{', '.join(kind for kind, _ in expected)}] "
          f"({'bottleneck' if hasattr(unit, 'conv3') else 'basic'} unit)")
  # Convolutions first: a conv bias shifts the following BN's mean.
  for position, (op, (kind, name)) in enumerate(zip(ops, expected)):
    if kind == "conv":
      collector.conv(f"{prefix}.{name}", op, getattr(unit, name),
                     ops[position + 1], context)
  for op, (kind, name) in zip(ops, expected):
    if kind == "bn":
      collector.bn(f"{prefix}.{name}", op, getattr(unit, name), context)


def _describe_units(found: List[Unit]) -> str:
  """E.g. "9 basic units 3/3/3, 28 features", for mismatch messages."""
  if not found:
    return "no residual units"
  stages, count = [], 0
  for unit in found:
    if unit.pool_stride == 2 and count:
      stages.append(count)
      count = 0
    count += 1
  stages.append(count)
  convs = sum(isinstance(op, Conv) for op in found[0].branch)
  kind = "bottleneck" if convs == 3 else "basic" if convs == 2 else (
      f"{convs}-conv")
  final = [op for op in found[-1].branch if isinstance(op, Conv)]
  width = final[-1].weight.shape[0] if final else "?"
  return (f"{len(found)} {kind} units {'/'.join(map(str, stages))}, "
          f"{width} features")


def to_state_dict(model, net: Net) -> Tuple[Dict[str, np.ndarray], List[str]]:
  """PyTorch-named arrays for ``model`` from ``net``, checked unit by unit.

  Args:
    model: the ``PyramidNet`` to fill (only read here).
    net: the file's network, from ``torch7.parse_torch7`` or
      ``caffe.parse_caffe``.

  Returns:
    (state_dict, names of the BNs whose eps was folded into the variance).

  Raises:
    ImportMismatch: at the first place where ``net`` differs from ``model``,
      naming the unit, the place in the file and expected vs found.
  """
  collector = _Collector(net)
  imagenet = model.dataset == "imagenet"
  ours = (f"{model.dataset} depth {model.arch.depth} alpha "
          f"{model.arch.alpha:g}: {sum(map(len, model.stages))} "
          f"{'bottleneck' if model.arch.bottleneck else 'basic'} units "
          f"{'/'.join(str(len(s)) for s in model.stages)}, "
          f"{model.num_features} features")
  stem_kinds = ["conv", "bn"] + (["relu", "maxpool"] if imagenet else [])
  if [op_kind(op) for op in net.stem] != stem_kinds:
    _fail(net, f"stem is [{_describe_ops(net.stem)}], expected "
          f"[{', '.join(stem_kinds)}] for {model.dataset}")
  if imagenet:
    pool = net.stem[3].params
    if (pool.get("kernel"), pool.get("stride"), pool.get("pad")) != (3, 2, 1):
      _fail(net, f"stem max pool {net.stem[3].where} is {pool}, expected "
            "kernel 3, stride 2, pad 1")
  collector.conv("conv1", net.stem[0], model.conv1, net.stem[1], "stem")
  collector.bn("bn1", net.stem[1], model.bn1, "stem")

  model_units = [u for stage in model.stages for u in stage]
  if len(net.units) != len(model_units):
    _fail(net, f"the file has {_describe_units(net.units)}; the model "
          f"is {ours}")
  position = 0
  for s, stage in enumerate(model.stages):
    for i, unit in enumerate(stage):
      found = net.units[position]
      context = (f"unit {position + 1} of {len(model_units)} (layer{s + 1}."
                 f"{i}, {unit.in_channels}->{unit.out_channels} channels, "
                 f"stride {unit.stride}; in the file: {found.where})")
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
  """Loads ``net`` into ``model``, all-or-nothing.

  Nothing is assigned unless every variable of the model gets an array of
  its shape.

  Args:
    model: the ``PyramidNet`` to fill, built with the file's architecture.
    net: the file's network.

  Returns:
    What was done, for the model directory's metadata: ``arrays_loaded``,
    and where they apply ``bn_eps_folded_into_variance`` and ``notes``.

  Raises:
    ImportMismatch: if ``net`` does not fit ``model`` (nothing is assigned).
  """
  state, eps_adjusted = to_state_dict(model, net)
  pairs = []
  for key, (variable, layout) in model.torch_variables().items():
    if variable is None:  # num_batches_tracked
      continue
    if key not in state:
      _fail(net, f"internal error: no array mapped to {key}")
    array = np.asarray(state.pop(key), np.float32)
    want = units.torch_shape(variable, layout)
    if tuple(array.shape) != want:
      _fail(net, f"{key}: expected {list(want)}, got {list(array.shape)}")
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

r"""Maps a Torch7 (.t7) PyramidNet module tree onto our network.

jhkim89/PyramidNet trained its ImageNet models with fb.resnet.torch, which
saves the whole ``nn`` module tree. ``torch7_reader`` turns the file's bytes
into Python objects; this module walks that tree and describes it as a
``structure.Net``, which ``structure.assign`` checks against and loads into
our ``PyramidNet``.

Residual units are found by structure, not by parameter order: a unit is an
``nn.ConcatTable`` (branch, shortcut) followed by ``nn.CAddTable``; the
shortcut is an optional 2x2 average pool, then an ``nn.Padding`` appending
zero channels (or ``nn.Identity``). ``nn.DataParallelTable`` wrappers,
``nn.Copy`` and ``nn.Identity`` are looked through; CUDA variants
(``cudnn.*``) read like their ``nn`` counterparts.

    python -m pyramidnet_tf.import_torch --checkpoint=PyramidNet-200.t7 \
        --dataset=imagenet --depth=200 --alpha=300 --output_dir=/tmp/pn200
"""

from typing import Any, Dict, List

import numpy as np

from pyramidnet_tf.convert import structure
from pyramidnet_tf.convert import torch7_reader

_CONV = ("nn.SpatialConvolution", "cudnn.SpatialConvolution",
         "nn.SpatialConvolutionMM")
_BN = ("nn.SpatialBatchNormalization", "cudnn.SpatialBatchNormalization",
       "fbnn.SpatialBatchNormalization")
_SIMPLE = {
    "nn.ReLU": "relu", "cudnn.ReLU": "relu",
    "nn.SpatialMaxPooling": "maxpool", "cudnn.SpatialMaxPooling": "maxpool",
    "nn.SpatialAveragePooling": "avgpool",
    "cudnn.SpatialAveragePooling": "avgpool",
    "nn.View": "view", "nn.Reshape": "view", "nn.Copy": "copy",
    "nn.Identity": "identity", "nn.Padding": "padding",
    "nn.Dropout": "dropout",
}
_CONTAINERS = ("nn.Sequential",)
# Ops that do not change values; dropped before matching.
_PASS_THROUGH = ("copy", "identity")


def _array(module, field, where, path) -> np.ndarray:
  value = module.get(field)
  if not isinstance(value, np.ndarray):
    raise structure.ImportMismatch(
        f"{path}: {module.typename} {where} has no tensor '{field}' "
        f"(found {type(value).__name__})")
  return value


def _conv(module, where: str, path: str) -> structure.Conv:
  name = module.typename
  weight = _array(module, "weight", where, path)
  shape = (module.get("nOutputPlane"), module.get("nInputPlane"),
           module.get("kH"), module.get("kW"))
  if weight.ndim == 2 and weight.size == np.prod(shape):
    weight = weight.reshape(shape)  # SpatialConvolutionMM's 2-D weight
  if module.get("dW") != module.get("dH") or (
      module.get("padW", 0) != module.get("padH", 0)):
    raise structure.ImportMismatch(
        f"{path}: {name} {where} has unequal strides or paddings, which "
        "PyramidNet never uses")
  if module.get("groups", 1) not in (1, None):
    raise structure.ImportMismatch(
        f"{path}: {name} {where} is a grouped convolution")
  bias = module.get("bias")
  return structure.Conv(
      weight, module.get("dW"), module.get("padW", 0),
      bias if isinstance(bias, np.ndarray) and bias.size else None,
      f"{where} ({name})")


def _bn(module, where: str, path: str) -> structure.BN:
  name = module.typename
  mean = _array(module, "running_mean", where, path)
  if not isinstance(module.get("running_var"), np.ndarray):
    raise structure.ImportMismatch(
        f"{path}: {name} {where} has no running_var (fields: "
        f"{sorted(map(str, module.fields))}); files from nn versions that "
        "stored running_std are not supported")
  var = module.get("running_var")
  gamma = module.get("weight")
  beta = module.get("bias")
  if module.get("affine") is False or gamma is None:
    gamma, beta = np.ones_like(mean), np.zeros_like(mean)
  return structure.BN(gamma, beta, mean, var, float(module.get("eps", 1e-5)),
                      f"{where} ({name})")


def _simple(module, where: str, path: str) -> structure.Op:
  name = module.typename
  kind = _SIMPLE[name]
  params = {}
  if kind in ("maxpool", "avgpool"):
    if module.get("kW") != module.get("kH") or (
        module.get("dW") != module.get("dH")) or (
            module.get("padW", 0) != module.get("padH", 0)):
      raise structure.ImportMismatch(f"{path}: {name} {where} is not square")
    params = {"kernel": module.get("kW"), "stride": module.get("dW"),
              "pad": module.get("padW", 0)}
  elif kind == "padding":
    params = {"dim": module.get("dim"), "pad": module.get("pad"),
              "nInputDim": module.get("nInputDim"),
              "value": module.get("value", 0),
              "index": module.get("index", 1)}
  elif kind == "dropout":
    params = {"p": module.get("p", 0.5)}
  return structure.Op(kind, f"{where} ({name})", params)


def _leaf(module, where: str, path: str):
  """The Conv, BN or Op of one non-container module."""
  name = module.typename
  if name in _CONV:
    return _conv(module, where, path)
  if name in _BN:
    return _bn(module, where, path)
  if name in _SIMPLE:
    return _simple(module, where, path)
  if name == "nn.Linear":
    return structure.Op("linear", f"{where} ({name})",
                        {"weight": _array(module, "weight", where, path),
                         "bias": _array(module, "bias", where, path)})
  raise structure.ImportMismatch(
      f"{path}: unsupported module {name} at {where}; a PyramidNet .t7 holds "
      "nn.Sequential, ConcatTable/CAddTable units, (cudnn.)Spatial"
      "Convolution, SpatialBatchNormalization, ReLU, pooling, nn.Padding, "
      "nn.Identity, nn.Copy, nn.View, nn.Dropout and nn.Linear")


def _modules(module, where, path) -> List[Any]:
  """A container's children, checked to be nn modules."""
  modules = torch7_reader.lua_list(module.get("modules"))
  for i, m in enumerate(modules):
    if not isinstance(m, torch7_reader.TorchObject):
      raise structure.ImportMismatch(
          f"{path}: {where}.modules[{i + 1}] is a {type(m).__name__}, "
          "expected an nn module")
  return modules


def _flatten(module, where: str, path: str, out: List[Any]):
  """Leaves in forward order; ConcatTable+CAddTable pairs become Units."""
  name = module.typename
  if name == "nn.DataParallelTable":
    inner = _modules(module, where, path)
    if not inner:
      raise structure.ImportMismatch(
          f"{path}: empty nn.DataParallelTable at {where}")
    _flatten(inner[0], f"{where}.modules[1]", path, out)
    return
  if name not in _CONTAINERS:
    out.append(_leaf(module, where, path))
    return
  modules = _modules(module, where, path)
  i = 0
  while i < len(modules):
    child, child_where = modules[i], f"{where}.modules[{i + 1}]"
    if child.typename == "nn.ConcatTable":
      following = modules[i + 1].typename if i + 1 < len(modules) else None
      if following != "nn.CAddTable":
        raise structure.ImportMismatch(
            f"{path}: nn.ConcatTable at {child_where} is followed by "
            f"{following or 'nothing'}, expected nn.CAddTable (a residual "
            "unit)")
      out.append(_unit(child, child_where, path))
      i += 2
      continue
    _flatten(child, child_where, path, out)
    i += 1


def _without_pass_through(ops: List[Any]) -> List[Any]:
  return [op for op in ops if not (isinstance(op, structure.Op) and
                                   op.kind in _PASS_THROUGH)]


def _unit(concat, where: str, path: str) -> structure.Unit:
  """The Unit of an nn.ConcatTable holding a branch and a shortcut."""
  parts = _modules(concat, where, path)
  if len(parts) != 2:
    raise structure.ImportMismatch(
        f"{path}: residual unit {where} has {len(parts)} paths, expected 2 "
        "(branch and shortcut)")
  flat = []
  for i, part in enumerate(parts):
    leaves: List[Any] = []
    _flatten(part, f"{where}.modules[{i + 1}]", path, leaves)
    if any(isinstance(x, structure.Unit) for x in leaves):
      raise structure.ImportMismatch(
          f"{path}: nested residual unit inside {where}")
    flat.append(leaves)
  has_conv = [any(isinstance(x, structure.Conv) for x in leaves)
              for leaves in flat]
  if has_conv.count(True) != 1:
    raise structure.ImportMismatch(
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
      raise structure.ImportMismatch(
          f"{path}: residual unit {where}: unexpected shortcut module "
          f"{op.where} {op.params}; expected an optional 2x2/2 average pool "
          "then nn.Padding(1, +n, 3) appending zero channels, or "
          "nn.Identity")
  return structure.Unit(_without_pass_through(branch), stride, pad, where)


def parse_torch7(obj, path: str) -> structure.Net:
  """The structural description of a fb.resnet.torch PyramidNet tree.

  Args:
    obj: the file's top object, as ``torch7_reader.load`` returns it.
    path: the file, for error messages.

  Returns:
    The network, for ``structure.assign``.

  Raises:
    structure.ImportMismatch: if the tree is not a PyramidNet (unsupported
      modules, no residual units, an unexpected shortcut or head).
  """
  if not isinstance(obj, torch7_reader.TorchObject):
    raise structure.ImportMismatch(
        f"{path}: expected an nn module at the top of the file (as "
        f"fb.resnet.torch saves models), found {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, dict)
           else ""))
  leaves: List[Any] = []
  _flatten(obj, "model", path, leaves)
  leaves = _without_pass_through(leaves)
  first_unit = next(
      (i for i, x in enumerate(leaves) if isinstance(x, structure.Unit)), None)
  if first_unit is None:
    raise structure.ImportMismatch(
        f"{path}: no residual units (nn.ConcatTable + nn.CAddTable) found; "
        "is this a PyramidNet?")
  stem = leaves[:first_unit]
  rest = leaves[first_unit:]
  found = []
  while rest and isinstance(rest[0], structure.Unit):
    found.append(rest.pop(0))
  kinds = [structure.op_kind(x) if not isinstance(x, structure.Unit) else
           "unit" for x in rest]
  expected = ["bn", "relu", "avgpool", "view", "linear"]
  dropout = None
  if "dropout" in kinds:
    dropout = float(rest[kinds.index("dropout")].params["p"])
    expected = ["bn", "relu", "avgpool", "view", "dropout", "linear"]
  if kinds != expected:
    raise structure.ImportMismatch(
        f"{path}: after the last residual unit found [{', '.join(kinds)}], "
        f"expected [{', '.join(expected)}]")
  linear = rest[-1]
  return structure.Net(stem=stem, units=found, head_bn=rest[0],
                       fc_weight=linear.params["weight"],
                       fc_bias=linear.params["bias"], dropout=dropout,
                       where=path)


def load_torch7(model, path: str) -> Dict[str, Any]:
  """Reads a .t7 model file into ``model``.

  Args:
    model: a ``PyramidNet`` built with the file's architecture.
    path: the .t7 file.

  Returns:
    Import metadata (see ``structure.assign``).

  Raises:
    torch7_reader.Torch7FormatError: if the file is not valid Torch7 data.
    structure.ImportMismatch: if its network does not fit ``model`` (nothing
      is assigned).
  """
  net = parse_torch7(torch7_reader.load(path), path)
  return structure.assign(model, net)

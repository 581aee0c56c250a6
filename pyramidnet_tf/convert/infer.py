"""The architecture of a weight file, read from its structure.

Every released PyramidNet file fixes its network completely: the stem's kernel
(3x3 CIFAR, 7x7 ImageNet), the residual units per stage, the unit type, every
unit's width and the classifier's size. ``observe_state_dict`` (PyTorch and
imgclsmob files, under the authors' key names) and ``observe_net`` (Torch7 and
Caffe files, a ``structure.Net``) read that into an ``Observed``;
``infer`` finds the ``PyramidNet`` arguments (dataset, depth, unit type,
alpha, mode, rounding, classes, dropout) that rebuild exactly those widths,
so no model flag is needed. Arguments the user did give constrain the search;
one that no network of the file's shape fits is reported as a conflict
rather than silently overridden.

Alpha is found from the widths: each unit's rounded width bounds alpha to an
interval (additive: ``w_i = start + alpha * i / N``; multiplicative:
``w_i = start * alpha ** (i / N)``); the simplest number in the intersection
(an integer if there is one, else the fewest decimals) that reproduces every
width through ``widths.width_schedule`` is taken.
"""

import collections
import dataclasses
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pyramidnet_tf.convert import structure
from pyramidnet_tf.model import widths

_UNIT_CONV = re.compile(r"layer(\d+)\.(\d+)\.conv(\d+)\.weight$")
_MAX_DECIMALS = 3


class InferenceError(ValueError):
  """The file's structure is not one of our PyramidNets."""


@dataclasses.dataclass(frozen=True)
class Observed:
  """The shape of the network a file holds.

  Attributes:
    stem_kernel: the stem convolution's kernel size (3 CIFAR, 7 ImageNet).
    stem_width: the stem's output channels.
    stage_units: residual units per stage.
    bottleneck: True if the units have three convolutions.
    planes: every unit's planes (bottleneck: the 1x1/3x3 width), in order.
    num_classes: the classifier's outputs.
    drop_rate: the dropout before the classifier, or None where the format
      does not store it (PyTorch state_dicts).
  """
  stem_kernel: int
  stem_width: int
  stage_units: Tuple[int, ...]
  bottleneck: bool
  planes: Tuple[int, ...]
  num_classes: int
  drop_rate: Optional[float]

  def describe(self) -> str:
    """One line, e.g. "3x3 stem, 9 basic units 3/3/3, planes 17..28, 10 classes"."""
    return (f"{self.stem_kernel}x{self.stem_kernel} stem, "
            f"{sum(self.stage_units)} "
            f"{'bottleneck' if self.bottleneck else 'basic'} units "
            f"{'/'.join(map(str, self.stage_units))}, planes "
            f"{self.planes[0]}..{self.planes[-1]}, {self.num_classes} classes")


def observe_state_dict(state: Mapping[str, np.ndarray]) -> Observed:
  """The network of a state_dict under the authors' PyTorch key names.

  Args:
    state: an unwrapped state_dict (``pytorch.unwrap_state_dict``; imgclsmob
      files after ``imgclsmob.to_author_names``).

  Returns:
    What the file holds; the dropout is unknown (None).

  Raises:
    InferenceError: if the stem, the units or the classifier are missing.
  """
  stem = state.get("conv1.weight")
  fc = state.get("fc.weight")
  if stem is None or np.ndim(stem) != 4 or fc is None or np.ndim(fc) != 2:
    raise InferenceError(
        "cannot read the architecture: no conv1.weight [out, in, k, k] or "
        "fc.weight [classes, features] in the file")
  convs: Dict[Tuple[int, int], Dict[int, Any]] = collections.defaultdict(dict)
  for key, value in state.items():
    match = _UNIT_CONV.match(key)
    if match:
      stage, index, k = map(int, match.groups())
      convs[(stage, index)][k] = value
  if not convs:
    raise InferenceError("cannot read the architecture: no residual unit "
                         "convolutions (layer<s>.<i>.conv<k>.weight)")
  stages = sorted({s for s, _ in convs})
  stage_units = []
  for stage in stages:
    indices = sorted(i for s, i in convs if s == stage)
    if indices != list(range(len(indices))):
      raise InferenceError(f"cannot read the architecture: layer{stage} has "
                           f"units {indices}, not 0..{len(indices) - 1}")
    stage_units.append(len(indices))
  bottleneck = any(3 in unit for unit in convs.values())
  planes = []
  for stage, count in zip(stages, stage_units):
    for index in range(count):
      first = convs[(stage, index)].get(1)
      if first is None or np.ndim(first) != 4:
        raise InferenceError(f"cannot read the architecture: no "
                             f"layer{stage}.{index}.conv1.weight")
      planes.append(int(np.shape(first)[0]))
  return Observed(stem_kernel=int(np.shape(stem)[-1]),
                  stem_width=int(np.shape(stem)[0]),
                  stage_units=tuple(stage_units), bottleneck=bottleneck,
                  planes=tuple(planes), num_classes=int(np.shape(fc)[0]),
                  drop_rate=None)


def observe_net(net: structure.Net) -> Observed:
  """The network of a Torch7 or Caffe file's structural description.

  Args:
    net: from ``torch7.parse_torch7`` or ``caffe.parse_caffe``.

  Returns:
    What the file holds, its dropout included (0 when it has none).

  Raises:
    InferenceError: if the stem has no convolution or a unit has none.
  """
  if not net.stem or not isinstance(net.stem[0], structure.Conv):
    raise InferenceError(f"{net.where}: cannot read the architecture: the "
                         "stem does not start with a convolution")
  stage_units: List[int] = []
  planes = []
  convs_per_unit = set()
  for unit in net.units:
    convs = [op for op in unit.branch if isinstance(op, structure.Conv)]
    if not convs:
      raise InferenceError(f"{net.where}: cannot read the architecture: "
                           f"unit {unit.where} has no convolution")
    convs_per_unit.add(len(convs))
    if unit.pool_stride == 2 or not stage_units:
      stage_units.append(0)
    stage_units[-1] += 1
    planes.append(int(convs[0].weight.shape[0]))
  if not planes:
    raise InferenceError(f"{net.where}: no residual units")
  stem = net.stem[0].weight
  return Observed(stem_kernel=int(stem.shape[-1]),
                  stem_width=int(stem.shape[0]),
                  stage_units=tuple(stage_units),
                  bottleneck=max(convs_per_unit) == 3, planes=tuple(planes),
                  num_classes=int(net.fc_weight.shape[0]),
                  drop_rate=float(net.dropout or 0.0))


def _alpha_interval(start: int, planes: Sequence[int],
                    mode: str) -> Tuple[float, float]:
  """The alphas whose unrounded widths round to ``planes`` (closed, padded)."""
  n = len(planes)
  lo, hi = -math.inf, math.inf
  for i, width in enumerate(planes, 1):
    if mode == "add":
      a = (width - 0.5 - start) * n / i
      b = (width + 0.5 - start) * n / i
    else:
      if width - 0.5 <= 0:
        return 1.0, -1.0
      a = ((width - 0.5) / start) ** (n / i)
      b = ((width + 0.5) / start) ** (n / i)
    lo, hi = max(lo, a), min(hi, b)
  pad = 1e-9 * max(1.0, abs(hi))
  return lo - pad, hi + pad


def _simplest_alphas(lo: float, hi: float):
  """Numbers in [lo, hi], integers first, then by number of decimals."""
  if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
    return
  for decimals in range(_MAX_DECIMALS + 1):
    scale = 10 ** decimals
    first, last = math.ceil(lo * scale), math.floor(hi * scale)
    middle = (lo + hi) / 2 * scale
    for value in sorted(range(first, last + 1), key=lambda v: abs(v - middle)):
      if decimals and value % 10 == 0:
        continue  # already tried with fewer decimals
      yield value / scale


def _candidate_alphas(start: int, planes: Sequence[int], mode: str,
                      alpha: Optional[float]):
  """The given alpha, or the simplest ones the widths allow, in order."""
  if alpha is not None:
    yield float(alpha)
    return
  for value in _simplest_alphas(*_alpha_interval(start, planes, mode)):
    if (mode == "mul" and value >= 1) or (mode == "add" and value >= 0):
      yield value


def _flag(name: str, value: Any) -> str:
  if name == "bottleneck":
    return "--bottleneck" if value else "--nobottleneck"
  if isinstance(value, float):
    return f"--{name}={value:g}"
  return f"--{name}={value}"


def flags_line(kwargs: Mapping[str, Any]) -> str:
  """The model flags that rebuild ``kwargs``, e.g. "--dataset=cifar10 ...".

  Args:
    kwargs: ``PyramidNet`` arguments, as ``infer`` returns them.
  """
  order = ("dataset", "depth", "alpha", "bottleneck", "mode", "rounding",
           "num_classes", "drop_rate")
  return " ".join(_flag(k, kwargs[k]) for k in order
                  if kwargs.get(k) is not None)


def infer(observed: Observed, given: Mapping[str, Any],
          roundings: Sequence[str] = ("py3", "half_up")
          ) -> Tuple[Dict[str, Any], List[str]]:
  """The ``PyramidNet`` arguments of the file's network.

  Args:
    observed: what the file holds.
    given: the model arguments the user gave (missing or None: infer them);
      ``dataset``, ``depth``, ``alpha``, ``bottleneck``, ``mode``,
      ``rounding``, ``num_classes`` and ``drop_rate`` are compared with the
      file, other keys (ShakeDrop settings) are passed through.
    roundings: the rounding rules to try, the file's framework's first
      (they only differ where a width lands exactly on .5).

  Returns:
    (the arguments, conflicts): the arguments rebuild the file's network
    where the given ones allow it; each conflict names a given flag that no
    network of the file's shape fits and what the file holds instead (then
    the arguments are those inferred without that flag).

  Raises:
    InferenceError: if no PyramidNet of ours has the file's widths (for
      example a stem other than 16 / 64 channels, or widths that follow
      neither schedule).
  """
  given = {k: v for k, v in given.items() if v is not None}
  conflicts: List[str] = []
  if observed.stem_kernel == 7:
    dataset = "imagenet"
  elif observed.stem_kernel == 3:
    dataset = "cifar100" if observed.num_classes == 100 else "cifar10"
    if given.get("dataset") in ("cifar10", "cifar100"):
      dataset = given["dataset"]
  else:
    raise InferenceError(f"cannot infer --dataset: the stem convolution is "
                         f"{observed.stem_kernel}x{observed.stem_kernel}, "
                         "expected 3x3 (CIFAR) or 7x7 (ImageNet)")
  if widths.STEM_WIDTH[dataset] != observed.stem_width:
    raise InferenceError(
        f"cannot infer the architecture: the stem has {observed.stem_width} "
        f"channels, a {dataset} PyramidNet {widths.STEM_WIDTH[dataset]}")
  if "dataset" in given and given["dataset"] != dataset:
    conflicts.append(f"--dataset={given['dataset']} (the file has a "
                     f"{observed.stem_kernel}x{observed.stem_kernel} stem: "
                     f"{dataset})")
  bottleneck = observed.bottleneck
  if "bottleneck" in given and bool(given["bottleneck"]) != bottleneck:
    conflicts.append(f"{_flag('bottleneck', given['bottleneck'])} (the file "
                     f"has {'bottleneck' if bottleneck else 'basic'} units)")
  depth = (3 if bottleneck else 2) * sum(observed.stage_units) + 2
  try:
    arch = widths.architecture(dataset, depth, 0.0, bottleneck)
  except ValueError as e:
    raise InferenceError(f"no {dataset} PyramidNet has the file's units "
                         f"({observed.describe()}): {e}") from None
  if arch.stage_units != observed.stage_units:
    raise InferenceError(
        f"no {dataset} PyramidNet of depth {depth} has the file's units "
        f"{'/'.join(map(str, observed.stage_units))} per stage (it has "
        f"{'/'.join(map(str, arch.stage_units))})")
  if "depth" in given and int(given["depth"]) != depth:
    conflicts.append(f"--depth={given['depth']} (the file has depth {depth}: "
                     f"{'/'.join(map(str, observed.stage_units))} "
                     f"{'bottleneck' if bottleneck else 'basic'} units)")
  modes = [given["mode"]] if "mode" in given else list(widths.MODES)
  if "rounding" in given:
    roundings = [given["rounding"]]
  start = widths.STEM_WIDTH[dataset]
  fit = _search(start, observed.planes, modes, roundings, given.get("alpha"))
  if fit is None and ("mode" in given or "alpha" in given
                      or "rounding" in given):
    free = _search(start, observed.planes, widths.MODES, ("py3", "half_up"),
                   None)
    if free is not None:
      told = " ".join(_flag(k, given[k]) for k in ("alpha", "mode", "rounding")
                      if k in given)
      conflicts.append(f"{told} (the file's widths "
                       f"{_planes_text(observed.planes)} fit "
                       f"--alpha={free[0]:g} --mode={free[1]} "
                       f"--rounding={free[2]})")
    fit = free
  if fit is None:
    raise InferenceError(
        f"cannot infer --alpha/--mode: the unit widths "
        f"{_planes_text(observed.planes)} follow neither the additive nor "
        f"the multiplicative schedule from {start}")
  alpha, mode, rounding = fit
  num_classes = observed.num_classes
  if "num_classes" in given and int(given["num_classes"]) != num_classes:
    conflicts.append(f"--num_classes={given['num_classes']} (the file's "
                     f"classifier has {num_classes} outputs)")
  drop_rate = given.get("drop_rate", 0.0)
  if observed.drop_rate is not None:
    if "drop_rate" in given and abs(float(given["drop_rate"]) -
                                    observed.drop_rate) > 1e-9:
      conflicts.append(f"--drop_rate={given['drop_rate']:g} (the file has "
                       f"dropout {observed.drop_rate:g})")
    drop_rate = observed.drop_rate
  kwargs = dict(given)
  kwargs.update({
      "dataset": dataset, "depth": depth, "alpha": alpha,
      "bottleneck": bottleneck, "mode": mode, "rounding": rounding,
      "num_classes": (None if num_classes == widths.NUM_CLASSES[dataset]
                      else num_classes),
      "drop_rate": float(drop_rate),
  })
  return kwargs, conflicts


def _planes_text(planes: Sequence[int]) -> str:
  if len(planes) <= 8:
    return ",".join(map(str, planes))
  return (",".join(map(str, planes[:4])) + ",...," +
          ",".join(map(str, planes[-2:])))


def _search(start: int, planes: Sequence[int], modes: Sequence[str],
            roundings: Sequence[str], alpha: Optional[float]
            ) -> Optional[Tuple[float, str, str]]:
  """(alpha, mode, rounding) that give exactly ``planes``, or None.

  The simplest alpha wins over the rounding preference: a width exactly on
  .5 tells the rules apart, and only one of them then fits an integer alpha.
  """
  planes = list(planes)
  for mode in modes:
    for value in _candidate_alphas(start, planes, mode, alpha):
      for rounding in roundings:
        if widths.width_schedule(start, value, len(planes), mode,
                                 rounding) == planes:
          return value, mode, rounding
  return None

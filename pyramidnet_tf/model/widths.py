"""Depth tables and the pyramidal width schedule.

This file holds the only arithmetic that decides how wide every unit is, because
that arithmetic is what makes a checkpoint load or not. The rules follow the
authors' code:

* additive: ``w <- w + alpha / N`` before each unit, ``planes = round(w)``;
* multiplicative: ``w <- w * alpha ** (1 / N)`` before each unit;

with ``w`` a float64 accumulated in unit order (never rounded itself) and N the
total number of units. PyTorch's ``round`` is Python 3's round-half-to-even,
which is the default here ("py3"); the Torch7 code rounds half up ("half_up").
The two only differ when ``w`` lands exactly on .5, which no published
configuration does, but many other alphas do.
"""

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

DATASETS = ("cifar10", "cifar100", "imagenet")
MODES = ("add", "mul")
ROUNDINGS = ("py3", "half_up")

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
STEM_WIDTH = {"cifar10": 16, "cifar100": 16, "imagenet": 64}

# ImageNet depths with a fixed stage table (the paper's). The unit type is
# part of the table: 18/34 use basic units, 50 and deeper bottleneck units.
IMAGENET_TABLE = {
    18: (False, (2, 2, 2, 2)),
    34: (False, (3, 4, 6, 3)),
    50: (True, (3, 4, 6, 3)),
    101: (True, (3, 4, 23, 3)),
    152: (True, (3, 8, 36, 3)),
    200: (True, (3, 24, 36, 3)),
}

# The paper's CIFAR rows: which unit type each published depth uses. Used only
# to resolve ``bottleneck=None`` ("auto") when a depth fits both unit types
# (110 = 6*18+2 = 9*12+2; 164 = 6*27+2 = 9*18+2).
CIFAR_PAPER_BOTTLENECK = {110: False, 164: True, 200: True, 236: True, 272: True}


@dataclasses.dataclass(frozen=True)
class Architecture:
  """Everything about a PyramidNet's shape, before any variable exists.

  Lets the network, ``complexity`` and ``describe`` share one validated
  description without building TensorFlow variables.

  Attributes:
    dataset: "cifar10", "cifar100" or "imagenet".
    depth: the depth as the paper counts it.
    alpha: the widening factor, as a float.
    bottleneck: True for bottleneck units, False for basic ones.
    mode: "add" or "mul".
    rounding: "py3" or "half_up".
    stage_units: residual units per stage (3 for CIFAR, 4 for ImageNet).
    planes: each unit's width, grouped per stage.
  """

  dataset: str
  depth: int
  alpha: float
  bottleneck: bool
  mode: str
  rounding: str
  stage_units: Tuple[int, ...]
  planes: Tuple[Tuple[int, ...], ...]  # per stage, per unit

  @property
  def expansion(self) -> int:
    """Output channels per plane: 4 for bottleneck units, 1 for basic."""
    return 4 if self.bottleneck else 1

  @property
  def stem_width(self) -> int:
    """Channels of the stem: 16 for CIFAR, 64 for ImageNet."""
    return STEM_WIDTH[self.dataset]

  @property
  def num_features(self) -> int:
    """Channels entering the classifier (last planes x expansion)."""
    return self.planes[-1][-1] * self.expansion

  @property
  def flat_planes(self) -> List[int]:
    """Every unit's planes in unit order, over all stages."""
    return [p for stage in self.planes for p in stage]


def _round(value: float, rounding: str) -> int:
  if rounding == "py3":
    return int(round(value))
  return int(math.floor(value + 0.5))


def width_schedule(start: int, alpha: float, num_units: int, mode: str,
                   rounding: str = "py3") -> List[int]:
  """Planes of each unit, in unit order (see module docstring).

  Args:
    start: the stem's width, where ``w`` starts.
    alpha: widening factor: the total width added over all units ("add"),
      or the ratio of the last width to ``start`` ("mul").
    num_units: N, the residual units over all stages.
    mode: "add" or "mul".
    rounding: "py3" (round half to even) or "half_up".

  Raises:
    ValueError: for an unknown ``mode`` or ``rounding``.
  """
  if mode not in MODES:
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
  if rounding not in ROUNDINGS:
    raise ValueError(
        f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")
  width = float(start)
  if mode == "add":
    step = float(alpha) / (num_units * 1.0)
  else:
    step = float(alpha) ** (1.0 / num_units)
  planes = []
  for _ in range(num_units):
    width = width + step if mode == "add" else width * step
    planes.append(_round(width, rounding))
  return planes


def _nearest(depth: int, per_unit: int, lowest: int) -> str:
  """The valid depths around ``depth`` for depth = per_unit * n + 2."""
  below = max(lowest, ((depth - 2) // per_unit) * per_unit + 2)
  above = below + per_unit if below <= depth else below
  if below == above or below > depth:
    return f"{above}"
  return f"{below}, {above}"


def _cifar_units(depth: int, bottleneck: Optional[bool]) -> Tuple[bool, int]:
  basic_ok = depth >= 8 and (depth - 2) % 6 == 0
  bottle_ok = depth >= 11 and (depth - 2) % 9 == 0
  if bottleneck is None:
    if depth in CIFAR_PAPER_BOTTLENECK:
      bottleneck = CIFAR_PAPER_BOTTLENECK[depth]
    elif basic_ok and bottle_ok:
      raise ValueError(
          f"depth {depth} fits both unit types (6n+2 basic and 9n+2 "
          "bottleneck); pass bottleneck=True or False (--bottleneck or "
          "--nobottleneck)")
    elif basic_ok or bottle_ok:
      bottleneck = bottle_ok
    else:
      raise ValueError(
          f"depth must be 6n+2 for basic units (nearest valid: "
          f"{_nearest(depth, 6, 8)}) or 9n+2 for bottleneck units (nearest "
          f"valid: {_nearest(depth, 9, 11)}); got {depth}")
  if bottleneck and not bottle_ok:
    raise ValueError(f"depth must be 9n+2 for bottleneck units; nearest valid: "
                     f"{_nearest(depth, 9, 11)} (got {depth})")
  if not bottleneck and not basic_ok:
    raise ValueError(f"depth must be 6n+2 for basic units; nearest valid: "
                     f"{_nearest(depth, 6, 8)} (got {depth})")
  per_unit = 9 if bottleneck else 6
  return bottleneck, (depth - 2) // per_unit


def _imagenet_units(depth: int,
                    bottleneck: Optional[bool]) -> Tuple[bool, Tuple[int, ...]]:
  if depth in IMAGENET_TABLE:
    table_bottleneck, units = IMAGENET_TABLE[depth]
    if bottleneck is not None and bottleneck != table_bottleneck:
      kind = "bottleneck" if table_bottleneck else "basic"
      raise ValueError(
          f"bottleneck={bottleneck} does not fit ImageNet depth {depth}: the "
          f"paper's table builds it from {kind} units; valid: bottleneck="
          f"{table_bottleneck} or None (auto)")
    return table_bottleneck, units
  # Off-table depths as the authors' PyTorch code builds them: four equal
  # stages, depth = 12n+2 (bottleneck) or 8n+2 (basic).
  table = ", ".join(str(d) for d in sorted(IMAGENET_TABLE))
  if bottleneck is None:
    raise ValueError(
        f"ImageNet depth {depth} is not in the paper's table ({table}); pass "
        "bottleneck=True (depth 12n+2) or False (depth 8n+2) explicitly")
  per_unit = 12 if bottleneck else 8
  lowest = per_unit + 2
  if depth < lowest or (depth - 2) % per_unit:
    kind = "bottleneck" if bottleneck else "basic"
    raise ValueError(
        f"ImageNet depth must be one of the table ({table}) or "
        f"{per_unit}n+2 for {kind} units; nearest valid: "
        f"{_nearest(depth, per_unit, lowest)} (got {depth})")
  n = (depth - 2) // per_unit
  return bool(bottleneck), (n, n, n, n)


def architecture(dataset: str, depth: int, alpha: float,
                 bottleneck: Optional[bool] = None, mode: str = "add",
                 rounding: str = "py3") -> Architecture:
  """Validates a configuration and computes its unit counts and widths.

  Args:
    dataset: one of DATASETS.
    depth: the network depth as the paper counts it.
    alpha: widening factor (additive: total widening; multiplicative: ratio).
    bottleneck: unit type; None picks the paper's choice for the depth.
    mode: "add" or "mul".
    rounding: "py3" (PyTorch parity) or "half_up" (Torch7 parity).

  Raises:
    ValueError: naming the argument and the valid choices.
  """
  if dataset not in DATASETS:
    raise ValueError(
        f"dataset must be one of {', '.join(DATASETS)}; got {dataset!r}")
  if mode not in MODES:
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
  if rounding not in ROUNDINGS:
    raise ValueError(
        f"rounding must be one of {', '.join(ROUNDINGS)}; got {rounding!r}")
  if isinstance(depth, bool) or not isinstance(depth, int):
    raise ValueError(f"depth must be an integer; got {depth!r}")
  try:
    alpha = float(alpha)
  except (TypeError, ValueError):
    raise ValueError(f"alpha must be a number; got {alpha!r}") from None
  if not math.isfinite(alpha):
    raise ValueError(f"alpha must be finite; got {alpha}")
  if mode == "add" and alpha < 0:
    raise ValueError(f"alpha must be >= 0 for mode 'add'; got {alpha}")
  if mode == "mul" and alpha < 1:
    raise ValueError(f"alpha must be >= 1 for mode 'mul' (the final width is "
                     f"the stem width times alpha); got {alpha}")
  if dataset == "imagenet":
    bottleneck, stage_units = _imagenet_units(depth, bottleneck)
  else:
    bottleneck, n = _cifar_units(depth, bottleneck)
    stage_units = (n, n, n)
  flat = width_schedule(STEM_WIDTH[dataset], alpha, sum(stage_units), mode,
                        rounding)
  planes = []
  start = 0
  for count in stage_units:
    planes.append(tuple(flat[start:start + count]))
    start += count
  return Architecture(dataset=dataset, depth=depth, alpha=alpha,
                      bottleneck=bool(bottleneck), mode=mode,
                      rounding=rounding, stage_units=tuple(stage_units),
                      planes=tuple(planes))


def stage_strides(arch: Architecture) -> Sequence[int]:
  """First-unit stride of each stage: 1 for the first stage, then 2.

  Args:
    arch: the network's shape; only its number of stages is used.
  """
  return [1] + [2] * (len(arch.stage_units) - 1)

"""Memory of one training step per replica: weights, optimiser, activations.

Why: the widest and deepest paper rows (CIFAR PyramidNet-272 a=200,
PyramidNet-110 a=270, ImageNet PyramidNet-200 a=450) ran out of memory for
their authors; ``python -m pyramidnet_tf.describe --batch_size=B`` says
beforehand what a replica needs, and how much ``--recompute=unit`` saves.

The count follows what this implementation's training step holds at its peak
(the start of the backward pass), in bytes:

* weights: every variable, float32 (BN moving statistics included);
* gradients: one float32 tensor per trainable variable;
* optimiser state: Nesterov SGD's one momentum slot per trainable variable;
* activations kept for the backward pass, per residual unit, at the unit's
  physical (channel-padded) widths and in the compute dtype: the unit input
  and the first BN's output (the first convolution's input), and per later
  convolution its output and the ReLU output that feeds the next one;
  basic: ``2 x in + 3 x planes`` tensors, bottleneck: ``2 x in + 4 x planes
  + 4 x planes``, each at the resolution it has. The stem and head add theirs.
  With ``recompute="unit"`` only each unit's input is kept, plus, during the
  backward pass, the largest unit's full set (one unit is rebuilt at a time);
* working gradient tensors: the backward pass holds the gradient flowing
  into a unit, the one flowing out and one intermediate, i.e. three tensors
  of the largest activation.

Not counted: the framework itself (the TensorFlow runtime, its graphs, the
input pipeline), which ``bench/memory_bench.py`` measures as the baseline of
a process that has imported TensorFlow and built nothing.
"""

import dataclasses
from typing import Dict

from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.model import widths as widths_lib

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
RECOMPUTE = ("none", "unit")


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes of one replica's training step (see the module docstring).

  Attributes:
    weights: all variables (float32).
    gradients: one float32 gradient per trainable variable.
    optimizer: momentum slots.
    activations: what the forward pass keeps for the backward pass (with
      recomputation: the unit inputs plus one rebuilt unit).
    workspace: the backward pass's gradient tensors in flight.
  """
  weights: int
  gradients: int
  optimizer: int
  activations: int
  workspace: int

  @property
  def total(self) -> int:
    """The sum of every part."""
    return (self.weights + self.gradients + self.optimizer +
            self.activations + self.workspace)

  def as_dict(self) -> Dict[str, int]:
    """The parts and ``total``, in bytes."""
    parts = dataclasses.asdict(self)
    parts["total"] = self.total
    return parts


def _param_counts(arch: widths_lib.Architecture, num_classes: int):
  """(trainable scalars, BN moving-statistics scalars) of ``arch``."""
  trainable = 0
  moving = 0

  def conv(cin, cout, k):
    return cin * cout * k * k

  def bn(c):
    nonlocal moving
    moving += 2 * c
    return 2 * c

  stem_k = 7 if arch.dataset == "imagenet" else 3
  trainable += conv(3, arch.stem_width, stem_k) + bn(arch.stem_width)
  channels = arch.stem_width
  for planes in arch.flat_planes:
    if arch.bottleneck:
      trainable += (bn(channels) + conv(channels, planes, 1) + bn(planes) +
                    conv(planes, planes, 3) + bn(planes) +
                    conv(planes, 4 * planes, 1) + bn(4 * planes))
      channels = 4 * planes
    else:
      trainable += (bn(channels) + conv(channels, planes, 3) + bn(planes) +
                    conv(planes, planes, 3) + bn(planes))
      channels = planes
  trainable += bn(channels) + channels * num_classes + num_classes
  return trainable, moving


def estimate(arch: widths_lib.Architecture, num_classes: int,
             image_size: int, batch_size: int, dtype: str = "float32",
             recompute: str = "none",
             channel_multiple: int = 1) -> MemoryEstimate:
  """The training-step memory of one replica.

  Args:
    arch: the network (``widths.architecture``).
    num_classes: classifier outputs.
    image_size: input side in pixels.
    batch_size: examples per replica.
    dtype: compute dtype, one of ``DTYPE_BYTES``.
    recompute: "none" or "unit" (the trainer's ``--recompute``).
    channel_multiple: the physical channel alignment the trainer uses
      (``channel_alignment``; 8 for float32 on CPU by default).

  Returns:
    A ``MemoryEstimate``.

  Raises:
    ValueError: for an unknown ``dtype`` or ``recompute``, or a batch size
      below 1.
  """
  if dtype not in DTYPE_BYTES:
    raise ValueError(f"dtype must be one of {', '.join(DTYPE_BYTES)}; got "
                     f"{dtype!r}")
  if recompute not in RECOMPUTE:
    raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}; got "
                     f"{recompute!r}")
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1; got {batch_size}")
  trainable, moving = _param_counts(arch, num_classes)
  elem = DTYPE_BYTES[dtype]

  def phys(channels):
    return channel_alignment.align(channels, channel_multiple)

  def tensor(channels, size):
    return batch_size * size * size * phys(channels) * elem

  size = image_size
  if arch.dataset == "imagenet":
    size = -(-size // 2)
    # conv1 output, BN output (ReLU input is BN output; ReLU output kept),
    # max-pool output is the first unit's input (counted there).
    stem = 2 * tensor(arch.stem_width, size)
    size = -(-size // 2)
  else:
    stem = tensor(arch.stem_width, size)  # conv1 output (BN input)
  kept_inputs = 0
  unit_sets = []
  largest = 0
  channels = arch.stem_width
  strides = [s for stage, stride in zip(arch.planes,
                                        widths_lib.stage_strides(arch))
             for s in [stride] + [1] * (len(stage) - 1)]
  for planes, stride in zip(arch.flat_planes, strides):
    unit_input = tensor(channels, size)
    out_size = -(-size // stride)
    if arch.bottleneck:
      # bn1 out; conv1 out + relu; conv2 out (strided) + relu; conv3 out.
      inner = (unit_input + 2 * tensor(planes, size) +
               2 * tensor(planes, out_size) + tensor(4 * planes, out_size))
      out_channels = 4 * planes
    else:
      # bn1 out; conv1 out (strided) + relu; conv2 out.
      inner = unit_input + 3 * tensor(planes, out_size)
      out_channels = planes
    kept_inputs += unit_input
    unit_sets.append(inner)
    largest = max(largest, unit_input, tensor(out_channels, out_size),
                  tensor(planes, size))
    channels, size = out_channels, out_size
  head = 2 * tensor(channels, size)  # bn_final input, ReLU output
  if recompute == "unit":
    activations = stem + kept_inputs + max(unit_sets) + head
  else:
    activations = stem + kept_inputs + sum(unit_sets) + head
  return MemoryEstimate(
      weights=4 * (trainable + moving), gradients=4 * trainable,
      optimizer=4 * trainable, activations=activations,
      workspace=3 * largest)

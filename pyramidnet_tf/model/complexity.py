"""Parameters and multiply-accumulates of a PyramidNet, per stage, from shapes.

Computed from ``widths.Architecture`` alone (no TensorFlow, no variables), so
``describe`` answers instantly even for 100M-parameter ImageNet models; the
tests check these numbers against ``count_params`` of real models.

MACs count the convolutions and the classifier (one multiply-accumulate per
weight per output position). BN, ReLU, pooling and the shortcut additions are
left out: BN folds into the convolutions at inference and the rest is
negligible. FLOPs are reported as 2 x MACs.
"""

import dataclasses
from typing import List

from pyramidnet_tf.model import widths as widths_lib


@dataclasses.dataclass
class Part:
  """One row of the report: the stem, a stage, or the head.

  Attributes:
    name: "stem", "stage1", "stage2", ... or "head".
    units: residual units in the part (0 for stem and head).
    stride: the stem convolution's stride (the ImageNet stem's max pool,
      another 2, is not counted), a stage's first-unit stride, 1 for the
      head.
    in_channels: channels entering the part (3 for the stem).
    out_channels: channels leaving it (the classes for the head).
    planes: widths of the part's units (empty for stem and head).
    output_size: spatial side of its output, in pixels (1 for the head).
    params: trainable parameters, batch-norm gamma and beta included.
    bn_params: the batch-norm share of ``params``.
    macs: multiply-accumulates of one image's forward pass.
  """

  name: str
  units: int
  stride: int
  in_channels: int
  out_channels: int
  planes: List[int]
  output_size: int
  params: int
  bn_params: int
  macs: int


def _conv(in_ch, out_ch, k, size_out):
  return in_ch * out_ch * k * k, in_ch * out_ch * k * k * size_out * size_out


def _bn(channels):
  return 2 * channels


def _conv_out(size, k, stride, pad):
  return (size + 2 * pad - k) // stride + 1


def report(arch: widths_lib.Architecture, num_classes: int,
           image_size: int) -> List[Part]:
  """Rows for the stem, each stage and the head, at ``image_size`` pixels.

  Args:
    arch: the network's shape (``widths.architecture``).
    num_classes: classifier outputs.
    image_size: side of the square input image, in pixels (32 for CIFAR,
      224 for ImageNet as trained).

  Returns:
    ``Part`` rows in network order: stem, stage1, ..., head.
  """
  stem = arch.stem_width
  if arch.dataset == "imagenet":
    size = _conv_out(image_size, 7, 2, 3)
    params, macs = _conv(3, stem, 7, size)
    size = _conv_out(size, 3, 2, 1)  # max pool
  else:
    size = _conv_out(image_size, 3, 1, 1)
    params, macs = _conv(3, stem, 3, size)
  params += _bn(stem)
  parts = [Part("stem", 0, 2 if arch.dataset == "imagenet" else 1, 3, stem,
                [], size, params, _bn(stem), macs)]
  channels = stem
  for index, (planes, stride) in enumerate(
      zip(arch.planes, widths_lib.stage_strides(arch))):
    stage_in = channels
    params = macs = bn = 0
    for position, p in enumerate(planes):
      s = stride if position == 0 else 1
      size_out = _conv_out(size, 3, s, 1)
      bn += _bn(channels)
      if arch.bottleneck:
        for shape in ((channels, p, 1, size), (p, p, 3, size_out),
                      (p, 4 * p, 1, size_out)):
          w, m = _conv(*shape)
          params, macs = params + w, macs + m
        bn += _bn(p) * 2 + _bn(4 * p)
        channels = 4 * p
      else:
        for shape in ((channels, p, 3, size_out), (p, p, 3, size_out)):
          w, m = _conv(*shape)
          params, macs = params + w, macs + m
        bn += _bn(p) * 2
        channels = p
      size = size_out
    parts.append(Part(f"stage{index + 1}", len(planes), stride, stage_in,
                      channels, list(planes), size, params + bn, bn, macs))
  head_params = _bn(channels) + channels * num_classes + num_classes
  parts.append(Part("head", 0, 1, channels, num_classes, [], 1, head_params,
                    _bn(channels), channels * num_classes))
  return parts


def total_params(parts: List[Part]) -> int:
  """Trainable parameters over ``parts``.

  Args:
    parts: rows of ``report``.
  """
  return sum(p.params for p in parts)


def total_bn_params(parts: List[Part]) -> int:
  """Batch-norm gamma and beta over ``parts``.

  Args:
    parts: rows of ``report``.
  """
  return sum(p.bn_params for p in parts)


def total_macs(parts: List[Part]) -> int:
  """Multiply-accumulates per image over ``parts``.

  Args:
    parts: rows of ``report``.
  """
  return sum(p.macs for p in parts)


# Images in the training split of each paper dataset (ILSVRC2012: 1,281,167).
TRAIN_IMAGES = {"cifar10": 50000, "cifar100": 50000, "imagenet": 1281167}


@dataclasses.dataclass(frozen=True)
class TrainingCompute:
  """What a training run computes, from the schedule alone.

  Attributes:
    train_images: images in the training split.
    steps: optimizer steps, counted as the trainer counts them
      (``--train_steps``, else round(epochs x (images // batch))).
    images_seen: steps x the global batch.
    flops: 3 x forward FLOPs x images seen (the backward pass costs about
      twice the forward one): a hardware-independent size of the run.
  """
  train_images: int
  steps: int
  images_seen: int
  flops: int


def training_compute(macs: int, train_images: int, batch_size: int,
                     epochs: float, train_steps=None) -> TrainingCompute:
  """The steps, images and FLOPs of a training schedule.

  Args:
    macs: forward multiply-accumulates per image (``total_macs``).
    train_images: images in the training split.
    batch_size: the global batch.
    epochs: --epochs (ignored when ``train_steps`` is given).
    train_steps: --train_steps, or None.
  """
  steps = train_steps or max(
      1, int(round(epochs * (train_images // batch_size))))
  seen = steps * batch_size
  return TrainingCompute(train_images, steps, seen, 3 * 2 * macs * seen)

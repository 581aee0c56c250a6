"""AutoAugment (published CIFAR-10 and ImageNet policies) and RandAugment.

Why plain TensorFlow ops: the policies run inside the training pipeline's
parallel ``tf.data`` map, so every operation is a graph op (no
``tf.py_function``, no PIL, no tensorflow-addons, which does not import on
TF 2.21); rotate/shear/translate are one ``ImageProjectiveTransformV3``.

Images: HWC RGB, either uint8 or float32 with values in [0, 255]. Every
operation returns the dtype it was given, clipped to [0, 255] (uint8 results
are rounded). Geometric operations use nearest-neighbour sampling and fill
the uncovered area with grey 128, as the TensorFlow AutoAugment/RandAugment
code (tensorflow/tpu efficientnet ``autoaugment.py``, ``replace=[128]*3``).

Magnitudes follow the TensorFlow implementations (tensorflow/models
research/autoaugment ``augmentation_transforms.py``, PARAMETER_MAX = 10, and
the RandAugment code, _MAX_LEVEL = 10): a magnitude ``m`` is scaled linearly
with 10 as AutoAugment's strongest setting:

  Rotate       3 m degrees                         random sign
  ShearX/Y     0.03 m (x' = x + k y)                random sign
  TranslateX/Y m * width / 32 pixels (m px at 32)  random sign
  Color, Contrast, Brightness, Sharpness: PIL-style blend factor 0.18 m + 0.1
               (1.0 = unchanged at m = 5; no sign, as the TF code)
  Solarize     invert pixels >= 256 - int(25.6 m)
  Posterize    keep 8 - int(0.4 m) bits (the paper's 8..4 range; the TF
               CIFAR code keeps 4 - int(0.4 m) bits, which makes the
               policy's Posterize 7 two bits, and the RandAugment code's
               mapping gets weaker as m grows)
  Identity, AutoContrast, Equalize, Invert: no magnitude.

RandAugment's M uses the same scale and is limited to it: 0 <= M <= 10,
M = 10 being AutoAugment's strongest setting. torchvision's RandAugment
(31 magnitude bins, 0..30) reaches the same rotation (30 degrees), shear
(0.3), Solarize threshold and Posterize bits at 3 M; its translations go to
150/331 of the side at 30 (ours to 10/32 at 10) and its enhance factors
1 +- 0.03 m take a random sign (ours, as the TF code, are 0.18 M + 0.1).
At 10, the scale's end, Solarize inverts every pixel and Posterize keeps 4
bits (torchvision's ends are the same). The TF code extrapolates above 10
(Rotate 42 degrees, shear 0.42 and an enhance factor 2.62 at M = 14, Solarize
still Invert, Posterize keeping 3 bits and none from M = 20), which no
published table calibrated, so those magnitudes are refused
(``options.parse_randaugment``).
"""

import math
from typing import Callable, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf import options

FILL = 128.0
MAX_LEVEL = 10.0
MAX_RANDAUGMENT_MAGNITUDE = options.RANDAUGMENT_MAX_MAGNITUDE
AUTOAUGMENT_POLICIES = options.AUTOAUGMENT_POLICIES

# Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data",
# CVPR 2019, appendix table of the CIFAR-10 policy: 25 sub-policies of two
# (operation, probability, magnitude) triples. Values checked against two
# public copies of that table: DeepVoltaire/AutoAugment autoaugment.py
# (CIFAR10Policy) and pytorch/vision torchvision/transforms/autoaugment.py
# (AutoAugmentPolicy.CIFAR10). Its first 5 sub-policies are ``exp0_0`` of
# tensorflow/models research/autoaugment policies.py; that file's
# good_policies() is a larger union (95 sub-policies from 19 searches, with
# Cutout), which the paper's table summarises. Magnitudes of operations that
# take none are kept as published.
CIFAR10_POLICY = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

# The paper's ImageNet policy (same two sources: ImageNetPolicy /
# AutoAugmentPolicy.IMAGENET). It repeats some sub-policies, as published.
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

# The RandAugment paper's 14 transformations (Cubuk et al. 2020, sec. 3).
# The TF ImageNet code swaps Identity for Invert, Cutout and SolarizeAdd.
RANDAUGMENT_OPS = (
    "Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color",
    "Posterize", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
    "TranslateX", "TranslateY")


# ---------------------------------------------------------------- helpers


def _float(image):
  return tf.cast(image, tf.float32)


def _restore(image, dtype):
  """Back to the caller's dtype, clipped to [0, 255] (rounded for ints)."""
  image = tf.clip_by_value(image, 0.0, 255.0)
  if dtype.is_integer:
    image = tf.round(image)
  return tf.cast(image, dtype)


def _grey(x):
  """ITU-R 601 luma, as PIL's convert('L'), keeping a channel axis."""
  return tf.reduce_sum(x * tf.constant([0.299, 0.587, 0.114]), axis=-1,
                       keepdims=True)


def _blend(image, degenerate, factor):
  """PIL ImageEnhance: degenerate + factor * (image - degenerate)."""
  x = _float(image)
  factor = tf.cast(factor, tf.float32)
  return _restore(degenerate + factor * (x - degenerate), image.dtype)


def _transform(image, matrix):
  """Samples output pixel (x, y) at input ((a0 x + a1 y + a2),
  (b0 x + b1 y + b2)); ``matrix`` = [a0, a1, a2, b0, b1, b2]."""
  transform = tf.concat([tf.cast(tf.stack(matrix), tf.float32),
                         tf.zeros([2], tf.float32)], 0)
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=_float(image)[None], transforms=transform[None],
      output_shape=tf.shape(image)[:2], fill_value=FILL,
      interpolation="NEAREST", fill_mode="CONSTANT")[0]
  out.set_shape(image.shape)
  return _restore(out, image.dtype)


def _size(image):
  shape = tf.cast(tf.shape(image), tf.float32)
  return shape[0], shape[1]


# -------------------------------------------------------------- operations
# Every operation is op(image, parameter); those without a parameter accept
# and ignore one so policies can call them uniformly.


def identity(image, _=None):
  """Returns ``image`` unchanged (RandAugment's Identity).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    _: ignored (no magnitude).
  """
  return image


def invert(image, _=None):
  """255 - every value.

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    _: ignored (no magnitude).
  """
  return _restore(255.0 - _float(image), image.dtype)


def solarize(image, threshold):
  """Inverts every value >= ``threshold`` (256: none, 0: all).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    threshold: scalar, in 0-255 units.
  """
  x = _float(image)
  return _restore(tf.where(x >= tf.cast(threshold, tf.float32), 255.0 - x, x),
                  image.dtype)


def posterize(image, bits):
  """Keeps the ``bits`` most significant bits of each value (8: unchanged).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    bits: scalar in 0..8 (0 makes the image black).
  """
  step = tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32))
  return _restore(tf.floor(_float(image) / step) * step, image.dtype)


def autocontrast(image, _=None):
  """Per channel, maps [min, max] linearly onto [0, 255]; a flat channel is
  left alone (PIL ImageOps.autocontrast without cutoff).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    _: ignored (no magnitude).
  """
  x = _float(image)
  lo = tf.reduce_min(x, axis=[0, 1])
  hi = tf.reduce_max(x, axis=[0, 1])
  scale = 255.0 / tf.maximum(hi - lo, 1e-6)
  return _restore(tf.where(hi > lo, (x - lo) * scale, x), image.dtype)


def equalize(image, _=None):
  """Per-channel histogram equalisation with PIL's ImageOps.equalize rule:
  step = (pixels - count of the brightest level) // 255 and
  lut[v] = (pixels below v + step // 2) // step; step 0 leaves the channel
  unchanged (e.g. a constant image). Float inputs are binned by floor.

  Args:
    image: HWC image with exactly 3 channels, uint8 or float32 in
      [0, 255].
    _: ignored (no magnitude).
  """
  x = _float(image)
  levels = tf.cast(tf.clip_by_value(tf.floor(x), 0.0, 255.0), tf.int32)
  index = tf.reshape(levels, [-1, 3]) + tf.constant([0, 256, 512])
  hist = tf.reshape(tf.math.bincount(tf.reshape(index, [-1]), minlength=768,
                                     maxlength=768), [3, 256])
  values = tf.range(256)
  top = tf.reduce_max(tf.where(hist > 0, values[None], -1), axis=1)
  last = tf.gather(hist, tf.maximum(top, 0), batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last) // 255
  lut = ((tf.cumsum(hist, axis=1, exclusive=True) + (step // 2)[:, None])
         // tf.maximum(step, 1)[:, None])
  lut = tf.where((step > 0)[:, None], tf.minimum(lut, 255), values[None])
  out = tf.gather(tf.reshape(lut, [-1]), index)
  return _restore(tf.reshape(tf.cast(out, tf.float32), tf.shape(x)),
                  image.dtype)


def color(image, factor):
  """Saturation: blend with the grey image (0: grey, 1: unchanged).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    factor: scalar blend factor; above 1 extrapolates.
  """
  x = _float(image)
  return _blend(image, _grey(x), factor)


def contrast(image, factor):
  """Blend with the mean grey level (0: flat grey, 1: unchanged).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    factor: scalar blend factor; above 1 extrapolates.
  """
  x = _float(image)
  return _blend(image, tf.reduce_mean(_grey(x)), factor)


def brightness(image, factor):
  """Blend with black (0: black, 1: unchanged).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    factor: scalar blend factor; above 1 extrapolates.
  """
  return _blend(image, tf.zeros([], tf.float32), factor)


def sharpness(image, factor):
  """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, /13) applied
  to the interior; the one-pixel border is not filtered, as in PIL.

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255], at least 3x3 pixels.
    factor: scalar blend factor (0: smoothed, 1: unchanged, above 1
      sharpens).
  """
  x = _float(image)
  # Nine shifted slices: ~2x faster than a depthwise conv at 32x32 in tf.data.
  rows = (x[:-2], x[1:-1], x[2:])
  box = sum(r[:, i:i + tf.shape(x)[1] - 2] for r in rows for i in range(3))
  smooth = (box + 4.0 * x[1:-1, 1:-1]) / 13.0
  inside = tf.pad(tf.ones_like(smooth, tf.bool), [[1, 1], [1, 1], [0, 0]])
  smooth = tf.pad(smooth, [[1, 1], [1, 1], [0, 0]])
  return _blend(image, tf.where(inside, smooth, x), factor)


def rotate(image, degrees):
  """Counter-clockwise (as seen) rotation about the image centre.

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    degrees: scalar angle in degrees; negative rotates clockwise.
  """
  h, w = _size(image)
  theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
  cos, sin = tf.cos(theta), tf.sin(theta)
  cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
  return _transform(image, [cos, -sin, cx - cx * cos + cy * sin,
                            sin, cos, cy - cx * sin - cy * cos])


def shear_x(image, k):
  """Output (x, y) takes input (x + k y, y), as PIL's affine (1, k, 0, ...).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    k: scalar shear coefficient.
  """
  k = tf.cast(k, tf.float32)
  return _transform(image, [1.0, k, 0.0, 0.0, 1.0, 0.0])


def shear_y(image, k):
  """Output (x, y) takes input (x, y + k x), as PIL's affine (1, 0, 0, k, ...).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    k: scalar shear coefficient.
  """
  k = tf.cast(k, tf.float32)
  return _transform(image, [1.0, 0.0, 0.0, k, 1.0, 0.0])


def translate_x(image, pixels):
  """Moves the content right by ``pixels`` (left if negative).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    pixels: scalar shift in pixels (fractions are sampled by nearest
      neighbour).
  """
  dx = tf.cast(pixels, tf.float32)
  return _transform(image, [1.0, 0.0, -dx, 0.0, 1.0, 0.0])


def translate_y(image, pixels):
  """Moves the content down by ``pixels`` (up if negative).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    pixels: scalar shift in pixels (fractions are sampled by nearest
      neighbour).
  """
  dy = tf.cast(pixels, tf.float32)
  return _transform(image, [1.0, 0.0, 0.0, 0.0, 1.0, -dy])


# ------------------------------------------------- magnitude -> parameter


# Magnitudes may be tensors (policies look them up per image), so the
# mappings are TF arithmetic; int() of the TF code is floor (m >= 0).


def _none(unused_m, unused_image):
  return tf.zeros([], tf.float32)


def _scale(maximum):
  return lambda m, unused_image: m * maximum / MAX_LEVEL


def _enhance(m, unused_image):
  return 1.8 * m / MAX_LEVEL + 0.1


def _translate(m, image):
  return m / MAX_LEVEL * 10.0 * _size(image)[1] / 32.0


def _solarize_threshold(m, unused_image):
  return tf.maximum(256.0 - tf.floor(256.0 * m / MAX_LEVEL), 0.0)


def _posterize_bits(m, unused_image):
  return tf.maximum(8.0 - tf.floor(4.0 * m / MAX_LEVEL), 0.0)


# name: (operation, magnitude -> parameter, signed)
OPS = {
    "Identity": (identity, _none, False),
    "AutoContrast": (autocontrast, _none, False),
    "Equalize": (equalize, _none, False),
    "Invert": (invert, _none, False),
    "Rotate": (rotate, _scale(30.0), True),
    "Solarize": (solarize, _solarize_threshold, False),
    "Posterize": (posterize, _posterize_bits, False),
    "Color": (color, _enhance, False),
    "Contrast": (contrast, _enhance, False),
    "Brightness": (brightness, _enhance, False),
    "Sharpness": (sharpness, _enhance, False),
    "ShearX": (shear_x, _scale(0.3), True),
    "ShearY": (shear_y, _scale(0.3), True),
    "TranslateX": (translate_x, _translate, True),
    "TranslateY": (translate_y, _translate, True),
}
OP_NAMES = tuple(OPS)


def op_parameter(name: str, magnitude, image, sign=1.0):
  """The parameter ``name`` gets at ``magnitude`` (times ``sign``, +-1, for
  the signed geometric operations), a float32 scalar tensor.

  Args:
    name: a key of ``OPS``.
    magnitude: policy magnitude (10 = AutoAugment's strongest), a number or
      scalar tensor.
    image: the image the operation will get (translations scale with its
      width).
    sign: +1 or -1; ignored by the unsigned operations.
  """
  _, mapping, signed = OPS[name]
  value = mapping(tf.cast(magnitude, tf.float32), image)
  return value * tf.cast(sign, tf.float32) if signed else value


def apply_op(name: str, image, magnitude, sign=1.0):
  """Applies the named operation at a policy magnitude.

  Args:
    name: a key of ``OPS``.
    image: HWC RGB, uint8 or float32 in [0, 255].
    magnitude: policy magnitude (10 = AutoAugment's strongest).
    sign: +1 or -1, the direction of the signed geometric operations.

  Returns:
    The transformed image, in the dtype of ``image``.
  """
  return OPS[name][0](image, op_parameter(name, magnitude, image, sign))


def _apply_by_index(op_index, image, magnitude, sign):
  """OPS[OP_NAMES[op_index]] for a tensor index: one switch over the 15
  operations, so a policy's graph holds each operation once per slot. (A
  switch over the 25 sub-policies, 50 operations under tf.cond, took ~7x
  longer to build in tf.data and ran at half the speed.)"""
  return tf.switch_case(op_index, [
      lambda n=name: apply_op(n, image, magnitude, sign)
      for name in OP_NAMES])


def _signs(seed, n):
  return tf.where(tf.random.stateless_uniform([n], seed) < 0.5, -1.0, 1.0)


def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


# ----------------------------------------------------------- AutoAugment


def policy_table(name: str):
  """The sub-policies of --autoaugment=``name``.

  Args:
    name: "cifar10" or "imagenet".

  Returns:
    ``CIFAR10_POLICY`` or ``IMAGENET_POLICY``.

  Raises:
    ValueError: for any other name ("none" included).
  """
  tables = {"cifar10": CIFAR10_POLICY, "imagenet": IMAGENET_POLICY}
  if name not in tables:
    raise ValueError(f"--autoaugment must be one of "
                     f"{', '.join(AUTOAUGMENT_POLICIES)}; got {name!r}")
  return tables[name]


def autoaugment_choices(seed, num_subpolicies: int):
  """(sub-policy index, two uniform draws, two signs) for a stateless
  seed: operation i of the chosen sub-policy runs iff draw i < its
  probability.

  Args:
    seed: the image's int32/int64 [2] stateless policy seed.
    num_subpolicies: size of the policy table.
  """
  choice_seed, draw_seed, sign_seed = _split(seed, 3)
  index = tf.random.stateless_uniform([], choice_seed, 0, num_subpolicies,
                                      dtype=tf.int32)
  return (index, tf.random.stateless_uniform([2], draw_seed),
          _signs(sign_seed, 2))


def autoaugment(image, seed, policy: str = "cifar10"):
  """One sub-policy chosen uniformly, each of its two operations applied
  with its probability (AutoAugment's sampling).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    seed: the image's int32/int64 [2] stateless policy seed.
    policy: "cifar10" or "imagenet" (``policy_table``).

  Raises:
    ValueError: for an unknown ``policy``.
  """
  table = policy_table(policy)
  index, draws, signs = autoaugment_choices(seed, len(table))
  ops = tf.constant([[OP_NAMES.index(n) for n, _, _ in s] for s in table])
  probabilities = tf.constant([[p for _, p, _ in s] for s in table])
  magnitudes = tf.constant([[float(m) for _, _, m in s] for s in table])
  for slot in range(2):
    op = tf.where(draws[slot] < probabilities[index, slot], ops[index, slot],
                  OP_NAMES.index("Identity"))
    image = _apply_by_index(op, image, magnitudes[index, slot], signs[slot])
  return image


# ------------------------------------------------------------ RandAugment


def randaugment_choices(seed, num_layers: int):
  """(operation indices into RANDAUGMENT_OPS, signs), one per layer.

  Args:
    seed: the image's int32/int64 [2] stateless policy seed.
    num_layers: N, operations per image.
  """
  op_seed, sign_seed = _split(seed, 2)
  ops = tf.random.stateless_uniform([num_layers], op_seed, 0,
                                    len(RANDAUGMENT_OPS), dtype=tf.int32)
  return ops, _signs(sign_seed, num_layers)


def randaugment(image, seed, num_layers: int, magnitude: float):
  """N operations drawn uniformly with replacement from RANDAUGMENT_OPS,
  each applied (always) at magnitude M.

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    seed: the image's int32/int64 [2] stateless policy seed.
    num_layers: N, operations per image (a Python int >= 1).
    magnitude: M, a Python number in 0..``MAX_RANDAUGMENT_MAGNITUDE`` on
      AutoAugment's scale (10 = its strongest; ``make_policy`` refuses
      others).
  """
  ops, signs = randaugment_choices(seed, num_layers)
  op_index = tf.gather(tf.constant([OP_NAMES.index(n)
                                    for n in RANDAUGMENT_OPS]), ops)
  for layer in range(num_layers):
    image = _apply_by_index(op_index[layer], image, float(magnitude),
                            signs[layer])
  return image


# ------------------------------------------------------ flags -> policy


# --randaugment=N,M -> (N, M) or None; TensorFlow-free, so the flags are
# checked before TensorFlow starts.
parse_randaugment = options.parse_randaugment


def make_policy(autoaugment_policy: str = "none",
                randaugment_nm: Optional[Tuple[int, int]] = None
                ) -> Optional[Callable]:
  """``policy(image, seed) -> image`` for the flags, or None when off.

  Args:
    autoaugment_policy: --autoaugment: "none", "cifar10" or "imagenet".
    randaugment_nm: --randaugment as ``parse_randaugment`` returns it:
      (N, M), or None.

  Raises:
    ValueError: for an unknown policy, both AutoAugment and RandAugment,
      or a RandAugment magnitude outside 0..``MAX_RANDAUGMENT_MAGNITUDE``.
  """
  if autoaugment_policy not in AUTOAUGMENT_POLICIES:
    raise ValueError(f"--autoaugment must be one of "
                     f"{', '.join(AUTOAUGMENT_POLICIES)}; got "
                     f"{autoaugment_policy!r}")
  if autoaugment_policy != "none" and randaugment_nm:
    raise ValueError("--autoaugment and --randaugment are alternatives; "
                     "set --autoaugment=none or drop --randaugment")
  if autoaugment_policy != "none":
    return lambda image, seed: autoaugment(image, seed, autoaugment_policy)
  if randaugment_nm:
    n, m = parse_randaugment([str(v) for v in randaugment_nm])
    return lambda image, seed: randaugment(image, seed, n, m)
  return None

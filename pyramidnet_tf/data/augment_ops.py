"""The image operations of AutoAugment and RandAugment, as graph ops.

Why plain TensorFlow ops: the policies (``autoaugment``) run inside the
training pipeline's parallel ``tf.data`` map, so every operation is a graph
op (no ``tf.py_function``, no PIL, no tensorflow-addons, which does not
import on TF 2.21); rotate/shear/translate are one
``ImageProjectiveTransformV3``.

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
"""

import math

import tensorflow as tf

FILL = 128.0
MAX_LEVEL = 10.0


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


def apply_by_index(op_index, image, magnitude, sign):
  """OPS[OP_NAMES[op_index]] for a tensor index: one switch over the 15
  operations, so a policy's graph holds each operation once per slot. (A
  switch over the 25 sub-policies, 50 operations under tf.cond, took ~7x
  longer to build in tf.data and ran at half the speed.)"""
  return tf.switch_case(op_index, [
      lambda n=name: apply_op(n, image, magnitude, sign)
      for name in OP_NAMES])

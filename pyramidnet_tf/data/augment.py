"""Per-image decoding, augmentation and normalisation (CIFAR and ImageNet).

Why stateless random ops: every image gets its own seed (derived from the run
seed, its epoch and its index), so augmentation is reproducible whatever the
parallelism of ``tf.data.Dataset.map``, and a resumed run sees the same
images it would have seen without the interruption.

CIFAR has two conventions:
* ``fb`` (fb.resnet.torch, the paper's code): per-dataset statistics;
  normalise, flip, zero-pad 4 after normalising (pads with the mean colour),
  random 32x32 crop.
* ``pt`` (PyramidNet-PyTorch, CutMix): CIFAR-10 statistics for both datasets;
  black pad 4 before normalising, random crop, flip, normalise.

ImageNet-style training (ImageNet and image folders): a distorted crop with
area in [0.08, 1] and aspect in [3/4, 4/3] (fused ``decode_and_crop_jpeg``
for JPEGs), bicubic resize, flip, colour jitter 0.4 (brightness, contrast,
saturation in random order) and PCA lighting 0.1 as fb.resnet.torch, ImageNet
normalisation. Eval: resize the short side to size*256/224, centre crop.

Why ImageNet-style work is split in two (``imagenet_view`` per image,
``imagenet_colour`` per batch): what follows the resize is affine in each
pixel's colour, so it collapses into one 3x3 map and offset per image and is
applied to the whole batch in one pass; per-op work on each image cost more
than decoding it. Evaluation normalises per batch too; it decodes whole
images, because resizing the full image and then cropping cannot be
reproduced from a crop-decoded window (the resize grid depends on the full
size, and crop-decoding changes the pixels at the window's edges).

An optional AutoAugment/RandAugment policy (pyramidnet_tf.data.autoaugment) runs
on the 0-255 image after the crop and flip and before colour jitter and
normalisation, with its own seed folded from the image's seed.
"""

import tensorflow as tf

from pyramidnet_tf import options

CIFAR_CONVENTIONS = options.CIFAR_CONVENTIONS

# fb.resnet.torch, 0-255 units.
CIFAR_STATS = {
    "cifar10": ((125.3, 123.0, 113.9), (63.0, 62.1, 66.7)),
    "cifar100": ((129.3, 124.1, 112.4), (68.2, 65.4, 70.4)),
}
# ImageNet channel statistics of pixels scaled to [0, 1] (torchvision's and
# fb.resnet.torch's), and the same in 0-255 units.
IMAGENET_MEAN_UNIT = (0.485, 0.456, 0.406)
IMAGENET_STD_UNIT = (0.229, 0.224, 0.225)
IMAGENET_MEAN = tuple(m * 255 for m in IMAGENET_MEAN_UNIT)
IMAGENET_STD = tuple(s * 255 for s in IMAGENET_STD_UNIT)
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))


def cifar_stats(dataset: str, convention: str):
  """(mean, std) in 0-255 units for a CIFAR dataset under a convention.

  Args:
    dataset: "cifar10" or "cifar100"; any other name gets CIFAR-10's.
    convention: "pt" (CIFAR-10's statistics for both) or "fb" (each
      dataset's own).

  Returns:
    Two RGB triples, (mean, std).

  Raises:
    ValueError: for an unknown ``convention``.
  """
  if convention not in CIFAR_CONVENTIONS:
    raise ValueError(f"--cifar_convention must be one of "
                     f"{', '.join(CIFAR_CONVENTIONS)}; got {convention!r}")
  if convention == "pt" or dataset not in CIFAR_STATS:
    return CIFAR_STATS["cifar10"]
  return CIFAR_STATS[dataset]


def normalize(image, mean, std, bgr: bool = False):
  """(image - mean) / std with image in 0-255 units, float32.

  Args:
    image: HWC (or NHWC) RGB image in 0-255 units, any numeric dtype.
    mean: per-channel means, 0-255 units.
    std: per-channel standard deviations, 0-255 units.
    bgr: the network expects BGR channels (Caffe models): the channels are
      reversed first, and ``mean`` and ``std`` are then in BGR order too.
  """
  image = tf.cast(image, tf.float32)
  if bgr:
    image = image[..., ::-1]
  return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def decode(encoded, image_format, height, width):
  """uint8 HWC RGB from a record: raw bytes (``format == 'raw'``) or any
  encoded image TensorFlow decodes (JPEG, PNG, BMP, GIF first frame).

  Args:
    encoded: scalar string tensor, the record's image bytes.
    image_format: scalar string tensor, the record's format ("raw" in any
      case, or the name of an encoded format; only "raw" is tested for).
    height: image height in pixels (used for raw bytes only).
    width: image width in pixels (used for raw bytes only).
  """
  def raw():
    return tf.reshape(tf.io.decode_raw(encoded, tf.uint8),
                      tf.stack([height, width, 3]))

  def encoded_image():
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
  return tf.cond(tf.equal(tf.strings.lower(image_format), "raw"), raw,
                 encoded_image)


# Folded into an image's seed to give its policy seed ("AA" in hex).
_POLICY_STREAM = 0xAA


def _seeds(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def policy_seed(seed):
  """The per-image seed of an AutoAugment/RandAugment policy: folded from
  the image's seed, so the crop and flip seeds (and thus every run without
  a policy) are unchanged.

  Args:
    seed: the image's int32/int64 [2] stateless seed.
  """
  return tf.random.experimental.stateless_fold_in(seed, _POLICY_STREAM)


def cifar_train(image, seed, dataset: str, convention: str, size: int = 32,
                pad: int = 4, stats=None, bgr: bool = False, policy=None):
  """Random translation by ``pad`` pixels and horizontal flip.

  ``policy(image, seed)`` (autoaugment.make_policy) runs on the 0-255 image.
  ``pt``: after pad-crop-flip, before normalising (fast-autoaugment's
  order). ``fb``, which normalises before padding so that padding is the
  mean colour: first, then normalise, flip, pad, crop -- the order of
  tensorflow/models research/autoaugment (policy on the normalised-data
  image, then zero-pad-and-crop, flip).

  Args:
    image: uint8 (or 0-255 float) HWC RGB image; first cropped or padded
      to ``size`` x ``size``.
    seed: the image's int32/int64 [2] stateless seed.
    dataset: "cifar10" or "cifar100" (picks the statistics).
    convention: "pt" or "fb" (module docstring).
    size: output side in pixels.
    pad: padding on each side before the random crop, in pixels.
    stats: (mean, std) in 0-255 units overriding the CIFAR statistics
      (e.g. an imported release's), or None.
    bgr: output BGR channels (Caffe models).
    policy: an AutoAugment/RandAugment callable, or None.

  Returns:
    The normalised float32 ``[size, size, 3]`` image.

  Raises:
    ValueError: for an unknown ``convention`` (unless ``stats`` is given).
  """
  mean, std = stats or cifar_stats(dataset, convention)
  crop_seed, flip_seed = _seeds(seed, 2)
  image = tf.image.resize_with_crop_or_pad(image, size, size)
  if convention == "fb":
    if policy is not None:
      image = policy(image, policy_seed(seed))
    image = normalize(image, mean, std, bgr)
    image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    return tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
  image = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
  image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  if policy is not None:
    image = policy(image, policy_seed(seed))
  return normalize(image, mean, std, bgr)


def cifar_eval(image, dataset: str, convention: str, size: int = 32,
               stats=None, bgr: bool = False):
  """The evaluation view of a CIFAR image: centre crop or pad, normalise.

  Args:
    image: uint8 (or 0-255 float) HWC RGB image.
    dataset: "cifar10" or "cifar100" (picks the statistics).
    convention: "pt" or "fb" (module docstring).
    size: output side in pixels.
    stats: (mean, std) in 0-255 units overriding the CIFAR statistics, or
      None.
    bgr: output BGR channels (Caffe models).

  Returns:
    The normalised float32 ``[size, size, 3]`` image.

  Raises:
    ValueError: for an unknown ``convention`` (unless ``stats`` is given).
  """
  mean, std = stats or cifar_stats(dataset, convention)
  return normalize(tf.image.resize_with_crop_or_pad(image, size, size),
                   mean, std, bgr)


def _distorted_box(shape, seed):
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
      area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  offset_y, offset_x, _ = tf.unstack(begin)
  target_h, target_w, _ = tf.unstack(box_size)
  return offset_y, offset_x, target_h, target_w


def _grayscale(image):
  return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1,
                       keepdims=True)


def _blend(image, other, alpha):
  return image * alpha + other * (1.0 - alpha)


# The six orders of brightness (0), contrast (1) and saturation (2).
_JITTER_ORDERS = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1),
                  (2, 1, 0))


def color_jitter(image, seed, strength: float = 0.4):
  """fb.resnet.torch ColorJitter on [0, 1] RGB: brightness, contrast and
  saturation factors 1 + U(-s, s), applied in a random order.

  Args:
    image: float32 HWC RGB in [0, 1]; the result is not clipped.
    seed: int32/int64 [2] stateless seed (order and the three factors).
    strength: s, in [0, 1).
  """
  order_seed, b_seed, c_seed, s_seed = _seeds(seed, 4)
  alphas = [1.0 + tf.random.stateless_uniform([], s, -strength, strength)
            for s in (b_seed, c_seed, s_seed)]

  def brightness(x):
    return _blend(x, tf.zeros_like(x), alphas[0])

  def contrast(x):
    return _blend(x, tf.reduce_mean(_grayscale(x)), alphas[1])

  def saturation(x):
    return _blend(x, _grayscale(x), alphas[2])
  ops = (brightness, contrast, saturation)
  orders = _JITTER_ORDERS
  index = tf.random.stateless_uniform([], order_seed, 0, len(orders),
                                      dtype=tf.int32)

  def apply(order):
    def fn():
      x = image
      for i in order:
        x = ops[i](x)
      return x
    return fn
  return tf.switch_case(index, [apply(o) for o in orders])


def pca_lighting(image, seed, alpha_std: float = 0.1):
  """AlexNet-style PCA lighting noise on [0, 1] RGB (fb.resnet.torch).

  Args:
    image: float32 HWC RGB in [0, 1]; the result is not clipped.
    seed: int32/int64 [2] stateless seed.
    alpha_std: standard deviation of the three PCA coefficients.

  Returns:
    ``image`` plus one RGB offset (the same for every pixel).
  """
  alpha = tf.random.stateless_normal([3], seed, 0.0, alpha_std)
  eigvec = tf.constant(PCA_EIGVEC, tf.float32)
  rgb = tf.reduce_sum(eigvec * (alpha * tf.constant(PCA_EIGVAL))[None, :],
                      axis=1)
  return image + rgb


def imagenet_train(encoded, image_format, height, width, seed, size: int = 224,
                   jitter: float = 0.4, lighting: float = 0.1, stats=None,
                   bgr: bool = False, policy=None):
  """Distorted crop + resize + flip + [policy] + colour jitter + lighting +
  normalise, for one image. ``policy(image, seed)`` sees the flipped 0-255
  float image, as in AutoAugment (the flip commutes with the colour ops
  after it).

  The trainer's pipeline runs the same two parts apart (``imagenet_view``
  per image, ``imagenet_colour`` per batch); this composes them on a batch
  of one.

  Args:
    encoded: scalar string tensor, the record's image bytes; JPEGs are
      cropped while decoding.
    image_format: the record's format string (see ``decode``).
    height: image height in pixels (raw records only).
    width: image width in pixels (raw records only).
    seed: the image's int32/int64 [2] stateless seed.
    size: output side in pixels.
    jitter: colour jitter strength (``color_jitter``); 0 = off.
    lighting: PCA lighting standard deviation (``pca_lighting``); 0 = off.
    stats: (mean, std) in 0-255 units overriding ImageNet's, or None.
    bgr: output BGR channels (Caffe models).
    policy: an AutoAugment/RandAugment callable, or None.

  Returns:
    The normalised float32 ``[size, size, 3]`` image.
  """
  image = imagenet_view(encoded, image_format, height, width, seed, size,
                        policy)
  params = colour_params(seed, jitter, lighting)
  batch = tf.nest.map_structure(lambda t: t[None], (image, params))
  return imagenet_colour(*batch, jitter=jitter, lighting=lighting,
                         stats=stats, bgr=bgr)[0]


def _clip_0_255(image):
  # One pass (tf.clip_by_value is a minimum then a maximum).
  return tf.raw_ops.ClipByValue(t=image, clip_value_min=0.0,
                                clip_value_max=255.0)


def train_crop_box(shape, seed):
  """The distorted crop of an image in ImageNet-style training.

  Args:
    shape: int32 [3] (height, width, channels) of the image.
    seed: the image's int32/int64 [2] stateless seed.

  Returns:
    int32 [4]: (offset_y, offset_x, height, width), inside the image, area
    8-100 % of it, aspect ratio 3/4-4/3 (the whole image when ten draws
    miss).
  """
  box_seed = _seeds(seed, 4)[0]
  return tf.stack(_distorted_box(shape, box_seed))


def imagenet_view(encoded, image_format, height, width, seed, size: int = 224,
                  policy=None):
  """The per-image part of ImageNet training augmentation: the distorted
  crop (decoded alone for JPEGs), bicubic resize, clip, flip, [policy].

  Args:
    encoded: scalar string tensor, the record's image bytes.
    image_format: the record's format string (see ``decode``).
    height: image height in pixels (raw records only).
    width: image width in pixels (raw records only).
    seed: the image's int32/int64 [2] stateless seed (the same seed as
      ``colour_params`` takes: each part derives its own streams).
    size: output side in pixels.
    policy: an AutoAugment/RandAugment callable, or None.

  Returns:
    float32 ``[size, size, 3]`` RGB in [0, 255] (unless a policy leaves it).
  """
  _, _, _, flip_seed = _seeds(seed, 4)

  def from_jpeg():
    box = train_crop_box(tf.image.extract_jpeg_shape(encoded), seed)
    return tf.image.decode_and_crop_jpeg(encoded, box, channels=3)

  def from_other():
    image = decode(encoded, image_format, height, width)
    y, x, h, w = tf.unstack(train_crop_box(tf.shape(image), seed))
    return tf.slice(image, tf.stack([y, x, 0]), tf.stack([h, w, 3]))
  image = tf.cond(tf.io.is_jpeg(encoded), from_jpeg, from_other)
  image.set_shape([None, None, 3])
  # The flip on the uint8 crop (a quarter of the bytes of the float
  # image): bicubic resizing is mirror-symmetric, so this is the flip of the
  # resized image up to float rounding (1e-4 of a pixel level).
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  # Bicubic resize reads uint8 as its values: no float copy of the crop.
  image = tf.image.resize(image, [size, size], method="bicubic")
  image = _clip_0_255(image)
  if policy is not None:
    image = policy(image, policy_seed(seed))
  return image


def colour_params(seed, jitter: float = 0.4, lighting: float = 0.1):
  """An image's colour-augmentation draws, from its seed: what
  ``imagenet_colour`` applies to a batch. The draws are those of
  ``color_jitter`` and ``pca_lighting`` for the same seed.

  Args:
    seed: the image's int32/int64 [2] stateless seed.
    jitter: colour jitter strength; 0 = off (factors 1, order 0).
    lighting: PCA lighting standard deviation; 0 = off (coefficients 0).

  Returns:
    (factors float32 [3]: brightness, contrast, saturation; order int32:
    index into the six orders; lighting float32 [3]: PCA coefficients).
  """
  _, jitter_seed, light_seed, _ = _seeds(seed, 4)
  if jitter > 0:
    order_seed, b_seed, c_seed, s_seed = _seeds(jitter_seed, 4)
    factors = tf.stack([1.0 + tf.random.stateless_uniform([], s, -jitter,
                                                          jitter)
                        for s in (b_seed, c_seed, s_seed)])
    order = tf.random.stateless_uniform([], order_seed, 0,
                                        len(_JITTER_ORDERS), dtype=tf.int32)
  else:
    factors, order = tf.ones([3]), tf.constant(0, tf.int32)
  if lighting > 0:
    alpha = tf.random.stateless_normal([3], light_seed, 0.0, lighting)
  else:
    alpha = tf.zeros([3])
  return factors, order, alpha


def imagenet_colour(images, params, jitter: float = 0.4,
                    lighting: float = 0.1, stats=None, bgr: bool = False):
  """Colour jitter, PCA lighting and normalisation of a batch, as one
  per-image affine colour map.

  Why one map: brightness, contrast and saturation blends, the lighting
  offset, scaling, normalisation and a BGR swap are all affine in the
  pixel's colour (contrast's grey level is the mean of a linear function of
  the image, so it follows from the image's mean colour). Composing them per
  image (3x3 matrices, in the image's drawn order) and applying the product
  once reads and writes the batch once instead of once per op, and gives
  ``color_jitter`` then ``pca_lighting`` then ``normalize`` up to float
  rounding.

  Args:
    images: float32 ``[B, H, W, 3]`` RGB in 0-255 units.
    params: ``colour_params`` of each image, batched (factors [B, 3],
      order [B], lighting [B, 3]).
    jitter: the jitter strength ``params`` were drawn with; 0 = skip.
    lighting: the lighting standard deviation; 0 = skip.
    stats: (mean, std) in 0-255 units overriding ImageNet's, or None.
    bgr: output BGR channels (Caffe models); ``stats`` then in BGR order.

  Returns:
    The normalised float32 ``[B, H, W, 3]`` batch.
  """
  factors, order, alpha = params
  images = tf.convert_to_tensor(images, tf.float32)
  batch = tf.shape(images)[0]
  eye = tf.eye(3, batch_shape=[batch])
  matrix = eye                      # colour map on [0, 1] units: M u + t
  offset = tf.zeros([batch, 3])
  if jitter > 0:
    gray = tf.constant([0.299, 0.587, 0.114])
    mean_colour = tf.reduce_mean(images, axis=[1, 2]) / 255.0   # [B, 3]
    steps = tf.gather(tf.constant(_JITTER_ORDERS, tf.int32), order)
    for k in range(3):
      op = steps[:, k]
      bright, contrast, sat = tf.unstack(factors, axis=1)
      # Brightness: a u.  Contrast: a u + (1 - a) mean(grey(u)).
      # Saturation: a u + (1 - a) grey(u) = (a I + (1 - a) 1 g^T) u.
      grey_level = tf.linalg.matvec(
          matrix, mean_colour) + offset                          # [B, 3]
      grey_level = tf.reduce_sum(grey_level * gray, axis=1)     # [B]
      sat_map = (sat[:, None, None] * eye +
                 (1.0 - sat)[:, None, None] * tf.ones([3, 1]) * gray)
      candidates_m = tf.stack([
          bright[:, None, None] * matrix,
          contrast[:, None, None] * matrix,
          tf.linalg.matmul(sat_map, matrix)], axis=1)           # [B, 3, 3, 3]
      candidates_t = tf.stack([
          bright[:, None] * offset,
          contrast[:, None] * offset + ((1.0 - contrast) *
                                        grey_level)[:, None],
          tf.linalg.matvec(sat_map, offset)], axis=1)           # [B, 3, 3]
      pick = tf.stack([tf.range(batch), op], axis=1)
      matrix = tf.gather_nd(candidates_m, pick)
      offset = tf.gather_nd(candidates_t, pick)
  if lighting > 0:
    eigvec = tf.constant(PCA_EIGVEC, tf.float32)
    offset += tf.linalg.matvec(eigvec, alpha * tf.constant(PCA_EIGVAL))
  mean, std = stats or (IMAGENET_MEAN, IMAGENET_STD)
  mean = tf.constant(mean, tf.float32)
  inv_std = 1.0 / tf.constant(std, tf.float32)
  if bgr:
    matrix, offset = matrix[:, ::-1], offset[:, ::-1]
  # x is in 0-255 units (u = x / 255): 255 (M u + t) = M x + 255 t, then
  # (. - mean) / std.
  matrix = matrix * inv_std[:, None]
  bias = (255.0 * offset - mean) * inv_std
  return tf.einsum("bhwc,bdc->bhwd", images, matrix) + bias[:, None, None, :]


def resize_short_and_crop(image, size: int):
  """Short side to round(size * 256 / 224), then the central size x size.

  Args:
    image: HWC RGB image in 0-255 units, any numeric dtype.
    size: output side in pixels.

  Returns:
    float32 ``[size, size, 3]`` in [0, 255] (bicubic, then clipped).
  """
  short = int(round(size * 256 / 224))
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = short / tf.reduce_min(shape)
  new_hw = tf.cast(tf.round(shape * scale), tf.int32)
  new_hw = tf.maximum(new_hw, size)
  if image.dtype != tf.uint8:  # uint8 is read as its values: no copy
    image = tf.cast(image, tf.float32)
  image = tf.image.resize(image, new_hw, method="bicubic")
  top = (new_hw[0] - size) // 2
  left = (new_hw[1] - size) // 2
  image = tf.slice(image, tf.stack([top, left, 0]), [size, size, 3])
  return _clip_0_255(image)


def imagenet_eval(image, size: int = 224, stats=None, bgr: bool = False):
  """The evaluation view of an ImageNet-style image, normalised.

  Args:
    image: decoded HWC RGB image in 0-255 units.
    size: output side in pixels (``resize_short_and_crop``).
    stats: (mean, std) in 0-255 units overriding ImageNet's, or None.
    bgr: output BGR channels (Caffe models).

  Returns:
    The normalised float32 ``[size, size, 3]`` image.
  """
  mean, std = stats or (IMAGENET_MEAN, IMAGENET_STD)
  return normalize(resize_short_and_crop(image, size), mean, std, bgr)

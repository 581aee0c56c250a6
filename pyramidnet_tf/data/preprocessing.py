"""How images are prepared for a model, as one value stored with it.

``Preprocessing`` is written into ``model_config.json`` and into exports, so
evaluation, export and prediction prepare images exactly as training did;
``preprocessing_for`` chooses it from the data's kind and the model's family.
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.data import augment
from pyramidnet_tf.data import autoaugment as autoaugment_lib
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf import options


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """How images are prepared; stored with checkpoints and exports.

  ``kind`` is the augmentation family: "cifar" (pad-and-crop, flip) or
  "imagenet" (distorted crop, jitter, lighting, flip; resize-and-crop eval).
  ``mean``/``std`` (0-255 units, in ``color`` order) override the default
  statistics: image folders trained CIFAR-style use ImageNet's, and imported
  checkpoints use their authors' convention (e.g. Caffe: BGR, mean
  104/117/124, std 1/0.017352). ``resize`` first resizes any decoded image to
  ``image_size`` (CIFAR-style augmentation of image folders).
  ``autoaugment`` (a policy name, autoaugment.AUTOAUGMENT_POLICIES) or
  ``randaugment`` ((N, M)) add a policy to training augmentation only.
  """

  kind: str              # "cifar" or "imagenet"
  image_size: int
  stats_dataset: str = "cifar10"   # CIFAR statistics to use
  convention: str = "pt"           # CIFAR convention
  color_jitter: float = 0.4
  lighting: float = 0.1
  color: str = "RGB"
  mean: Optional[Tuple[float, float, float]] = None
  std: Optional[Tuple[float, float, float]] = None
  resize: bool = False
  autoaugment: str = "none"
  randaugment: Optional[Tuple[int, int]] = None

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: dict) -> "Preprocessing":
    value = dict(value)
    for key in ("mean", "std"):
      if value.get(key) is not None:
        value[key] = tuple(float(v) for v in value[key])
    if value.get("randaugment") is not None:
      value["randaugment"] = tuple(int(v) for v in value["randaugment"])
    return cls(**value)

  @property
  def _stats(self):
    return (self.mean, self.std) if self.mean is not None else None

  @property
  def _policy(self):
    return autoaugment_lib.make_policy(self.autoaugment, self.randaugment)

  @property
  def _bgr(self) -> bool:
    return self.color.upper() == "BGR"

  def _sized(self, image):
    if not self.resize:
      return image
    resized = tf.image.resize(tf.cast(image, tf.float32),
                              [self.image_size, self.image_size],
                              method="bicubic", antialias=True)
    return tf.clip_by_value(resized, 0.0, 255.0)

  def eval_image(self, image_uint8):
    if self.kind == "cifar":
      return augment.cifar_eval(self._sized(image_uint8), self.stats_dataset,
                                self.convention, self.image_size, self._stats,
                                self._bgr)
    return augment.imagenet_eval(image_uint8, self.image_size, self._stats,
                                 self._bgr)

  def train_image(self, encoded, image_format, height, width, seed):
    if self.kind == "cifar":
      image = self._sized(augment.decode(encoded, image_format, height, width))
      return augment.cifar_train(image, seed, self.stats_dataset,
                                 self.convention, self.image_size,
                                 stats=self._stats, bgr=self._bgr,
                                 policy=self._policy)
    return augment.imagenet_train(encoded, image_format, height, width, seed,
                                  self.image_size, self.color_jitter,
                                  self.lighting, self._stats, self._bgr,
                                  policy=self._policy)

  @property
  def batched(self) -> bool:
    """The pipelines run in two parts (ImageNet-style): ``train_view`` /
    ``eval_view`` per image, then ``train_batch`` / ``eval_batch`` per
    batch. Else (CIFAR) ``train_image`` / ``eval_image`` alone."""
    return self.kind != "cifar"

  def train_view(self, encoded, image_format, height, width, seed):
    """The per-image part of ``train_image`` (``batched`` only).

    Args:
      encoded: scalar string tensor, the record's image bytes.
      image_format: the record's format string.
      height: image height in pixels (raw records only).
      width: image width in pixels (raw records only).
      seed: the image's int32/int64 [2] stateless seed.

    Returns:
      (float32 [size, size, 3] 0-255 image, its colour draws): what
      ``train_batch`` takes once batched.
    """
    image = augment.imagenet_view(encoded, image_format, height, width, seed,
                                  self.image_size, policy=self._policy)
    return image, augment.colour_params(seed, self.color_jitter,
                                        self.lighting)

  def train_batch(self, images, params):
    """The per-batch part of ``train_image``: colour jitter, lighting and
    normalisation of batched ``train_view`` outputs.

    Args:
      images: float32 [B, size, size, 3] 0-255 images.
      params: their colour draws, batched.
    """
    return augment.imagenet_colour(images, params, self.color_jitter,
                                   self.lighting, self._stats, self._bgr)

  def eval_view(self, image_uint8):
    """The per-image part of ``eval_image`` (resize and crop, not yet
    normalised: ``eval_batch`` does that per batch). CIFAR: the whole
    ``eval_image``.

    Args:
      image_uint8: decoded HWC RGB image.
    """
    if self.kind == "cifar":
      return self.eval_image(image_uint8)
    return augment.resize_short_and_crop(image_uint8, self.image_size)

  def eval_padding(self):
    """The ``eval_view`` of a padding example: the image that ``eval_batch``
    turns into all zeros (the mean colour; zeros for CIFAR)."""
    size = self.image_size
    if not self.batched:
      return tf.zeros([size, size, 3])
    mean, _ = self._stats or (augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    mean = tf.constant(mean, tf.float32)
    if self._bgr:  # normalize() reverses the channels before the mean
      mean = mean[::-1]
    return tf.broadcast_to(mean, [size, size, 3])

  def eval_batch(self, images):
    """Normalises a batch of ``eval_view`` outputs (ImageNet-style; CIFAR's
    are already final).

    Args:
      images: float32 [B, size, size, 3].
    """
    if self.kind == "cifar":
      return images
    mean, std = self._stats or (augment.IMAGENET_MEAN, augment.IMAGENET_STD)
    return augment.normalize(images, mean, std, self._bgr)


AUGMENTATIONS = options.AUGMENTATIONS


def preprocessing_for(info_dataset: str, model_dataset: str, image_size: int,
                      convention: str, augmentation: str = "auto",
                      autoaugment: str = "none",
                      randaugment: Optional[Tuple[int, int]] = None
                      ) -> Preprocessing:
  """The preprocessing of a data kind for a model.

  ``augmentation="auto"``: CIFAR pipeline for CIFAR data, ImageNet-style for
  ImageNet and image folders. ``"cifar"`` on folder data resizes every image
  to ``image_size`` and pads-and-crops it (ImageNet statistics): the right
  choice for small images such as digits or icons, which a distorted crop of
  8-100 % of the area would destroy.

  ``autoaugment`` / ``randaugment`` (--autoaugment, --randaugment) add an
  AutoAugment or RandAugment policy to either family's training pipeline.
  """
  if augmentation not in AUGMENTATIONS:
    raise ValueError(f"--augment must be one of {', '.join(AUGMENTATIONS)}; "
                     f"got {augmentation!r}")
  autoaugment_lib.make_policy(autoaugment, randaugment)  # ValueError if bad
  policy = {"autoaugment": autoaugment,
            "randaugment": tuple(randaugment) if randaugment else None}
  default = 224 if model_dataset == "imagenet" else 32
  if (info_dataset in manifest_lib.CIFAR_KINDS and
      augmentation in ("auto", "cifar")):
    return Preprocessing("cifar", image_size or 32, info_dataset, convention,
                         **policy)
  if augmentation == "cifar":
    return Preprocessing("cifar", image_size or default, info_dataset,
                         convention, mean=augment.IMAGENET_MEAN,
                         std=augment.IMAGENET_STD, resize=True, **policy)
  return Preprocessing("imagenet", image_size or default, **policy)

"""A trained model ready to predict: ``load_model`` and ``LoadedModel``.

    import pyramidnet_tf
    model = pyramidnet_tf.load_model("runs/c110")          # newest intact checkpoint
    model.classify(["cat.jpg", "dog.png"])                  # top-5 (name, index, probability)
    model.probabilities(["cat.jpg"])                        # numpy [1, num_classes]

A model directory (the trainer's or ``import_torch``'s) holds weights and
``model_config.json``; using it needs three more things the CLIs work out
each time: which weights (the newest intact checkpoint, the best
evaluation's, or the exponential moving average kept beside them), the
preprocessing the network was trained with (crop or resize, mean and std,
channel order of an imported model) and the class names. ``load_model``
gathers them through the same code as ``evaluate`` and ``export``:
``model_dir.open_model`` (newest intact checkpoint, damaged newer ones
skipped with a warning; raw or averaged weights) and ``model_dir.access``
(preprocessing, class names), so Python predictions equal the exported
SavedModel's.
"""

import dataclasses
import logging
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.model import network as network_lib
from pyramidnet_tf.model_dir import access
from pyramidnet_tf.model_dir import store
from pyramidnet_tf.serving import image_files

# What ``images`` may hold: a path, an image file's bytes, or a decoded
# uint8 HWC RGB array; a list of them, or a uint8 NHWC batch.
Image = Union[str, os.PathLike, bytes, np.ndarray]
_USE_EMA = {"auto": "auto", "yes": "yes", "no": "no", True: "yes",
            False: "no"}


@dataclasses.dataclass(frozen=True)
class Prediction:
  """One class of an image's top-k.

  Attributes:
    name: the class name (``LoadedModel.class_names``).
    index: the class index, the logit's position.
    probability: its softmax probability.
  """
  name: str
  index: int
  probability: float


class LoadedModel:
  """A model directory's network with its preprocessing and class names.

  Attributes:
    network: the ``PyramidNet`` holding the loaded weights; call it on
      preprocessed float32 NHWC images for logits.
    preprocessing: the ``Preprocessing`` of evaluation (``preprocess``
      applies it).
    class_names: one name per output, in class-index order.
    checkpoint: the prefix of the checkpoint the weights came from.
    ema: whether the weights are the run's exponential moving average.
    metadata: the "metadata" section of ``model_config.json``.
    model_dir: the directory it was loaded from.
    skipped: (checkpoint, reason) of each newer damaged checkpoint passed
      over.
  """

  def __init__(self, network: network_lib.PyramidNet,
               preprocessing: preprocessing_lib.Preprocessing,
               class_names: Sequence[str], checkpoint: str, ema: bool,
               metadata: Dict[str, Any], model_dir: str,
               skipped: Tuple[Tuple[str, str], ...] = ()):
    self.network = network
    self.preprocessing = preprocessing
    self.class_names = list(class_names)
    self.checkpoint = checkpoint
    self.ema = ema
    self.metadata = metadata
    self.model_dir = model_dir
    self.skipped = skipped
    size = preprocessing.image_size
    self._forward = tf.function(
        lambda x: network(x, training=False),
        input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)])

  def __repr__(self):
    return (f"LoadedModel({self.model_dir!r}, checkpoint="
            f"{os.path.basename(self.checkpoint)!r}, ema={self.ema}, "
            f"{self.network.num_classes} classes, "
            f"{self.preprocessing.image_size}x{self.preprocessing.image_size}"
            " input)")

  @property
  def image_size(self) -> int:
    """The side, in pixels, of the images the network is fed."""
    return self.preprocessing.image_size

  def preprocess(self, images) -> tf.Tensor:
    """Decodes and prepares images as evaluation does.

    Args:
      images: one image or a list of them: a file path, an image file's
        bytes (JPEG, PNG, GIF, BMP, WebP, TIFF; told apart by content), or a
        decoded uint8 ``[H, W, 3]`` RGB array; or a uint8 ``[N, H, W, 3]``
        batch.

    Returns:
      float32 ``[N, image_size, image_size, 3]``: resized or cropped and
      normalised (channel order included) as the model was trained.

    Raises:
      image_files.BadFile: for a file that is missing or not a readable
        image, naming it.
      ValueError: for an array that is not uint8 RGB.
    """
    prepared = [self.preprocessing.eval_image(_decoded(image))
                for image in _as_list(images)]
    if not prepared:
      size = self.image_size
      return tf.zeros([0, size, size, 3], tf.float32)
    return tf.stack(prepared)

  def logits(self, images, batch_size: int = 64) -> np.ndarray:
    """The network's logits for ``images`` (as ``preprocess`` takes them).

    Args:
      images: see ``preprocess``.
      batch_size: images per forward pass.

    Returns:
      float32 numpy ``[N, num_classes]``.
    """
    batch = self.preprocess(images)
    if batch.shape[0] == 0:
      return np.zeros([0, self.network.num_classes], np.float32)
    return np.concatenate([self._forward(batch[i:i + batch_size]).numpy()
                           for i in range(0, batch.shape[0], batch_size)])

  def probabilities(self, images, batch_size: int = 64) -> np.ndarray:
    """Softmax of ``logits``: float32 numpy ``[N, num_classes]``."""
    return tf.nn.softmax(self.logits(images, batch_size)).numpy()

  def classify(self, images, top_k: int = 5,
               batch_size: int = 64) -> List[List[Prediction]]:
    """The ``top_k`` most probable classes of each image, most probable
    first (what ``predict`` prints for an export of this model).

    Args:
      images: see ``preprocess``.
      top_k: classes per image (at most ``num_classes``).
      batch_size: images per forward pass.
    """
    if top_k < 1:
      raise ValueError(f"top_k must be >= 1; got {top_k}")
    probabilities = self.probabilities(images, batch_size)
    k = min(top_k, probabilities.shape[1])
    return [[Prediction(self.class_names[i], int(i), float(row[i]))
             for i in np.argsort(-row, kind="stable")[:k]]
            for row in probabilities]


def _as_list(images) -> list:
  if isinstance(images, np.ndarray):
    return list(images) if images.ndim == 4 else [images]
  if isinstance(images, (str, bytes, os.PathLike)):
    return [images]
  return list(images)


def _decoded(image) -> tf.Tensor:
  """uint8 HWC RGB of one image (``LoadedModel.preprocess``)."""
  if isinstance(image, np.ndarray):
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(
          "an image array must be decoded uint8 RGB [height, width, 3]; got "
          f"{image.dtype} {list(image.shape)} (feed preprocessed float "
          "images to LoadedModel.network(images, training=False) instead)")
    return tf.constant(image)
  if isinstance(image, bytes):
    data, _ = image_files.image_bytes(image, "load_model")
  else:
    path = os.fspath(image)
    try:
      data, _ = image_files.read_image(path, "load_model")
    except image_files.BadFile as e:
      raise image_files.BadFile(f"{path}: {e}") from None
  try:
    decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
  except tf.errors.InvalidArgumentError as e:
    name = "the image bytes" if isinstance(image, bytes) else os.fspath(image)
    raise image_files.BadFile(f"{name}: corrupt or truncated image "
                              f"({e.message.splitlines()[0]})") from None
  return decoded


def load_model(model_dir: str, checkpoint: Optional[str] = None,
               use_ema: Union[str, bool] = "auto", *,
               data_dir: Optional[str] = None,
               warn: Callable[[str], None] = logging.warning
               ) -> LoadedModel:
  """Loads a model directory's network with what predicting needs.

  Args:
    model_dir: a directory written by ``pyramidnet_tf.train`` or
      ``pyramidnet_tf.import_torch``.
    checkpoint: None for the newest intact checkpoint (newer damaged ones
      are skipped with a warning, as the trainer resumes); "best" for the
      best evaluation's, kept in ``<model_dir>/best/``; or a checkpoint
      prefix (``ckpt-N``, absolute or relative to ``model_dir``), which must
      be intact.
    use_ema: "auto" (the exponential moving average of the weights when the
      run kept one, ``--ema_decay``), "yes"/True or "no"/False.
    data_dir: a data directory whose manifest supplies the class names
      (and the data kind) when the model directory records none, as an
      ``import_torch`` directory does; None for none.
    warn: called with one line when newer checkpoints were skipped.

  Returns:
    The ``LoadedModel``.

  Raises:
    FileNotFoundError: if ``model_dir`` has no ``model_config.json``, no
      checkpoint, no best checkpoint for "best", or not ``checkpoint``.
    ValueError: for a damaged ``checkpoint``, a directory without an intact
      one, weights that do not fit the config, a bad ``use_ema``, or
      ``use_ema`` "yes" for a checkpoint without averaged weights.
  """
  if use_ema not in _USE_EMA:
    raise ValueError("use_ema must be 'auto', 'yes', 'no', True or False; "
                     f"got {use_ema!r}")
  opened = store.open_model(model_dir, checkpoint, warn=warn,
                            use_ema=_USE_EMA[use_ema])
  info = manifest_lib.read_manifest(data_dir) if data_dir else None
  preprocessing = access.preprocessing_of(
      opened.metadata, opened.config["model"], info=info)
  class_names = access.class_names_of(opened.metadata,
                                      opened.model.num_classes, info)
  return LoadedModel(opened.model, preprocessing, class_names,
                     opened.checkpoint, opened.ema, opened.metadata, model_dir,
                     opened.skipped)

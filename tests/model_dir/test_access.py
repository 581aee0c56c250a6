"""model_dir: the preprocessing a model directory's network expects."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.convert import conventions
from pyramidnet_tf.data import augment
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.model_dir import access as model_dir

CONFIG = {"dataset": "imagenet"}
CAFFE = {"color": "BGR", "scale": 1.0, "mean": [104.0, 117.0, 124.0],
         "std": [1 / 0.017352] * 3}


def _image():
  rng = np.random.RandomState(0)
  return tf.constant(rng.randint(0, 256, [40, 50, 3]).astype(np.uint8))


def test_caffe_convention_gives_bgr_mean_subtracted_input():
  prep = model_dir.preprocessing_of({"input_convention": CAFFE}, CONFIG,
                                    image_size=32)
  got = prep.eval_image(_image()).numpy()
  cropped = augment.resize_short_and_crop(_image(), 32).numpy()
  want = (cropped[..., ::-1] - np.array([104.0, 117.0, 124.0])) * 0.017352
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
  # The default (ImageNet RGB statistics) is a different input.
  default = model_dir.preprocessing_of({}, CONFIG, image_size=32)
  assert np.abs(default.eval_image(_image()).numpy() - got).max() > 0.5


def test_torch_conventions_equal_the_defaults():
  for dataset in ("imagenet", "cifar10"):
    spec = conventions.TORCH_INPUT_CONVENTION[dataset]
    imported = model_dir.preprocessing_of({"input_convention": spec},
                                          {"dataset": dataset})
    default = model_dir.preprocessing_of({}, {"dataset": dataset})
    image = _image() if dataset == "imagenet" else _image()[:32, :32]
    np.testing.assert_allclose(imported.eval_image(image).numpy(),
                               default.eval_image(image).numpy(), rtol=1e-4,
                               atol=1e-4)


def test_preprocessing_json_round_trip_keeps_overrides():
  prep = model_dir.preprocessing_of({"input_convention": CAFFE}, CONFIG)
  again = preprocessing_lib.Preprocessing.from_json(prep.to_json())
  assert again == prep and again.color == "BGR"


def test_cifar_style_augmentation_for_image_folders():
  prep = preprocessing_lib.preprocessing_for("folder", "cifar10", 32, "pt",
                                          "cifar")
  assert prep.kind == "cifar" and prep.resize
  image = _image()  # 40x50: resized to 32x32, not cropped
  out = prep.eval_image(image).numpy()
  assert out.shape == (32, 32, 3)
  resized = tf.image.resize(tf.cast(image, tf.float32), [32, 32],
                            method="bicubic", antialias=True)
  want = (np.clip(resized.numpy(), 0, 255) - np.array(augment.IMAGENET_MEAN)
          ) / np.array(augment.IMAGENET_STD)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-4)
  encoded = tf.io.encode_png(image)
  train = prep.train_image(encoded, tf.constant("PNG"), 40, 50,
                           tf.constant([1, 2], tf.int64))
  assert train.shape == (32, 32, 3)
  assert preprocessing_lib.preprocessing_for("folder", "cifar10", 0, "pt").kind \
      == "imagenet"
  with pytest.raises(ValueError, match="--augment must be one of"):
    preprocessing_lib.preprocessing_for("folder", "cifar10", 0, "pt", "heavy")

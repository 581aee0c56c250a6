"""Augmentation: both CIFAR conventions, ImageNet crops, reproducibility."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pyramidnet_tf.data import augment


def _png(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="PNG")
  return buffer.getvalue()


def _jpeg(array):
  buffer = io.BytesIO()
  Image.fromarray(array).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def test_cifar_stats_by_convention():
  assert augment.cifar_stats("cifar100", "pt") == augment.CIFAR_STATS["cifar10"]
  assert augment.cifar_stats("cifar100", "fb") == augment.CIFAR_STATS[
      "cifar100"]
  with pytest.raises(ValueError, match="--cifar_convention must be one of "
                     "pt, fb"):
    augment.cifar_stats("cifar10", "tv")


def _padded_values(convention):
  """Values that appear in crops of a constant mid-grey image."""
  image = tf.fill([32, 32, 3], tf.constant(128, tf.uint8))
  values = set()
  for i in range(40):
    out = augment.cifar_train(image, tf.constant([i, 7], tf.int64), "cifar10",
                              convention).numpy()
    values.update(round(float(v), 4) for v in out[..., 0].ravel())
  return values


def test_fb_pads_with_the_mean_colour_pt_pads_black():
  mean, std = augment.CIFAR_STATS["cifar10"]
  grey = round((128 - mean[0]) / std[0], 4)
  black = round((0 - mean[0]) / std[0], 4)
  assert _padded_values("fb") == {grey, 0.0}
  assert _padded_values("pt") == {grey, black}


def test_same_seed_same_augmentation():
  image = tf.constant(np.random.default_rng(0).integers(
      0, 255, (32, 32, 3), dtype=np.uint8))
  seed = tf.constant([3, 4], tf.int64)
  a = augment.cifar_train(image, seed, "cifar10", "pt")
  b = augment.cifar_train(image, seed, "cifar10", "pt")
  c = augment.cifar_train(image, tf.constant([3, 5], tf.int64), "cifar10",
                          "pt")
  np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert a.shape == (32, 32, 3)
  assert not np.array_equal(a.numpy(), c.numpy())


@pytest.mark.parametrize("encoder,fmt", [(_jpeg, "JPEG"), (_png, "PNG")])
def test_imagenet_train_crops_to_size(encoder, fmt):
  array = np.random.default_rng(1).integers(0, 255, (60, 90, 3),
                                            dtype=np.uint8)
  encoded = tf.constant(encoder(array))
  out = augment.imagenet_train(encoded, tf.constant(fmt), 60, 90,
                               tf.constant([1, 2], tf.int64), size=24)
  assert out.shape == (24, 24, 3)
  assert np.isfinite(out.numpy()).all()


def test_imagenet_eval_resizes_short_side_then_centre_crops():
  # Left half black, right half white, wide image: the centre crop sees both.
  array = np.zeros((64, 128, 3), np.uint8)
  array[:, 64:] = 255
  out = augment.resize_short_and_crop(tf.constant(array), 56).numpy()
  assert out.shape == (56, 56, 3)
  # short side 64 -> 64 (56*256/224 = 64): crop columns 36..92 of 128.
  assert out[:, :20].max() < 1 and out[:, -20:].min() > 254


def test_raw_and_encoded_decode_identically():
  array = np.random.default_rng(2).integers(0, 255, (8, 6, 3),
                                            dtype=np.uint8)
  raw = augment.decode(tf.constant(array.tobytes()), tf.constant("RAW"), 8, 6)
  png = augment.decode(tf.constant(_png(array)), tf.constant("PNG"), 0, 0)
  np.testing.assert_array_equal(raw.numpy(), array)
  np.testing.assert_array_equal(png.numpy(), array)


def test_colour_jitter_and_lighting_change_colours_reproducibly():
  image = tf.random.stateless_uniform([8, 8, 3], [0, 1])
  seed = tf.constant([5, 6], tf.int64)
  a = augment.color_jitter(image, seed)
  np.testing.assert_array_equal(a.numpy(),
                                augment.color_jitter(image, seed).numpy())
  assert not np.allclose(a.numpy(), image.numpy())
  b = augment.pca_lighting(image, seed)
  delta = (b - image).numpy()
  # Lighting adds one RGB offset to every pixel.
  np.testing.assert_allclose(delta, np.broadcast_to(delta[0, 0], delta.shape),
                             atol=1e-6)


def _invert(image, seed):
  del seed
  return tf.cast(255 - tf.cast(image, tf.int32), image.dtype)


def test_cifar_policy_runs_after_pad_crop_flip_before_normalising():
  image = tf.constant(np.random.default_rng(3).integers(
      0, 255, (32, 32, 3), dtype=np.uint8))
  mean, std = np.array(augment.CIFAR_STATS["cifar10"][0]), np.array(
      augment.CIFAR_STATS["cifar10"][1])
  for i in range(6):
    seed = tf.constant([i, 9], tf.int64)
    plain = augment.cifar_train(image, seed, "cifar10", "pt").numpy()
    policy = augment.cifar_train(image, seed, "cifar10", "pt",
                                 policy=_invert).numpy()
    # The same crop and flip; the black padding was inverted too (to 255),
    # so the policy saw the padded crop.
    np.testing.assert_allclose(policy * std + mean,
                               255 - (plain * std + mean), atol=1e-3)
  # fb pads with the mean colour after normalising: the policy ran before,
  # so padding stays exactly 0 and the rest is the inverted image.
  seed = tf.constant([1, 9], tf.int64)
  plain = augment.cifar_train(image, seed, "cifar10", "fb").numpy()
  policy = augment.cifar_train(image, seed, "cifar10", "fb",
                               policy=_invert).numpy()
  pad = (plain == 0).all(axis=-1)
  assert pad.any()
  assert (policy[pad] == 0).all()
  np.testing.assert_allclose((policy * std + mean)[~pad],
                             255 - (plain * std + mean)[~pad], atol=1e-3)


def test_policy_gets_its_own_reproducible_seed():
  seeds = []

  def record(image, seed):
    seeds.append(seed.numpy().tolist())
    return image
  image = tf.zeros([32, 32, 3], tf.uint8)
  for s in ([1, 2], [1, 2], [1, 3]):
    augment.cifar_train(image, tf.constant(s, tf.int64), "cifar10", "pt",
                        policy=record)
  assert seeds[0] == seeds[1] and seeds[0] != seeds[2]
  assert seeds[0] not in ([1, 2], [1, 3])


def test_imagenet_policy_sees_the_flipped_0_255_image():
  array = np.random.default_rng(4).integers(0, 255, (60, 90, 3),
                                            dtype=np.uint8)
  encoded = tf.constant(_png(array))
  mean, std = np.array(augment.IMAGENET_MEAN), np.array(augment.IMAGENET_STD)
  seen = []

  def invert_float(image, seed):
    del seed
    seen.append(image.numpy())
    return 255.0 - image
  for i in range(3):
    seed = tf.constant([i, 2], tf.int64)
    plain = augment.imagenet_train(encoded, tf.constant("PNG"), 60, 90, seed,
                                   size=24, jitter=0, lighting=0).numpy()
    policy = augment.imagenet_train(encoded, tf.constant("PNG"), 60, 90,
                                    seed, size=24, jitter=0, lighting=0,
                                    policy=invert_float).numpy()
    np.testing.assert_allclose(seen[-1], plain * std + mean, atol=1e-3)
    np.testing.assert_allclose(policy * std + mean,
                               255 - (plain * std + mean), atol=1e-3)

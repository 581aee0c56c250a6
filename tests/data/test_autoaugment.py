"""AutoAugment / RandAugment operations, policies, seeding and flags."""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.data import augment_ops as ops
from pyramidnet_tf.data import autoaugment as aa
from tests import train_fixtures as fx

RNG_IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3),
                                              dtype=np.uint8)


def _seed(a, b=7):
  return tf.constant([a, b], tf.int64)


@pytest.mark.parametrize("name", sorted(ops.OPS))
@pytest.mark.parametrize("magnitude", [0, 5, 10])
def test_every_op_keeps_shape_dtype_and_range(name, magnitude):
  for dtype in (tf.uint8, tf.float32):
    image = tf.cast(tf.constant(RNG_IMAGE), dtype)
    for sign in (-1.0, 1.0):
      out = ops.apply_op(name, image, magnitude, sign)
      assert out.dtype == dtype and out.shape == (32, 32, 3)
      values = out.numpy()
      assert values.min() >= 0 and values.max() <= 255


def test_value_ops_known_answers():
  image = tf.constant(RNG_IMAGE)
  x = RNG_IMAGE.astype(np.int32)
  np.testing.assert_array_equal(ops.identity(image).numpy(), RNG_IMAGE)
  np.testing.assert_array_equal(ops.invert(image).numpy(), 255 - x)
  np.testing.assert_array_equal(ops.solarize(image, 100).numpy(),
                                np.where(x >= 100, 255 - x, x))
  np.testing.assert_array_equal(ops.solarize(image, 256).numpy(), RNG_IMAGE)
  np.testing.assert_array_equal(ops.posterize(image, 3).numpy(), x & 0b11100000)
  np.testing.assert_array_equal(ops.posterize(image, 8).numpy(), RNG_IMAGE)
  np.testing.assert_array_equal(ops.brightness(image, 1.0).numpy(), RNG_IMAGE)
  assert ops.brightness(image, 0.0).numpy().max() == 0
  grey = ops.color(image, 0.0).numpy().astype(int)
  assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1  # no saturation


def test_magnitude_mapping_follows_the_tf_scale():
  image = tf.constant(RNG_IMAGE)
  def param(name, magnitude, sign=1.0, x=image):
    return float(ops.op_parameter(name, magnitude, x, sign))
  assert param("Rotate", 10) == pytest.approx(30.0)
  assert param("Rotate", 10, -1.0) == pytest.approx(-30.0)
  assert param("ShearX", 5) == pytest.approx(0.15)
  assert param("TranslateX", 9) == pytest.approx(9.0)
  big = tf.zeros([64, 64, 3], tf.uint8)  # translation scales with the width
  assert param("TranslateY", 9, -1.0, big) == pytest.approx(-18.0)
  assert param("Color", 5) == pytest.approx(1.0)
  assert param("Sharpness", 0) == pytest.approx(0.1)
  assert param("Solarize", 0) == 256
  assert param("Solarize", 10) == 0
  assert param("Posterize", 7) == 6
  assert param("Posterize", 30) == 0  # clamped
  # Magnitude 0 of a signed op is the identity.
  for name in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"):
    np.testing.assert_array_equal(ops.apply_op(name, image, 0, -1.0).numpy(),
                                  RNG_IMAGE)


def test_translate_shifts_and_fills_grey():
  image = tf.constant(RNG_IMAGE)
  right = ops.translate_x(image, 3).numpy()
  np.testing.assert_array_equal(right[:, 3:], RNG_IMAGE[:, :-3])
  assert (right[:, :3] == 128).all()
  up = ops.translate_y(image, -2).numpy()
  np.testing.assert_array_equal(up[:-2], RNG_IMAGE[2:])
  assert (up[-2:] == 128).all()


def test_rotate_and_shear():
  image = tf.constant(RNG_IMAGE)
  np.testing.assert_array_equal(ops.rotate(image, 0.0).numpy(), RNG_IMAGE)
  np.testing.assert_array_equal(ops.rotate(image, 90.0).numpy(),
                                np.rot90(RNG_IMAGE, 1))
  np.testing.assert_array_equal(ops.rotate(image, -90.0).numpy(),
                                np.rot90(RNG_IMAGE, -1))
  corners = ops.rotate(image, 45.0).numpy()
  assert (corners[0, 0] == 128).all() and (corners[-1, -1] == 128).all()
  # Shear x' = x + k y: row y moves by -k*y pixels; row 0 stays.
  sheared = ops.shear_x(image, 0.25).numpy()
  np.testing.assert_array_equal(sheared[0], RNG_IMAGE[0])
  np.testing.assert_array_equal(sheared[8, :-2], RNG_IMAGE[8, 2:])
  assert (sheared[8, -2:] == 128).all()
  np.testing.assert_array_equal(ops.shear_y(image, 0.25).numpy()[:-2, 8],
                                RNG_IMAGE[2:, 8])


def test_equalize_and_autocontrast():
  flat = tf.fill([8, 8, 3], tf.constant(77, tf.uint8))
  np.testing.assert_array_equal(ops.equalize(flat).numpy(), flat.numpy())
  np.testing.assert_array_equal(ops.autocontrast(flat).numpy(), flat.numpy())
  # Two levels, half each (PIL's rule: step = 512 // 255 = 2, lut[50] =
  # 1 // 2 = 0, lut[200] = min((512 + 1) // 2, 255)); on 16 pixels step is 0
  # and PIL leaves the image alone.
  two = np.full((32, 32, 3), 200, np.uint8)
  two[:16] = 50
  out = ops.equalize(tf.constant(two)).numpy()
  assert (out[:16] == 0).all() and (out[16:] == 255).all()
  small = two[14:18, :4]  # two rows of each level
  np.testing.assert_array_equal(ops.equalize(tf.constant(small)).numpy(), small)
  # Uniform histogram: equalisation is (close to) the identity.
  ramp = np.tile(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), [1, 1, 3])
  assert np.abs(ops.equalize(tf.constant(ramp)).numpy().astype(int) -
                ramp).max() <= 1
  dull = (RNG_IMAGE // 4 + 60).astype(np.uint8)   # values in [60, 123]
  stretched = ops.autocontrast(tf.constant(dull)).numpy()
  for c in range(3):
    assert stretched[..., c].min() == 0 and stretched[..., c].max() == 255
  # Order is kept: the mapping is monotone.
  order = np.argsort(dull[..., 0].ravel(), kind="stable")
  assert (np.diff(stretched[..., 0].ravel()[order].astype(int)) >= 0).all()


def test_blend_ops_are_identity_at_factor_one_and_move_otherwise():
  image = tf.constant(RNG_IMAGE)
  for op in (ops.color, ops.contrast, ops.brightness, ops.sharpness):
    np.testing.assert_array_equal(op(image, 1.0).numpy(), RNG_IMAGE)
    assert not np.array_equal(op(image, 1.9).numpy(), RNG_IMAGE)
  flat = ops.contrast(image, 0.0).numpy()
  assert flat.min() == flat.max()  # all the mean grey
  # Sharpness leaves the one-pixel border alone (as PIL's SMOOTH filter).
  sharp = ops.sharpness(image, 0.1).numpy()
  np.testing.assert_array_equal(sharp[0], RNG_IMAGE[0])
  np.testing.assert_array_equal(sharp[:, -1], RNG_IMAGE[:, -1])


def test_published_cifar10_policy():
  table = aa.CIFAR10_POLICY
  assert len(table) == 25
  assert all(len(s) == 2 for s in table)
  assert table[0] == (("Invert", 0.1, 7), ("Contrast", 0.2, 6))
  assert table[3] == (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9))
  assert table[14] == (("Solarize", 0.5, 2), ("Invert", 0.0, 3))
  assert table[15] == (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0))
  assert table[24] == (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1))
  for subpolicy in table + aa.IMAGENET_POLICY:
    for name, probability, magnitude in subpolicy:
      assert name in ops.OPS and 0 <= probability <= 1 and 0 <= magnitude <= 9
  assert len(aa.IMAGENET_POLICY) == 25
  assert aa.IMAGENET_POLICY[0] == (("Posterize", 0.4, 8), ("Rotate", 0.6, 9))
  with pytest.raises(ValueError, match="--autoaugment must be one of none, "
                     "cifar10, imagenet"):
    aa.policy_table("svhn")


def test_autoaugment_applies_the_chosen_subpolicy():
  image = tf.constant(RNG_IMAGE)
  indices = set()
  for i in range(40):
    seed = _seed(i)
    index, draws, signs = aa.autoaugment_choices(seed, 25)
    indices.add(int(index))
    expected = image
    for j, (name, probability, magnitude) in enumerate(
        aa.CIFAR10_POLICY[int(index)]):
      if float(draws[j]) < probability:
        expected = ops.apply_op(name, expected, magnitude, signs[j])
    np.testing.assert_array_equal(aa.autoaugment(image, seed).numpy(),
                                  expected.numpy())
  assert len(indices) > 15  # uniform over 25: 40 draws hit most of them


def test_same_seed_same_image_different_seed_different():
  image = tf.constant(RNG_IMAGE)
  for fn in (lambda s: aa.autoaugment(image, s),
             lambda s: aa.randaugment(image, s, 2, 9)):
    a = fn(_seed(3)).numpy()
    np.testing.assert_array_equal(a, fn(_seed(3)).numpy())
    outputs = [fn(_seed(i)).numpy() for i in range(4, 12)]
    assert any(not np.array_equal(a, o) for o in outputs)
    assert len({o.tobytes() for o in outputs}) > 3


@pytest.mark.parametrize("layers", [1, 3])
def test_randaugment_applies_n_ops(layers):
  image = tf.constant(RNG_IMAGE)
  chosen = set()
  for i in range(12):
    seed = _seed(i, 11)
    indices, signs = aa.randaugment_choices(seed, layers)
    assert indices.shape == (layers,)
    expected = image
    for layer in range(layers):
      name = aa.RANDAUGMENT_OPS[int(indices[layer])]
      chosen.add(name)
      expected = ops.apply_op(name, expected, 9, signs[layer])
    np.testing.assert_array_equal(
        aa.randaugment(image, seed, layers, 9).numpy(), expected.numpy())
  assert len(chosen) > 5
  assert len(aa.RANDAUGMENT_OPS) == 14


def test_policies_run_in_a_parallel_dataset_map():
  images = tf.constant(np.stack([RNG_IMAGE] * 6))
  policy = aa.make_policy("cifar10")

  def build():
    ds = tf.data.Dataset.from_tensor_slices(images).enumerate()
    ds = ds.map(lambda i, x: policy(x, tf.stack([tf.constant(5, tf.int64),
                                                 i])),
                num_parallel_calls=4, deterministic=True)
    return np.stack(list(ds.as_numpy_iterator()))
  first = build()
  assert first.shape == (6, 32, 32, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, build())


def test_flag_parsing_and_errors():
  assert aa.parse_randaugment([]) is None
  assert aa.parse_randaugment(["2", "10"]) == (2, 10)
  assert aa.parse_randaugment([" 3", "0 "]) == (3, 0)
  for bad in (["0", "5"], ["2", "11"], ["2", "14"], ["2", "-1"], ["2"],
              ["a", "b"], ["1", "2", "3"]):
    with pytest.raises(ValueError, match=r"--randaugment must be N,M .*"
                       r"0 <= M <= 10 \(magnitude on AutoAugment's 0..10 "
                       r"scale, 10 = its strongest = torchvision's "
                       r"RandAugment magnitude 30"):
      aa.parse_randaugment(bad)
  assert aa.make_policy() is None
  assert aa.make_policy("cifar10") is not None
  assert aa.make_policy("none", (2, 5)) is not None
  # The library refuses what the flag refuses (configs built in code).
  with pytest.raises(ValueError, match="0 <= M <= 10"):
    aa.make_policy("none", (2, 14))
  with pytest.raises(ValueError, match="--autoaugment and --randaugment"):
    aa.make_policy("cifar10", (2, 5))
  with pytest.raises(ValueError, match="--autoaugment must be one of"):
    aa.make_policy("svhn")


@pytest.mark.parametrize("flags,message", [
    (["--randaugment=2,40"], "--randaugment must be N,M with integers N >= 1"),
    (["--randaugment=2,14"], "0 <= M <= 10 (magnitude on AutoAugment's"),
    (["--autoaugment=cifar10", "--randaugment=2,9"],
     "--autoaugment and --randaugment are alternatives"),
])
def test_trainer_rejects_bad_policy_flags(tmp_path, flags, message):
  proc = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.train"] + fx.TINY_MODEL +
      [f"--model_dir={tmp_path}", f"--data_dir={tmp_path}"] + flags,
      cwd=fx.REPO, env=fx.cli_env(), capture_output=True, text=True,
      timeout=120, check=False)
  assert proc.returncode != 0
  assert message in proc.stderr, proc.stderr[-2000:]

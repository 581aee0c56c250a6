"""CutMix, Mixup and Cutout (pyramidnet_tf.training.mixing) against their definitions.

Images are random normals, so every pixel value identifies its image: which
pixels came from the permuted batch can be read off pixel by pixel.
"""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import mixing

B, H, W = 6, 10, 12


def _batch(seed=0, batch=B, height=H, width=W):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(batch, height, width, 3)).astype(np.float32)
  return tf.constant(images), tf.range(batch)


def _seeds(n):
  return [tf.constant([11, i], tf.int64) for i in range(n)]


_cutmix = tf.function(lambda x, y, s: mixing.cutmix(x, y, s, 1.0))
_box = tf.function(lambda s, lam: mixing.cutmix_box(s, H, W, lam))


def test_cutmix_label_weight_is_the_pasted_area_fraction():
  images, labels = _batch()
  x = images.numpy()
  seen_partial = 0
  for seed in _seeds(40):
    out = _cutmix(images, labels, seed)
    mixed, perm = out.images.numpy(), out.labels_b.numpy()
    np.testing.assert_array_equal(out.labels_a.numpy(), labels.numpy())
    assert sorted(perm) == list(range(B))
    masks = []
    for i in range(B):
      from_perm = np.all(mixed[i] == x[perm[i]], axis=-1)
      from_self = np.all(mixed[i] == x[i], axis=-1)
      assert np.all(from_perm | from_self), "pixels from a third image"
      if perm[i] != i:
        masks.append(from_perm)
    assert masks
    mask = masks[0]
    for other in masks[1:]:   # one box for the whole batch
      np.testing.assert_array_equal(other, mask)
    rows, cols = np.nonzero(mask)
    if rows.size:
      # a rectangle: its bounding box is filled
      assert mask[rows.min():rows.max() + 1,
                  cols.min():cols.max() + 1].all()
    lam = float(out.lam.numpy())
    assert 1.0 - lam == pytest.approx(mask.mean(), abs=1e-6)
    seen_partial += 0.0 < mask.mean() < 1.0
  assert seen_partial > 20


def test_cutmix_box_follows_clovaai_and_is_clipped():
  for lam in (0.36, 0.75):   # cut sides int(10 * 0.8) = 8 / int(10 * 0.5) = 5
    ratio = np.sqrt(1.0 - lam)
    half_h, half_w = int(H * ratio) // 2, int(W * ratio) // 2
    centres_y, clipped = set(), 0
    for seed in _seeds(150):
      y1, y2, x1, x2 = [int(v) for v in _box(seed, tf.constant(lam, tf.float64))]
      # some integer centre in the image produces exactly this box
      cy = [c for c in range(H) if (y1, y2) == (
          max(c - half_h, 0), min(c + half_h, H))]
      cx = [c for c in range(W) if (x1, x2) == (
          max(c - half_w, 0), min(c + half_w, W))]
      assert cy and cx, (lam, y1, y2, x1, x2)
      centres_y.update(cy)
      clipped += (y2 - y1) < 2 * half_h or (x2 - x1) < 2 * half_w
    assert centres_y == set(range(H))   # the centre ranges over the image
    assert clipped > 0


def test_cutmix_lambda_is_recomputed_after_clipping():
  images, labels = _batch()
  for seed in _seeds(30):
    out = _cutmix(images, labels, seed)
    # the box of this seed, before lam was recomputed
    lam0 = mixing.sample_beta(
        tf.random.experimental.stateless_fold_in(seed, 1), 1.0)
    y1, y2, x1, x2 = [int(v) for v in mixing.cutmix_box(seed, H, W, lam0)]
    expected = 1.0 - (y2 - y1) * (x2 - x1) / (H * W)
    assert float(out.lam) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("concentration", [0.4, 1.0, 3.0])
def test_beta_draws_have_beta_moments(concentration):
  draw = tf.function(lambda s: mixing.sample_beta(s, concentration))
  assert draw(_seeds(1)[0]).dtype == tf.float64
  values = np.array([float(draw(s)) for s in _seeds(1500)])
  assert values.min() >= 0.0 and values.max() <= 1.0
  variance = 1.0 / (4.0 * (2.0 * concentration + 1.0))   # Beta(c, c)
  assert values.mean() == pytest.approx(0.5, abs=0.04)
  assert values.var() == pytest.approx(variance, rel=0.15)
  # the cumulative distribution: Beta(1, 1) is uniform; small c piles up at
  # the ends, large c in the middle
  middle = np.mean(np.abs(values - 0.5) < 0.25)
  if concentration == 1.0:
    assert middle == pytest.approx(0.5, abs=0.05)
  elif concentration < 1.0:
    assert middle < 0.45
  else:
    assert middle > 0.6


def test_mixup_is_a_convex_combination_with_the_permuted_batch():
  images, labels = _batch()
  x = images.numpy()
  mix = tf.function(lambda s: mixing.mixup(images, labels, s, 1.0))
  lams = []
  for seed in _seeds(300):
    out = mix(seed)
    lam, perm = float(out.lam), out.labels_b.numpy()
    if len(lams) < 5:
      np.testing.assert_allclose(out.images.numpy(),
                                 lam * x + (1.0 - lam) * x[perm], rtol=1e-5,
                                 atol=1e-6)
      np.testing.assert_array_equal(out.labels_a.numpy(), labels.numpy())
    lams.append(lam)
  assert np.mean(lams) == pytest.approx(0.5, abs=0.05)
  assert np.std(lams) == pytest.approx(np.sqrt(1.0 / 12.0), rel=0.15)


def _zero_boxes(out):
  """Per image, (y1, y2, x1, x2) of its zeroed pixels; checks it is a box."""
  boxes = []
  for image in out:
    zero = np.all(image == 0.0, axis=-1)
    rows, cols = np.nonzero(zero)
    assert rows.size, "no pixel was cut out"
    y1, y2, x1, x2 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert zero[y1:y2, x1:x2].all() and zero.sum() == (y2 - y1) * (x2 - x1)
    boxes.append((y1, y2, x1, x2))
  return boxes


@pytest.mark.parametrize("size", [4, 16])
def test_cutout_zeroes_one_clipped_square_per_image(size):
  images, _ = _batch(batch=16)
  x = np.abs(images.numpy()) + 0.1     # no zeros of its own
  cut = tf.function(lambda s: mixing.cutout(tf.constant(x), s, size))
  half = size // 2
  centres_y, centres_x, sizes = set(), set(), set()
  for seed in _seeds(40):
    out = cut(seed).numpy()
    kept = np.any(out != 0.0, axis=-1)
    np.testing.assert_array_equal(out[kept], x[kept])
    boxes = _zero_boxes(out)
    assert len(set(boxes)) > 1   # one draw per image, not per batch
    for y1, y2, x1, x2 in boxes:
      # clipped [c - half, c + half) for some centre c anywhere in the image
      cy = [c for c in range(H) if (y1, y2) == (max(c - half, 0),
                                                min(c + half, H))]
      cx = [c for c in range(W) if (x1, x2) == (max(c - half, 0),
                                                min(c + half, W))]
      assert cy and cx, (size, y1, y2, x1, x2)
      centres_y.update(cy)
      centres_x.update(cx)
      sizes.add((y2 - y1, x2 - x1))
  assert centres_y == set(range(H)) and centres_x == set(range(W))
  if size < H:
    assert (size, size) in sizes         # whole squares inside the image
  assert any(h < size or w < size for h, w in sizes)   # clipped at borders


def test_same_seed_same_batch_and_the_seed_depends_on_step_and_replica():
  images, labels = _batch()

  @tf.function
  def run(step, replica):
    seed = mixing.replica_step_seed(7, step, replica)
    return mixing.mix_batch(mixing.cutout(images, seed, 4), labels, seed,
                            0.5, 1.0, 0.4)
  first = run(tf.constant(3, tf.int64), 0)
  again = run(tf.constant(3, tf.int64), 0)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  later = run(tf.constant(4, tf.int64), 0)
  other_replica = run(tf.constant(3, tf.int64), 1)
  assert not np.array_equal(first.images.numpy(), later.images.numpy())
  assert not np.array_equal(first.images.numpy(),
                            other_replica.images.numpy())
  assert not np.array_equal(
      mixing.replica_step_seed(7, 3, 0).numpy(),
      mixing.replica_step_seed(8, 3, 0).numpy())


def _is_cutmix(out, x):
  perm = out.labels_b.numpy()
  mixed = out.images.numpy()
  return all(np.all(np.all(mixed[i] == x[perm[i]], axis=-1) |
                    np.all(mixed[i] == x[i], axis=-1)) for i in range(B))


def test_mix_batch_switches_between_cutmix_mixup_and_nothing():
  images, labels = _batch()
  x = images.numpy()

  def kinds(prob, alpha, n=200):
    mix = tf.function(lambda s: mixing.mix_batch(images, labels, s, prob,
                                                 1.0, alpha))
    counts = {"none": 0, "cutmix": 0, "mixup": 0}
    for seed in _seeds(n):
      out = mix(seed)
      lam = float(out.lam)
      if lam == 1.0 and np.array_equal(out.images.numpy(), x):
        counts["none"] += 1
      elif _is_cutmix(out, x):
        counts["cutmix"] += 1
      else:
        perm = out.labels_b.numpy()
        np.testing.assert_allclose(out.images.numpy(),
                                   lam * x + (1 - lam) * x[perm], rtol=1e-5,
                                   atol=1e-6)
        counts["mixup"] += 1
    return counts

  only_cutmix = kinds(0.5, 0.0)
  assert only_cutmix["mixup"] == 0
  assert only_cutmix["cutmix"] / 200 == pytest.approx(0.5, abs=0.1)
  only_mixup = kinds(0.0, 0.3, n=40)
  assert only_mixup["mixup"] == 40
  both = kinds(0.3, 0.3)
  # "none" here: a CutMix box that rounded to nothing (lam > 0.96)
  assert both["mixup"] / 200 == pytest.approx(0.7, abs=0.1)
  assert (both["cutmix"] + both["none"]) / 200 == pytest.approx(0.3, abs=0.1)
  off = mixing.mix_batch(images, labels, _seeds(1)[0])
  assert float(off.lam) == 1.0 and off.images is images
  assert off.labels_b is labels

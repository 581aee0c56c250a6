"""Batch-level regularisers of the recipes: CutMix, Mixup and Cutout.

Why here and not in the tf.data pipeline: CutMix and Mixup mix *pairs of
examples of one mini-batch* (the reference code permutes the batch inside the
training loop), so they belong with the batch the replica trains on; doing
Cutout in the same place keeps all three on the accelerator and seeded by the
same stateless per-step seed, so a resumed run draws exactly the boxes and
lambdas an uninterrupted one would.

All functions are pure: ``(images, labels, seed, ...)`` in, mixed tensors out,
with ``seed`` an int32/int64 tensor of shape [2] (``tf.random.stateless_*``).
The mixed loss is ``lam * CE(labels_a) + (1 - lam) * CE(labels_b)``
(``step.mixed_cross_entropy``).

CutMix follows clovaai/CutMix-PyTorch ``train.py``: lam ~
Beta(beta, beta), cut = int(side * sqrt(1 - lam)), integer centre uniform
over the image, box [c - cut // 2, c + cut // 2) clipped to the image, lam
recomputed from the clipped box. Mixup follows Zhang et al.'s reference code
(one lam per batch, one permutation). Cutout follows DeVries & Taylor's
code: per image, centre uniform over the whole image, square
[c - size // 2, c + size // 2) clipped at the border, set to 0 on the
normalised image (i.e. to the mean colour).
"""

from typing import NamedTuple

import tensorflow as tf

# Fold-in constants: one independent stream per random quantity.
_PERMUTATION, _LAMBDA, _CENTRE_Y, _CENTRE_X, _CHOICE = range(5)


class Mixed(NamedTuple):
  """A mixed batch: train on ``images`` with lam*CE(a) + (1-lam)*CE(b).

  Attributes:
    images: the mixed NHWC batch, in the input's dtype.
    labels_a: the original labels.
    labels_b: the labels of the images mixed in (``labels_a`` if unmixed).
    lam: float32 scalar, the weight of ``labels_a``.
  """
  images: tf.Tensor
  labels_a: tf.Tensor
  labels_b: tf.Tensor
  lam: tf.Tensor          # float32 scalar, weight of labels_a


def replica_step_seed(seed: int, step, replica_id):
  """The stateless seed of one replica's step: f(--seed, global step, id).

  A function of the global step (not of a stateful generator), so resuming
  from a checkpoint replays the same draws, and of the replica id, so
  replicas draw different boxes and permutations.

  Args:
    seed: the run's --seed (Python int).
    step: the global step (int or integer tensor).
    replica_id: the replica's id in its sync group (int or integer tensor).

  Returns:
    An int64 [2] stateless seed.
  """
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
  return tf.random.experimental.stateless_fold_in(
      base, tf.cast(replica_id, tf.int32))


def _sub_seed(seed, which: int):
  return tf.random.experimental.stateless_fold_in(seed, which)


def sample_beta(seed, concentration: float) -> tf.Tensor:
  """One draw of Beta(c, c) as X / (X + Y), X, Y ~ Gamma(c) (float64 scalar).

  TensorFlow has no stateless Beta sampler. Gamma draws are float64 so that
  small concentrations rarely underflow; when both do (X + Y == 0) the draw is
  a fair coin in {0, 1}, the limit of Beta(c, c) as c -> 0.

  Args:
    seed: int32/int64 [2] stateless seed.
    concentration: c > 0, both parameters of the symmetric Beta.
  """
  c = tf.constant(concentration, tf.float64)
  x = tf.random.stateless_gamma([], _sub_seed(seed, 0), c, dtype=tf.float64)
  y = tf.random.stateless_gamma([], _sub_seed(seed, 1), c, dtype=tf.float64)
  total = x + y
  coin = tf.cast(tf.random.stateless_uniform([], _sub_seed(seed, 2)) < 0.5,
                 tf.float64)
  return tf.where(total > 0, x / tf.where(total > 0, total, 1.0), coin)


def _permutation(seed, batch):
  keys = tf.random.stateless_uniform([batch], _sub_seed(seed, _PERMUTATION))
  return tf.argsort(keys, stable=True)


def cutmix_box(seed, height, width, lam):
  """The clovaai box ``(y1, y2, x1, x2)`` (int32, half-open) for ``lam``.

  The box is clipped to the image, so its area can be smaller than
  (1 - lam) of it; as in clovaai's code, it spans ``2 * (cut // 2)`` pixels
  before clipping, one less than ``cut`` when ``cut`` is odd. Float64 as
  numpy's, so that e.g. lam = 0.36 cuts int(10 * 0.8) = 8 pixels, not 7.

  Args:
    seed: int32/int64 [2] stateless seed (draws the centre).
    height: image height in pixels, int32 scalar.
    width: image width in pixels, int32 scalar.
    lam: the drawn lambda in [0, 1] (any float dtype); the cut side is
      ``int(side * sqrt(1 - lam))``.
  """
  ratio = tf.sqrt(1.0 - tf.cast(lam, tf.float64))
  cut_h = tf.cast(tf.floor(tf.cast(height, tf.float64) * ratio), tf.int32)
  cut_w = tf.cast(tf.floor(tf.cast(width, tf.float64) * ratio), tf.int32)
  cy = tf.random.stateless_uniform([], _sub_seed(seed, _CENTRE_Y), 0, height,
                                   dtype=tf.int32)
  cx = tf.random.stateless_uniform([], _sub_seed(seed, _CENTRE_X), 0, width,
                                   dtype=tf.int32)
  y1 = tf.clip_by_value(cy - cut_h // 2, 0, height)
  y2 = tf.clip_by_value(cy + cut_h // 2, 0, height)
  x1 = tf.clip_by_value(cx - cut_w // 2, 0, width)
  x2 = tf.clip_by_value(cx + cut_w // 2, 0, width)
  return y1, y2, x1, x2


def _box_mask(y1, y2, x1, x2, height, width):
  """[..., H, W, 1] bool, True inside [y1, y2) x [x1, x2) (broadcasting)."""
  rows = tf.range(height)
  cols = tf.range(width)
  in_rows = (rows >= y1[..., None]) & (rows < y2[..., None])
  in_cols = (cols >= x1[..., None]) & (cols < x2[..., None])
  return (in_rows[..., :, None] & in_cols[..., None, :])[..., None]


def cutmix(images, labels, seed, beta: float = 1.0) -> Mixed:
  """CutMix of a batch with a permutation of itself (always applied).

  Args:
    images: NHWC batch (normalised).
    labels: the batch's labels, first dimension N (any dtype ``tf.gather``
      takes).
    seed: int32/int64 [2] stateless seed (permutation, lambda and box).
    beta: the Beta(beta, beta) concentration of lambda, > 0 (--cutmix_beta).

  Returns:
    The mixed batch, ``lam`` recomputed from the clipped box's area.
  """
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  lam = sample_beta(_sub_seed(seed, _LAMBDA), beta)
  perm = _permutation(seed, batch)
  y1, y2, x1, x2 = cutmix_box(seed, height, width, lam)
  inside = _box_mask(y1, y2, x1, x2, height, width)   # [H, W, 1]
  mixed = tf.where(inside[None], tf.gather(images, perm), images)
  area = tf.cast((y2 - y1) * (x2 - x1), tf.float32)
  lam = 1.0 - area / tf.cast(height * width, tf.float32)
  return Mixed(mixed, labels, tf.gather(labels, perm), lam)


def mixup(images, labels, seed, alpha: float = 1.0) -> Mixed:
  """Mixup: lam * x + (1 - lam) * x[perm], one lam ~ Beta(alpha, alpha).

  Args:
    images: NHWC batch (normalised).
    labels: the batch's labels, first dimension N.
    seed: int32/int64 [2] stateless seed (permutation and lambda).
    alpha: the Beta(alpha, alpha) concentration, > 0 (--mixup_alpha).
  """
  lam = sample_beta(_sub_seed(seed, _LAMBDA), alpha)
  perm = _permutation(seed, tf.shape(images)[0])
  lam_x = tf.cast(lam, images.dtype)
  mixed = lam_x * images + (1.0 - lam_x) * tf.gather(images, perm)
  return Mixed(mixed, labels, tf.gather(labels, perm),
               tf.cast(lam, tf.float32))


def cutout(images, seed, size: int):
  """Zeroes one clipped ``size`` x ``size`` square per image (DeVries).

  As in DeVries & Taylor's code the square is ``[c - size // 2,
  c + size // 2)``, so an odd ``size`` zeroes ``size - 1`` pixels a side.

  Args:
    images: NHWC batch, normalised (zero is the mean colour).
    seed: int32/int64 [2] stateless seed (one centre per image).
    size: side of the square in pixels (--cutout).

  Returns:
    ``images`` with the squares set to zero (labels are unchanged).
  """
  shape = tf.shape(images)
  batch, height, width = shape[0], shape[1], shape[2]
  cy = tf.random.stateless_uniform([batch], _sub_seed(seed, _CENTRE_Y), 0,
                                   height, dtype=tf.int32)
  cx = tf.random.stateless_uniform([batch], _sub_seed(seed, _CENTRE_X), 0,
                                   width, dtype=tf.int32)
  half = size // 2
  inside = _box_mask(tf.clip_by_value(cy - half, 0, height),
                     tf.clip_by_value(cy + half, 0, height),
                     tf.clip_by_value(cx - half, 0, width),
                     tf.clip_by_value(cx + half, 0, width), height, width)
  return tf.where(inside, tf.zeros_like(images), images)


def unmixed(images, labels) -> Mixed:
  """``images`` and ``labels`` as a ``Mixed`` with lam = 1 (no mixing).

  Args:
    images: NHWC batch.
    labels: the batch's labels (also used as ``labels_b``).
  """
  return Mixed(images, labels, labels, tf.constant(1.0))


def mix_batch(images, labels, seed, cutmix_prob: float = 0.0,
              cutmix_beta: float = 1.0, mixup_alpha: float = 0.0) -> Mixed:
  """One batch's CutMix / Mixup / nothing, as the flags ask.

  CutMix alone: with probability ``cutmix_prob`` (clovaai). Mixup alone: every
  batch (Zhang et al.). Both: CutMix with probability ``cutmix_prob``, else
  Mixup (timm's switch). A batch left unmixed has lam = 1 and labels_b =
  labels_a, so the loss is the ordinary cross entropy.

  Args:
    images: NHWC batch (normalised).
    labels: the batch's labels, first dimension N.
    seed: int32/int64 [2] stateless seed, e.g. ``replica_step_seed``.
    cutmix_prob: probability of CutMix for a batch, in [0, 1]; 0 = off.
    cutmix_beta: CutMix's Beta concentration; <= 0 also turns CutMix off.
    mixup_alpha: Mixup's Beta concentration; 0 = off.
  """
  use_cutmix = cutmix_prob > 0 and cutmix_beta > 0
  use_mixup = mixup_alpha > 0
  if not use_cutmix and not use_mixup:
    return unmixed(images, labels)
  def otherwise():
    return (mixup(images, labels, _sub_seed(seed, 2), mixup_alpha)
            if use_mixup else unmixed(images, labels))

  if not use_cutmix:
    return otherwise()
  draw = tf.random.stateless_uniform([], _sub_seed(seed, _CHOICE))
  # tf.cond: only the chosen mixing is computed.
  return Mixed(*tf.cond(
      draw < cutmix_prob,
      lambda: tuple(cutmix(images, labels, _sub_seed(seed, 1), cutmix_beta)),
      lambda: tuple(otherwise())))

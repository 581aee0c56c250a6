"""The ImageNet-style pipelines give the images of the per-image definition.

The reference functions below are the per-image ImageNet augmentation and
evaluation view written out op by op (crop box, crop-decode for JPEGs or
decode-and-slice for other formats, bicubic resize,
clip, flip, colour jitter in a random order, PCA lighting, normalise; short
side to 256/224 of the size, centre crop). The trainer's pipelines must give
the same crop boxes and, for the same per-image seeds, the same pixels (up to
float rounding), however they arrange the work.
"""

import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pyramidnet_tf.data import augment
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import pipeline as input_pipeline
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from tests import train_fixtures

SIZE = 24
RECORDS = 12
BATCH = 4


def _ref_seeds(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _ref_box(shape, seed):
  begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
      min_object_covered=0.0, aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
      area_range=(0.08, 1.0), max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  return tf.concat([begin[:2], box_size[:2]], 0)


def _ref_gray(image):
  return tf.reduce_sum(image * tf.constant([0.299, 0.587, 0.114]), axis=-1,
                       keepdims=True)


def _ref_jitter(image, seed, strength):
  order_seed, b_seed, c_seed, s_seed = _ref_seeds(seed, 4)
  alphas = [1.0 + tf.random.stateless_uniform([], s, -strength, strength)
            for s in (b_seed, c_seed, s_seed)]
  ops = (lambda x: x * alphas[0],
         lambda x: x * alphas[1] + tf.reduce_mean(_ref_gray(x)) *
         (1.0 - alphas[1]),
         lambda x: x * alphas[2] + _ref_gray(x) * (1.0 - alphas[2]))
  orders = ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
  index = int(tf.random.stateless_uniform([], order_seed, 0, 6,
                                          dtype=tf.int32))
  for i in orders[index]:
    image = ops[i](image)
  return image


def _ref_lighting(image, seed, alpha_std):
  alpha = tf.random.stateless_normal([3], seed, 0.0, alpha_std)
  eigvec = tf.constant(augment.PCA_EIGVEC, tf.float32)
  eigval = tf.constant(augment.PCA_EIGVAL, tf.float32)
  return image + tf.reduce_sum(eigvec * (alpha * eigval)[None, :], axis=1)


def _ref_normalize(image_0_255, mean, std, bgr):
  if bgr:
    image_0_255 = image_0_255[..., ::-1]
  return (image_0_255 - np.array(mean, np.float32)) / np.array(std,
                                                               np.float32)


def reference_train(encoded: bytes, seed, pre):
  """(crop box [y, x, h, w], normalised image) of one training view."""
  box_seed, jitter_seed, light_seed, flip_seed = _ref_seeds(seed, 4)
  if tf.io.is_jpeg(encoded):  # crop while decoding (edges differ slightly)
    box = _ref_box(tf.image.extract_jpeg_shape(encoded), box_seed)
    image = tf.image.decode_and_crop_jpeg(encoded, box, channels=3)
  else:
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    box = _ref_box(tf.shape(image), box_seed)
    image = image[box[0]:box[0] + box[2], box[1]:box[1] + box[3]]
  image = tf.image.resize(tf.cast(image, tf.float32) / 255.0,
                          [pre.image_size, pre.image_size], method="bicubic")
  image = tf.clip_by_value(image, 0.0, 1.0)
  if tf.random.stateless_uniform([], flip_seed) < 0.5:
    image = image[:, ::-1]
  if pre.color_jitter > 0:
    image = _ref_jitter(image, jitter_seed, pre.color_jitter)
  if pre.lighting > 0:
    image = _ref_lighting(image, light_seed, pre.lighting)
  mean, std = (pre.mean, pre.std) if pre.mean else (augment.IMAGENET_MEAN,
                                                    augment.IMAGENET_STD)
  return box.numpy(), _ref_normalize(image.numpy() * 255.0, mean, std,
                                     pre.color == "BGR")


def reference_eval(encoded: bytes, pre):
  image = tf.cast(tf.io.decode_image(encoded, channels=3,
                                     expand_animations=False), tf.float32)
  size = pre.image_size
  short = int(round(size * 256 / 224))
  h, w = image.shape[:2]
  scale = np.float32(short) / np.float32(min(h, w))
  new_h = max(int(np.round(np.float32(h) * scale)), size)
  new_w = max(int(np.round(np.float32(w) * scale)), size)
  image = tf.image.resize(image, [new_h, new_w], method="bicubic").numpy()
  top, left = (new_h - size) // 2, (new_w - size) // 2
  image = np.clip(image[top:top + size, left:left + size], 0.0, 255.0)
  mean, std = (pre.mean, pre.std) if pre.mean else (augment.IMAGENET_MEAN,
                                                    augment.IMAGENET_STD)
  return _ref_normalize(image, mean, std, pre.color == "BGR")


def _photo(rng, h, w):
  base = rng.integers(0, 255, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
  image = np.asarray(Image.fromarray(base).resize((w, h), Image.BICUBIC))
  return np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(
      np.uint8)


@pytest.fixture(scope="module")
def jpeg_dir(tmp_path_factory):
  """RECORDS images of varied shapes, label = record number; two PNGs
  (decoded whole, then cropped) among the JPEGs (crop-decoded)."""
  directory = str(tmp_path_factory.mktemp("jpegs"))
  rng = np.random.default_rng(7)
  encoded = []
  for i in range(RECORDS):
    image = _photo(rng, int(rng.integers(30, 70)), int(rng.integers(30, 70)))
    buffer = io.BytesIO()
    fmt = "PNG" if i in (3, 8) else "JPEG"
    Image.fromarray(image).save(buffer, format=fmt, quality=90)
    encoded.append((buffer.getvalue(), fmt, image.shape))
  splits = {}
  for split in ("train", "validation"):
    name = f"{split}-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
      for i, (data, fmt, shape) in enumerate(encoded):
        writer.write(train_fixtures._example(  # pylint: disable=protected-access
            data, fmt, shape[0], shape[1], i, f"{i}.jpg"))
    splits[split] = {"num_examples": RECORDS, "shards": [
        {"file": name, "num_examples": RECORDS}]}
  manifest = {"dataset": "imagenet", "converter": "data_prep.imagenet",
              "label_base": 0,
              "class_names": [f"c{i}" for i in range(RECORDS)],
              "splits": splits}
  with open(os.path.join(directory, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  return directory, [e[0] for e in encoded]


PREPROCESSINGS = {
    "default": preprocessing_lib.Preprocessing("imagenet", SIZE),
    "caffe_bgr": preprocessing_lib.Preprocessing(
        "imagenet", SIZE, color="BGR", mean=(104.0, 117.0, 124.0),
        std=(1 / 0.017352,) * 3, color_jitter=0.3, lighting=0.2),
    "no_colour": preprocessing_lib.Preprocessing(
        "imagenet", SIZE, color_jitter=0.0, lighting=0.0),
}


def _train_views(jpeg_dir, pre, seed, batches):
  data_dir, encoded = jpeg_dir
  info = manifest_lib.read_manifest(data_dir)
  ds = input_pipeline.train_dataset(info, pre, BATCH, seed=seed,
                                    deterministic=True)
  stream_seed = input_pipeline._stream_seed(seed, 0)  # pylint: disable=protected-access
  got, want, boxes = [], [], []
  for b, (images, labels) in enumerate(ds.take(batches)):
    for j, label in enumerate(labels.numpy()):
      position = b * BATCH + j
      epoch, index = divmod(position, RECORDS)
      box, image = reference_train(
          encoded[label], tf.constant([stream_seed + epoch, index], tf.int64),
          pre)
      got.append(images[j].numpy())
      want.append(image)
      boxes.append(box)
  return np.stack(got), np.stack(want), boxes


@pytest.mark.parametrize("name", sorted(PREPROCESSINGS))
def test_train_pipeline_matches_the_per_image_definition(jpeg_dir, name):
  pre = PREPROCESSINGS[name]
  got, want, _ = _train_views(jpeg_dir, pre, seed=11,
                              batches=RECORDS // BATCH + 1)
  assert got.shape == (RECORDS + BATCH, SIZE, SIZE, 3)
  assert got.dtype == np.float32
  # Same pixels up to float rounding (normalised units; a pixel level is
  # 1/58 of one with ImageNet's std, 0.017 with Caffe's).
  np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
  # Hence the same statistics per channel.
  np.testing.assert_allclose(got.mean(axis=(0, 1, 2)),
                             want.mean(axis=(0, 1, 2)), atol=1e-5)
  np.testing.assert_allclose(got.std(axis=(0, 1, 2)),
                             want.std(axis=(0, 1, 2)), atol=1e-5)


def test_train_crop_box_is_the_reference_box():
  rng = np.random.default_rng(3)
  for i in range(60):
    shape = tf.constant([int(rng.integers(20, 600)),
                         int(rng.integers(20, 600)), 3])
    seed = tf.constant([int(rng.integers(0, 2**40)), i], tf.int64)
    np.testing.assert_array_equal(
        augment.train_crop_box(shape, seed).numpy(),
        _ref_box(shape, _ref_seeds(seed, 4)[0]).numpy())


def test_train_crop_boxes_vary_and_stay_inside(jpeg_dir):
  """The reference's boxes (which the pixels above pin down) are the
  inception crop: inside the image, area 8-100 %, aspect 3/4-4/3."""
  _, encoded = jpeg_dir
  areas = []
  for i in range(40):
    data = encoded[i % RECORDS]
    w, h = Image.open(io.BytesIO(data)).size
    box, _ = reference_train(data, tf.constant([5, i], tf.int64),
                             PREPROCESSINGS["no_colour"])
    y, x, bh, bw = box
    assert 0 <= y and 0 <= x and y + bh <= h and x + bw <= w
    areas.append(bh * bw / (h * w))
  assert min(areas) < 0.5 < max(areas)


@pytest.mark.parametrize("name", ["default", "caffe_bgr"])
def test_eval_pipeline_matches_the_per_image_definition(jpeg_dir, name):
  data_dir, encoded = jpeg_dir
  pre = PREPROCESSINGS[name]
  info = manifest_lib.read_manifest(data_dir)
  steps = input_pipeline.eval_steps(info, "validation", 5, 1, 1)
  ds = input_pipeline.eval_dataset(info, pre, 5, steps, "validation")
  images, labels = [], []
  for x, y in ds:
    images.append(x.numpy())
    labels.append(y.numpy())
  images, labels = np.concatenate(images), np.concatenate(labels)
  assert sorted(labels[labels >= 0]) == list(range(RECORDS))
  for image, label in zip(images, labels):
    if label < 0:
      np.testing.assert_array_equal(image, 0.0)
      continue
    np.testing.assert_allclose(image, reference_eval(encoded[label], pre),
                               atol=2e-4, rtol=0)

"""Batched, augmented tf.data pipelines over a data directory's shards.

Why the pipeline is built per epoch: each epoch is a seeded shuffle of this
pipeline's records (seed = run seed and epoch), every record gets a stateless
augmentation seed from (run seed, pipeline, epoch, index), and epochs are
concatenated before batching, so batches are always full. A run resumed at
global step ``s`` starts at record ``s * batch_per_pipeline`` of that stream:
it sees exactly what an uninterrupted run would have, without checkpointing
iterator state (which for ImageNet would mean checkpointing shuffle buffers).

Sharding (one pipeline per worker, via the InputContext): by file when there
are at least as many shard files as pipelines, else by record. Evaluation
sees every record exactly once: the last batches are padded with label -1
and the padding is masked out of the metrics.
"""

from typing import Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.data import augment
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import preprocessing as preprocessing_lib


SHUFFLE_BUFFER = {"cifar": 50000, "imagenet": 10000}


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


def _parse(record):
  features = tf.io.parse_single_example(record, _FEATURES)
  return (features["image/encoded"], features["image/format"],
          tf.cast(features["image/height"], tf.int32),
          tf.cast(features["image/width"], tf.int32),
          features["image/class/label"])


def _pipeline_records(info: manifest_lib.DataInfo, split: str,
                      num_pipelines: int, pipeline_id: int,
                      allow_empty: bool = False
                      ) -> Tuple[tf.data.Dataset, int]:
  """This pipeline's records (fixed order) and how many there are.

  The count is the manifest's: callers that must be exact pass an info from
  ``recount``. ``allow_empty``: evaluation, where a pipeline without records
  just pads.
  """
  shards = info.shards(split)
  total = sum(s.num_examples for s in shards)
  if total == 0:
    raise manifest_lib.DataError(f"{info.data_dir}: split {split!r} is empty")
  if len(shards) >= num_pipelines:
    mine = shards[pipeline_id::num_pipelines]
    files = [s.path for s in mine]
    count = sum(s.num_examples for s in mine)
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    files = [s.path for s in shards]
    count = total // num_pipelines + (1 if pipeline_id < total %
                                      num_pipelines else 0)
    ds = tf.data.TFRecordDataset(files).shard(num_pipelines, pipeline_id)
  if count == 0 and not allow_empty:
    raise manifest_lib.DataError(
        f"{info.data_dir}: split {split!r} gives pipeline {pipeline_id} of "
        f"{num_pipelines} no records")
  return ds, count


def _stream_seed(seed: int, pipeline_id: int) -> int:
  return (seed * 1_000_003 + pipeline_id * 7_919) % (2 ** 62)


def train_dataset(info: manifest_lib.DataInfo,
                  preprocessing: preprocessing_lib.Preprocessing,
                  per_replica_batch: int, seed: int, start_step: int = 0,
                  num_pipelines: int = 1, pipeline_id: int = 0,
                  replicas_per_pipeline: int = 1, split: str = "train",
                  cache: bool = False, deterministic: bool = False,
                  shuffle_buffer: Optional[int] = None) -> tf.data.Dataset:
  """Infinite stream of full per-replica batches (images float32, labels).

  Starts where an uninterrupted run would be after ``start_step`` steps.
  The global TF seed must not be 0 (``tf.random.set_seed(0)``): TF's seed
  helper then compares the per-epoch shuffle seed tensor with 0 in Python.
  """
  records, count = _pipeline_records(info, split, num_pipelines, pipeline_id)
  if cache:
    records = records.cache()
  buffer = shuffle_buffer or SHUFFLE_BUFFER[preprocessing.kind]
  buffer = max(1, min(buffer, count))
  stream_seed = _stream_seed(seed, pipeline_id)
  position = start_step * per_replica_batch * replicas_per_pipeline
  start_epoch, offset = divmod(position, count)
  label_base = info.label_base

  def one_epoch(epoch, skip):
    shuffled = records.shuffle(buffer, seed=stream_seed + epoch,
                               reshuffle_each_iteration=False)
    return shuffled.enumerate().skip(skip).map(
        lambda index, record: (epoch, index, record))
  epochs = tf.data.Dataset.range(start_epoch, 2 ** 62).map(
      lambda e: (e, tf.where(e == start_epoch, tf.constant(offset, tf.int64),
                             tf.constant(0, tf.int64))))
  ds = epochs.flat_map(one_epoch)

  batched = preprocessing.batched

  def prepare(epoch, index, record):
    encoded, image_format, height, width, label = _parse(record)
    element_seed = tf.stack([stream_seed + epoch, index])
    prepare_image = (preprocessing.train_view if batched else
                     preprocessing.train_image)
    image = prepare_image(encoded, image_format, height, width, element_seed)
    return image, tf.cast(label - label_base, tf.int32)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=deterministic)
  ds = ds.batch(per_replica_batch, drop_remainder=True)
  if batched:
    # Colour augmentation and normalisation, vectorised over the batch.
    ds = ds.map(lambda view, labels: (preprocessing.train_batch(*view),
                                      labels),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=deterministic)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = deterministic
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return ds.with_options(options)


def eval_steps(info: manifest_lib.DataInfo, split: str, per_replica_batch: int,
               num_pipelines: int, replicas_per_pipeline: int) -> int:
  """Steps that cover every pipeline's records (the rest is padding).

  Exact only for an info from ``recount``: with the manifest's counts a
  wrong count would drop records or pad needlessly.
  """
  largest = max(_pipeline_count(info, split, num_pipelines, i)
                for i in range(num_pipelines))
  per_step = per_replica_batch * replicas_per_pipeline
  return -(-largest // per_step)


def _pipeline_count(info, split, num_pipelines, pipeline_id) -> int:
  shards = info.shards(split)
  if len(shards) >= num_pipelines:
    return sum(s.num_examples for s in shards[pipeline_id::num_pipelines])
  total = sum(s.num_examples for s in shards)
  return total // num_pipelines + (1 if pipeline_id < total % num_pipelines
                                   else 0)


def eval_dataset(info: manifest_lib.DataInfo,
                 preprocessing: preprocessing_lib.Preprocessing,
                 per_replica_batch: int, num_steps: int, split: str,
                 num_pipelines: int = 1, pipeline_id: int = 0,
                 replicas_per_pipeline: int = 1) -> tf.data.Dataset:
  """Every record exactly once, padded to ``num_steps`` full steps.

  Padding examples have label -1 and are masked out of the metrics, so every
  replica runs the same number of steps (no partial-batch hangs across
  workers) and no example is dropped, provided ``num_steps`` comes from
  ``eval_steps`` on an info from ``recount`` (the manifest's counts may be
  wrong).
  """
  records, _ = _pipeline_records(info, split, num_pipelines, pipeline_id,
                                 allow_empty=True)
  label_base = info.label_base

  def prepare(record):
    encoded, image_format, height, width, label = _parse(record)
    image = augment.decode(encoded, image_format, height, width)
    return (preprocessing.eval_view(image),
            tf.cast(label - label_base, tf.int32))
  ds = records.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  padding = tf.data.Dataset.from_tensors(
      (preprocessing.eval_padding(), tf.constant(-1, tf.int32))).repeat()
  total = num_steps * per_replica_batch * replicas_per_pipeline
  ds = ds.concatenate(padding).take(total)
  ds = ds.batch(per_replica_batch, drop_remainder=True)
  if preprocessing.batched:
    # Normalisation per batch (padding becomes all zeros).
    ds = ds.map(lambda images, labels: (preprocessing.eval_batch(images),
                                        labels),
                num_parallel_calls=tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def check_evaluated(info: manifest_lib.DataInfo, split: str,
                    examples: float) -> None:
  """DataError unless an evaluation counted every record of ``split``."""
  expected = info.num_examples(split)
  if int(round(examples)) != expected:
    raise manifest_lib.DataError(
        f"evaluated {int(round(examples)):,} examples of split {split!r} but "
        f"its shards in {info.data_dir} held {expected:,} when counted: were "
        "they rewritten during the run? Evaluate again once they are final")


def synthetic_dataset(image_size: int, num_classes: int,
                      per_replica_batch: int, seed: int) -> tf.data.Dataset:
  """One fixed random batch repeated forever: the step at full speed."""
  g = tf.random.Generator.from_seed(seed)
  images = g.normal([per_replica_batch, image_size, image_size, 3])
  labels = g.uniform([per_replica_batch], 0, num_classes, dtype=tf.int32)
  ds = tf.data.Dataset.from_tensors((images, labels)).repeat()
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return ds.with_options(options)

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

from pyramidnet_tf import options
from pyramidnet_tf.data import augment
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.data import records as records_lib


SHUFFLE_BUFFER = {"cifar": 50000, "imagenet": 10000}


def _pipeline_records(info: manifest_lib.DataInfo, split: str,
                      num_pipelines: int, pipeline_id: int,
                      allow_empty: bool = False
                      ) -> Tuple[tf.data.Dataset, int]:
  """This pipeline's records (fixed order) and how many there are.

  Each element is (shard, record index, record), the shard numbered by its
  place in ``info.shards(split)``, so that a record that fails its checks
  is named (``records.parse_checked``). The count is the manifest's:
  callers that must be exact pass an info from ``recount``.
  ``allow_empty``: evaluation, where a pipeline without records just pads.
  """
  shards = info.shards(split)
  total = sum(s.num_examples for s in shards)
  if total == 0:
    raise manifest_lib.DataError(f"{info.data_dir}: split {split!r} is empty")
  def numbered(shard, path):
    return tf.data.TFRecordDataset(path).enumerate().map(
        lambda index, record: (shard, index, record))
  if len(shards) >= num_pipelines:
    numbers = list(range(pipeline_id, len(shards), num_pipelines))
    count = sum(shards[i].num_examples for i in numbers)
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.constant(numbers, tf.int64), [shards[i].path for i in numbers])
    ).interleave(numbered, cycle_length=min(len(numbers), 8),
                 num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  else:
    count = total // num_pipelines + (1 if pipeline_id < total %
                                      num_pipelines else 0)
    ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(shards), dtype=tf.int64), [s.path for s in shards])
    ).flat_map(numbered).shard(num_pipelines, pipeline_id)
  if count == 0 and not allow_empty:
    raise manifest_lib.DataError(
        f"{info.data_dir}: split {split!r} gives pipeline {pipeline_id} of "
        f"{num_pipelines} no records")
  return ds, count


def _stream_seed(seed: int, pipeline_id: int) -> int:
  return (seed * 1_000_003 + pipeline_id * 7_919) % (2 ** 62)


def _avoid_global_seed_zero() -> None:
  """Lets a tensor shuffle seed be traced after ``tf.random.set_seed(0)``.

  TF 2.21's ``random_seed.get_seed`` compares (global seed, op seed) with
  (0, 0) in Python; with the global seed 0 that asks a tensor op seed (the
  per-epoch ``stream_seed + epoch``) for its truth value and tracing fails
  (OperatorNotAllowedInGraphError). The graph being traced (the epoch
  function's own) then takes seed 1 instead: its shuffles stay seeded, and
  only a process whose global seed is 0 is affected. Any other global seed
  is left as it is.
  """
  graph = tf.compat.v1.get_default_graph()
  if graph.seed == 0:
    graph.seed = 1


def train_dataset(info: manifest_lib.DataInfo,
                  preprocessing: preprocessing_lib.Preprocessing,
                  per_replica_batch: int, seed: int, start_step: int = 0,
                  num_pipelines: int = 1, pipeline_id: int = 0,
                  replicas_per_pipeline: int = 1, split: str = "train",
                  cache: bool = False, deterministic: bool = False,
                  shuffle_buffer: Optional[int] = None,
                  start_examples: Optional[int] = None) -> tf.data.Dataset:
  """Infinite stream of full per-replica batches (images float32, labels).

  Starts where an uninterrupted run would be after ``start_step`` steps, or
  after ``start_examples`` examples when given (a run whose batch size
  changed counts the examples it has seen, not its steps).

  Args:
    start_examples: training examples already seen, all pipelines together
      (each pipeline reads its 1 / ``num_pipelines`` share); overrides
      ``start_step``.
  """
  records, count = _pipeline_records(info, split, num_pipelines, pipeline_id)
  if cache:
    records = records.cache()
  buffer = shuffle_buffer or SHUFFLE_BUFFER[preprocessing.kind]
  buffer = max(1, min(buffer, count))
  stream_seed = _stream_seed(seed, pipeline_id)
  if start_examples is None:
    position = start_step * per_replica_batch * replicas_per_pipeline
  else:
    position = start_examples // num_pipelines
  start_epoch, offset = divmod(position, count)
  label_base, num_classes = info.label_base, info.num_classes

  def one_epoch(epoch, skip):
    _avoid_global_seed_zero()
    shuffled = records.shuffle(buffer, seed=stream_seed + epoch,
                               reshuffle_each_iteration=False)
    return shuffled.enumerate().skip(skip).map(
        lambda index, record: (epoch, index, record))
  epochs = tf.data.Dataset.range(start_epoch, 2 ** 62).map(
      lambda e: (e, tf.where(e == start_epoch, tf.constant(offset, tf.int64),
                             tf.constant(0, tf.int64))))
  ds = epochs.flat_map(one_epoch)

  batched = preprocessing.batched

  def prepare(epoch, index, numbered):
    shard, record_index, record = numbered
    encoded, image_format, height, width, label = records_lib.parse_checked(
        record, split, shard, record_index, label_base, num_classes)
    element_seed = tf.stack([stream_seed + epoch, index])
    prepare_image = (preprocessing.train_view if batched else
                     preprocessing.train_image)
    image = prepare_image(encoded, image_format, height, width, element_seed)
    return image, label
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
  label_base, num_classes = info.label_base, info.num_classes

  def prepare(shard, record_index, record):
    encoded, image_format, height, width, label = records_lib.parse_checked(
        record, split, shard, record_index, label_base, num_classes)
    image = augment.decode(encoded, image_format, height, width)
    return preprocessing.eval_view(image), label
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


# Processing modes of ``service_train_dataset`` (TensorFlow's names).
SERVICE_MODES = options.SERVICE_MODES
_NO_END = 2 ** 62


def _random_salt():
  """A fresh random int64 each time the op runs (seeds 0, 0: from the OS).

  The raw op bypasses TF's global seed, which would give every tf.data
  service worker the same value.
  """
  return tf.raw_ops.RandomUniformInt(
      shape=tf.constant([], tf.int32), minval=tf.constant(0, tf.int64),
      maxval=tf.constant(2 ** 40, tf.int64), seed=0, seed2=0)


def service_stream(files, prepare, seed: int, service: str, mode: str,
                   job_name: str, start_epoch: int = 0,
                   end_epoch: Optional[int] = None,
                   shuffle_buffer: int = 1, batch: Optional[int] = None,
                   cycle_length: int = 8) -> tf.data.Dataset:
  """Records of ``files`` prepared on tf.data service workers, epoch after
  epoch, consumed as one job shared by every dataset with ``job_name``.

  Why (epoch, file) splits: in ``distributed_epoch`` mode the dispatcher
  hands each index ``k`` of ``range(start_epoch * F, end_epoch * F)`` (F
  files) to exactly one service worker, which reads file ``k % F`` of epoch
  ``k // F``'s seeded file order. So every record is produced once per
  epoch across all service workers and all consumers (at most once when a
  service worker dies with splits in hand), service workers share an epoch
  file by file, and seeds come from the epoch and the record's place in its
  file, not from which worker reads it. ``parallel_epochs``: every service
  worker produces every epoch, with a random salt of its own in the file
  order and augmentation seeds so that workers do not produce copies.

  Args:
    files: the shard paths (readable by every service worker).
    prepare: ``(epoch, file_index, record_index, record) -> element``, run
      on the service workers (decoding, augmentation); ``epoch`` includes
      the worker's salt in ``parallel_epochs`` mode.
    seed: the run's seed (file orders, augmentation).
    service: the dispatcher, ``grpc://HOST:PORT``.
    mode: one of ``SERVICE_MODES``.
    job_name: consumers with the same name share one job (each element goes
      to one of them).
    start_epoch: the first epoch produced.
    end_epoch: stop before this epoch; None: never (training).
    shuffle_buffer: records shuffled in each service worker's buffer.
    batch: batch the prepared elements on the service workers (full batches
      only); None: single elements.
    cycle_length: files each service worker reads at a time.
  """
  if mode not in SERVICE_MODES:
    raise ValueError(f"mode must be one of {', '.join(SERVICE_MODES)}; got "
                     f"{mode!r}")
  num_files = len(files)
  file_names = tf.constant(list(files))
  stream_seed = _stream_seed(seed, 0)
  end = _NO_END if end_epoch is None else end_epoch * num_files

  def read(k, salt):
    epoch = k // num_files
    epoch_seed = tf.stack([tf.constant(stream_seed, tf.int64) + salt, epoch])
    order = tf.argsort(tf.random.stateless_uniform([num_files], epoch_seed))
    file_index = tf.cast(tf.gather(order, k % num_files), tf.int64)
    records = tf.data.TFRecordDataset(tf.gather(file_names, file_index))
    return records.enumerate().map(
        lambda index, record: prepare(epoch + salt, file_index,
                                      index, record))

  def epochs(salt):
    return tf.data.Dataset.range(start_epoch * num_files, end).interleave(
        lambda k: read(k, salt), cycle_length=min(cycle_length, num_files),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
  if mode == "distributed_epoch":
    # The range must be the source: it is what the dispatcher splits.
    ds = epochs(tf.constant(0, tf.int64))
  else:
    ds = tf.data.Dataset.range(1).map(lambda _: _random_salt()).flat_map(
        epochs)
  ds = ds.shuffle(max(1, shuffle_buffer))
  if batch:
    ds = ds.batch(batch, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  ds = ds.apply(tf.data.experimental.service.distribute(
      processing_mode=mode, service=service, job_name=job_name))
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


def service_train_dataset(info: manifest_lib.DataInfo,
                          preprocessing: preprocessing_lib.Preprocessing,
                          per_replica_batch: int, seed: int, service: str,
                          mode: str, job_name: str, start_epoch: int = 0,
                          split: str = "train",
                          shuffle_buffer: Optional[int] = None
                          ) -> tf.data.Dataset:
  """``train_dataset``'s per-replica batches, prepared by tf.data service
  workers (``service_stream``) instead of this host's CPUs.

  Every trainer worker reads the whole split through the same job, so
  there is no per-worker sharding; the order is not deterministic and a
  resumed run restarts at the beginning of the epoch it stopped in.

  Args:
    info: the data directory (shard paths must be readable by the service
      workers).
    preprocessing: the training augmentation.
    per_replica_batch: images per batch (batched on the service workers).
    seed: the run's seed.
    service: the dispatcher, ``grpc://HOST:PORT``.
    mode: one of ``SERVICE_MODES``.
    job_name: shared by all trainer workers of the run.
    start_epoch: the epoch the run resumes in.
    split: the split to train on.
    shuffle_buffer: records in each service worker's shuffle buffer;
      None: ``SHUFFLE_BUFFER`` of the data's kind.
  """
  files = [s.path for s in info.shards(split)]
  if not files:
    raise manifest_lib.DataError(f"{info.data_dir}: split {split!r} is empty")
  label_base, num_classes = info.label_base, info.num_classes
  stream_seed = _stream_seed(seed, 0)

  def prepare(epoch, file_index, index, record):
    encoded, image_format, height, width, label = records_lib.parse_checked(
        record, split, file_index, index, label_base, num_classes)
    element_seed = tf.stack([stream_seed + epoch,
                             file_index * 2 ** 32 + index])
    image = preprocessing.train_image(encoded, image_format, height, width,
                                      element_seed)
    return image, label
  buffer = shuffle_buffer or SHUFFLE_BUFFER[preprocessing.kind]
  buffer = max(1, min(buffer, info.num_examples(split)))
  return service_stream(files, prepare, seed, service, mode, job_name,
                        start_epoch=start_epoch, shuffle_buffer=buffer,
                        batch=per_replica_batch)

"""manifest.json + TFRecord shards -> batched, augmented tf.data pipelines.

The trainer reads only what data_prep's output contract promises
(``DIR/manifest.json`` and ``DIR/<split>-<iiiii>-of-<nnnnn>.tfrecord``), never
data_prep's code.

Why the pipeline is built per epoch: each epoch is a seeded shuffle of this
pipeline's records (seed = run seed and epoch), every record gets a stateless
augmentation seed from (run seed, pipeline, epoch, index), and epochs are
concatenated before batching, so batches are always full. A run resumed at
global step ``s`` starts at record ``s * batch_per_pipeline`` of that stream:
it sees exactly what an uninterrupted run would have, without checkpointing
iterator state (which for ImageNet would mean checkpointing shuffle buffers).

Sharding (one pipeline per worker, via the InputContext): by file when there
are at least as many shard files as pipelines, else by record.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf import augment
from pyramidnet_tf import autoaugment as autoaugment_lib

MANIFEST = "manifest.json"
CIFAR_KINDS = ("cifar10", "cifar100")
SHUFFLE_BUFFER = {"cifar": 50000, "imagenet": 10000}

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


class DataError(ValueError):
  """A data directory that does not hold what the trainer needs."""


@dataclasses.dataclass(frozen=True)
class Shard:
  path: str
  num_examples: int


@dataclasses.dataclass(frozen=True)
class DataInfo:
  """What the manifest says about a prepared data directory."""

  data_dir: str
  dataset: str                      # cifar10 / cifar100 / imagenet / folder...
  class_names: Tuple[str, ...]
  label_base: int
  splits: Dict[str, Tuple[Shard, ...]]
  converter: str = ""

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def num_examples(self, split: str) -> int:
    return sum(s.num_examples for s in self.shards(split))

  def shards(self, split: str) -> Tuple[Shard, ...]:
    if split not in self.splits:
      raise DataError(f"{os.path.join(self.data_dir, MANIFEST)} has no split "
                      f"{split!r}; it has: {', '.join(sorted(self.splits))}")
    return self.splits[split]

  @property
  def is_cifar(self) -> bool:
    """CIFAR records (32x32) from data_prep.cifar; a folder merely *named*
    cifar10 gets the ImageNet-style pipeline."""
    return self.dataset in CIFAR_KINDS and self.converter in (
        "", "data_prep.cifar")

  @property
  def kind(self) -> str:
    """What preprocessing_for() keys on: cifar10/cifar100 or 'images'."""
    return self.dataset if self.is_cifar else "images"

  @property
  def eval_split(self) -> str:
    for name in ("validation", "test", "val"):
      if name in self.splits:
        return name
    raise DataError(f"{self.data_dir}: no evaluation split (validation or "
                    f"test) in the manifest; splits: {sorted(self.splits)}")


def _first(mapping, keys, what, where):
  for key in keys:
    if key in mapping:
      return mapping[key]
  raise DataError(f"{where}: missing {what} (looked for "
                  f"{', '.join(repr(k) for k in keys)})")


def read_manifest(data_dir: str) -> DataInfo:
  """Parses ``data_dir/manifest.json``; errors say how to make one."""
  if not data_dir:
    raise DataError(
        "--data_dir is required: a directory written by data_prep, e.g. "
        "`python -m data_prep.cifar --dataset=cifar10 --source=cifar-10-"
        "python.tar.gz --output_dir=DIR` (or data_prep.imagenet / "
        "data_prep.folder); or pass --dataset=synthetic to benchmark")
  path = os.path.join(data_dir, MANIFEST)
  if not tf.io.gfile.exists(path):
    raise DataError(
        f"{path} not found: --data_dir must be a directory written by "
        "data_prep (python -m data_prep.cifar | data_prep.imagenet | "
        "data_prep.folder --output_dir=DIR)")
  with tf.io.gfile.GFile(path) as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(f"{path} is not valid JSON: {e}") from None
  dataset = str(manifest.get("dataset", "folder"))
  class_names = tuple(str(c) for c in _first(
      manifest, ("class_names", "classes", "labels"), "class names", path))
  label_base = int(manifest.get("label_base", manifest.get("label_offset", 0)))
  splits = {}
  for name, split in _first(manifest, ("splits",), "splits", path).items():
    shards = []
    for shard in _first(split, ("shards", "files"), f"split {name!r} shards",
                        path):
      file_name = _first(shard, ("file", "path", "filename", "name"),
                         f"split {name!r} shard file name", path)
      count = _first(shard, ("num_examples", "count", "examples"),
                     f"split {name!r} shard example count", path)
      shard_path = os.path.join(data_dir, os.path.basename(file_name))
      if not tf.io.gfile.exists(shard_path):
        raise DataError(f"{shard_path} is listed in {path} but missing; "
                        "rerun data_prep into this directory")
      shards.append(Shard(shard_path, int(count)))
    splits[name] = tuple(shards)
  return DataInfo(data_dir, dataset, class_names, label_base, splits,
                  str(manifest.get("converter", "")))


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


def _parse(record):
  features = tf.io.parse_single_example(record, _FEATURES)
  return (features["image/encoded"], features["image/format"],
          tf.cast(features["image/height"], tf.int32),
          tf.cast(features["image/width"], tf.int32),
          features["image/class/label"])


def _pipeline_records(info: DataInfo, split: str, num_pipelines: int,
                      pipeline_id: int) -> Tuple[tf.data.Dataset, int]:
  """This pipeline's records (fixed order) and how many there are."""
  shards = info.shards(split)
  total = sum(s.num_examples for s in shards)
  if total == 0:
    raise DataError(f"{info.data_dir}: split {split!r} is empty")
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
  if count == 0:
    raise DataError(f"{info.data_dir}: split {split!r} gives pipeline "
                    f"{pipeline_id} of {num_pipelines} no records")
  return ds, count


def _stream_seed(seed: int, pipeline_id: int) -> int:
  return (seed * 1_000_003 + pipeline_id * 7_919) % (2 ** 62)


def train_dataset(info: DataInfo, preprocessing: Preprocessing,
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

  def prepare(epoch, index, record):
    encoded, image_format, height, width, label = _parse(record)
    element_seed = tf.stack([stream_seed + epoch, index])
    image = preprocessing.train_image(encoded, image_format, height, width,
                                      element_seed)
    return image, tf.cast(label - label_base, tf.int32)
  ds = ds.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=deterministic)
  ds = ds.batch(per_replica_batch, drop_remainder=True)
  ds = ds.prefetch(tf.data.AUTOTUNE)
  options = tf.data.Options()
  options.deterministic = deterministic
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return ds.with_options(options)


def eval_steps(info: DataInfo, split: str, per_replica_batch: int,
               num_pipelines: int, replicas_per_pipeline: int) -> int:
  """Steps that cover every pipeline's records (the rest is padding)."""
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


def eval_dataset(info: DataInfo, preprocessing: Preprocessing,
                 per_replica_batch: int, num_steps: int, split: str,
                 num_pipelines: int = 1, pipeline_id: int = 0,
                 replicas_per_pipeline: int = 1) -> tf.data.Dataset:
  """Every record exactly once, padded to ``num_steps`` full steps.

  Padding examples have label -1 and are masked out of the metrics, so every
  replica runs the same number of steps (no partial-batch hangs across
  workers) and no example is dropped.
  """
  records, _ = _pipeline_records(info, split, num_pipelines, pipeline_id)
  label_base = info.label_base

  def prepare(record):
    encoded, image_format, height, width, label = _parse(record)
    image = augment.decode(encoded, image_format, height, width)
    return (preprocessing.eval_image(image),
            tf.cast(label - label_base, tf.int32))
  ds = records.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
  size = preprocessing.image_size
  padding = tf.data.Dataset.from_tensors(
      (tf.zeros([size, size, 3]), tf.constant(-1, tf.int32))).repeat()
  total = num_steps * per_replica_batch * replicas_per_pipeline
  ds = ds.concatenate(padding).take(total)
  ds = ds.batch(per_replica_batch, drop_remainder=True)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.OFF)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(options)


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


AUGMENTATIONS = ("auto", "cifar", "imagenet")


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
  if info_dataset in CIFAR_KINDS and augmentation in ("auto", "cifar"):
    return Preprocessing("cifar", image_size or 32, info_dataset, convention,
                         **policy)
  if augmentation == "cifar":
    return Preprocessing("cifar", image_size or default, info_dataset,
                         convention, mean=augment.IMAGENET_MEAN,
                         std=augment.IMAGENET_STD, resize=True, **policy)
  return Preprocessing("imagenet", image_size or default, **policy)


def class_names_list(info: Optional[DataInfo], num_classes: int) -> List[str]:
  if info is not None and info.num_classes == num_classes:
    return list(info.class_names)
  return [f"class_{i}" for i in range(num_classes)]

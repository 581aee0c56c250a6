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

Why record counts are read from the shards (``recount``), not the manifest:
steps per epoch, resume positions and the padding that lets every replica
of every worker run the same number of eval steps all follow from them, so a
manifest that disagrees with its files would silently drop or misplace
records. Counting reads only each record's 12-byte length header (seconds
for ImageNet's 1.28M records on a local disk, no decoding) and finds
truncated files before any step runs. A record whose checksum fails is only
found when it is read; ``named_read_errors`` turns that DataLossError into
one line naming the file and the record. Training stops there rather than
skip it: a skipped record would be lost from every epoch and shift the
stream that resumes replay, while re-running the conversion restores the
shard byte for byte and the run resumes as if nothing had happened.
"""

import concurrent.futures
import contextlib
import dataclasses
import json
import os
import re
import struct
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

from pyramidnet_tf.data import augment
from pyramidnet_tf.data import autoaugment as autoaugment_lib

MANIFEST = "manifest.json"
CIFAR_KINDS = ("cifar10", "cifar100")
SHUFFLE_BUFFER = {"cifar": 50000, "imagenet": 10000}
EVAL_SPLITS = ("validation", "test", "val")

_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


class DataError(ValueError):
  """A data directory that does not hold what the trainer needs."""


def repair_advice(data_dir: str) -> str:
  """What to do about a damaged shard of ``data_dir``."""
  return (f"run `python -m data_prep.verify --data_dir={data_dir}` to check "
          "every shard, then re-run the conversion into that directory (it "
          "rewrites only the shards that changed)")


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
  def manifest_path(self) -> str:
    return os.path.join(self.data_dir, MANIFEST)

  def find_eval_split(self) -> Optional[str]:
    """validation, test or val, whichever the manifest has; None if none."""
    for name in EVAL_SPLITS:
      if name in self.splits:
        return name
    return None

  @property
  def eval_split(self) -> str:
    split = self.find_eval_split()
    if split is None:
      names = sorted(self.splits)
      raise DataError(
          f"{self.manifest_path} has no evaluation split "
          f"({', '.join(EVAL_SPLITS)}), only {', '.join(names)}: pass "
          f"--split={names[0]} to evaluate on it, or re-run the conversion "
          "with one (data_prep.folder: --val_fraction above 0)")
    return split


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


_HEADER = 12  # uint64 little-endian data length, uint32 masked CRC of it
_FOOTER = 4   # uint32 masked CRC of the data
_LENGTH = struct.Struct("<Q")
_READ_ERROR = re.compile(r"(corrupted|truncated) record at (\d+)")


def _frames(path: str) -> Iterator[Tuple[int, int]]:
  """(index, byte offset) of each record of a TFRecord file, from the length
  headers alone; DataError naming the file when they do not tile it exactly
  (a file cut short, or a damaged length header)."""
  try:
    if "://" in path:
      handle = tf.io.gfile.GFile(path, "rb")
      size = handle.size()

      def read(offset):
        handle.seek(offset)
        return handle.read(_HEADER)
      close = handle.close
    else:
      fd = os.open(path, os.O_RDONLY)
      size = os.fstat(fd).st_size

      def read(offset):
        return os.pread(fd, _HEADER, offset)

      def close():
        os.close(fd)
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, "strerror", None) or getattr(e, "message", e)
    raise DataError(f"{path}: cannot be read ({reason})") from None
  try:
    offset = index = 0
    while offset < size:
      header = read(offset)
      end = size + 1
      if len(header) == _HEADER:
        end = offset + _HEADER + _LENGTH.unpack_from(header)[0] + _FOOTER
      if end > size:
        raise DataError(
            f"{path}: record {index} (byte {offset:,}) is truncated: the file "
            f"ends {size - offset:,} bytes into it (cut short, or its length "
            f"header is damaged); {repair_advice(os.path.dirname(path))}")
      yield index, offset
      offset = end
      index += 1
  finally:
    close()


def count_records(path: str) -> int:
  """Records in a TFRecord file (its framing, no decoding); DataError if the
  file is truncated."""
  count = 0
  for count, _ in enumerate(_frames(path), 1):
    pass
  return count


def _count_shards(shards: Sequence[Shard]) -> List[int]:
  if len(shards) <= 1:
    return [count_records(s.path) for s in shards]
  with concurrent.futures.ThreadPoolExecutor(min(16, len(shards))) as pool:
    return list(pool.map(lambda s: count_records(s.path), shards))


def recount(info: DataInfo, splits: Sequence[str]
            ) -> Tuple[DataInfo, Dict[str, str]]:
  """``info`` with the shards of ``splits`` counted from their files.

  Returns the corrected info and, for each split whose manifest count
  differs from its files, one line naming the manifest, the split, both
  counts and the shards that differ (the caller says what it does about it).
  """
  splits_out = dict(info.splits)
  mismatches = {}
  for split in splits:
    shards = info.shards(split)
    counted = tuple(Shard(s.path, n)
                    for s, n in zip(shards, _count_shards(shards)))
    splits_out[split] = counted
    listed = sum(s.num_examples for s in shards)
    held = sum(s.num_examples for s in counted)
    differ = [f"{os.path.basename(a.path)} holds {b.num_examples:,}, listed "
              f"{a.num_examples:,}" for a, b in zip(shards, counted)
              if a.num_examples != b.num_examples]
    if differ:
      more = f" and {len(differ) - 3} more" if len(differ) > 3 else ""
      mismatches[split] = (
          f"{info.manifest_path} says split {split!r} has {listed:,} examples "
          f"but its shards hold {held:,} ({'; '.join(differ[:3])}{more})")
  return dataclasses.replace(info, splits=splits_out), mismatches


def _first_unreadable(path: str) -> Optional[int]:
  """Index of the first record of ``path`` that TensorFlow cannot read."""
  index = 0
  try:
    for _ in tf.data.TFRecordDataset(path):
      index += 1
  except tf.errors.DataLossError:
    return index
  return None


def locate_read_error(info: DataInfo, splits: Sequence[str],
                      error: "tf.errors.DataLossError") -> Optional[str]:
  """One line naming the shard and record behind a TFRecord read error.

  TensorFlow's message gives only the byte offset ("corrupted record at
  N"), so the shards of ``splits`` with a record there (by their framing)
  are re-read to find the one that fails; all of them if none has. None
  when ``error`` is not a TFRecord read error.
  """
  match = _READ_ERROR.search(error.message or "")
  if match is None:
    return None
  offset = int(match.group(2))
  shards = [s for split in splits for s in info.shards(split)]
  candidates = set()
  try:
    for shard in shards:
      for _, start in _frames(shard.path):
        if offset in (start, start + _HEADER):
          candidates.add(shard.path)
  except DataError as e:  # cut short since it was counted
    return str(e)
  ordered = [s.path for s in shards if s.path in candidates] + [
      s.path for s in shards if s.path not in candidates]
  for path in ordered:
    index = _first_unreadable(path)
    if index is not None:
      starts = dict(_frames(path))
      where = f" (byte {starts[index]:,})" if index in starts else ""
      what = ("is corrupted: its checksum does not match"
              if match.group(1) == "corrupted" else "is truncated")
      return (f"{path}: record {index}{where} {what}; "
              f"{repair_advice(info.data_dir)}")
  return (f"reading {', '.join(splits)} of {info.data_dir} failed "
          f"({match.group(0)}) but every shard reads back now; "
          f"{repair_advice(info.data_dir)}")


@contextlib.contextmanager
def named_read_errors(info: Optional[DataInfo], splits: Sequence[str],
                      error_class=DataError):
  """Turns a TFRecord read error from reading ``splits`` of ``info`` into
  ``error_class`` with ``locate_read_error``'s line (other errors pass)."""
  try:
    yield
  except tf.errors.DataLossError as e:
    line = locate_read_error(info, splits, e) if info is not None else None
    if line is None:
      raise
    raise error_class(line) from None


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
                      pipeline_id: int, allow_empty: bool = False
                      ) -> Tuple[tf.data.Dataset, int]:
  """This pipeline's records (fixed order) and how many there are.

  The count is the manifest's: callers that must be exact pass an info from
  ``recount``. ``allow_empty``: evaluation, where a pipeline without records
  just pads.
  """
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
  if count == 0 and not allow_empty:
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


def eval_dataset(info: DataInfo, preprocessing: Preprocessing,
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


def check_evaluated(info: DataInfo, split: str, examples: float) -> None:
  """DataError unless an evaluation counted every record of ``split``."""
  expected = info.num_examples(split)
  if int(round(examples)) != expected:
    raise DataError(
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

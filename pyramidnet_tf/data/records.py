"""Record counts and read errors of TFRecord shards, from their framing.

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

A record can also be intact but wrong: not a tf.train.Example, an image that
does not decode, RAW bytes that are not height x width x 3, a label outside
the manifest's classes (or a manifest whose num_classes or label_base does
not match its shards). ``parse_checked`` checks each record as the input
pipelines read it, and ``named_read_errors`` turns what it finds into one
line naming the shard and the record; an image that fails to decode is found
by re-reading the shards (``locate_bad_record``), since TensorFlow's decoders
do not say which record they were given.
"""

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import struct
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from pyramidnet_tf.data import augment
from pyramidnet_tf.data import manifest as manifest_lib


_HEADER = 12  # uint64 little-endian data length, uint32 masked CRC of it


_FOOTER = 4   # uint32 masked CRC of the data


_LENGTH = struct.Struct("<Q")


_READ_ERROR = re.compile(r"(corrupted|truncated) record at (\d+)")


_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/format": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "image/height": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/width": tf.io.FixedLenFeature([], tf.int64, default_value=0),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
}


# First datum of the assertion ``parse_checked`` adds; the rest: split,
# shard (its place in the split's shard list), record, label, image bytes,
# height, width, 1 for RAW.
_BAD_RECORD = "pyramidnet_tf bad record"


_BAD_RECORD_ERROR = re.compile(
    r"assertion failed: \[" + _BAD_RECORD + r"\] \[([^\]]*)\] \[(\d+)\] "
    r"\[(\d+)\] \[(-?\d+)\] \[(\d+)\] \[(-?\d+)\] \[(-?\d+)\] \[([01])\]")


# Where a TensorFlow error comes from the input pipeline rather than a step
# (a record that is not an Example cuts the message at its first NUL byte,
# before the node names).
_INPUT_ERROR = re.compile(r"IteratorGetNext|user-defined function passed to|"
                          r"Could not parse example input")


def _frames(path: str) -> Iterator[Tuple[int, int]]:
  """(index, byte offset) of each record of a TFRecord file, from the length
  headers alone; ``DataError`` naming the file when they do not tile it
  exactly (a file cut short, or a damaged length header)."""
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
    raise manifest_lib.DataError(f"{path}: cannot be read ({reason})") from None
  try:
    offset = index = 0
    while offset < size:
      header = read(offset)
      end = size + 1
      if len(header) == _HEADER:
        end = offset + _HEADER + _LENGTH.unpack_from(header)[0] + _FOOTER
      if end > size:
        raise manifest_lib.DataError(
            f"{path}: record {index} (byte {offset:,}) is truncated: the file "
            f"ends {size - offset:,} bytes into it (cut short, or its length "
            "header is damaged); "
            f"{manifest_lib.repair_advice(os.path.dirname(path))}")
      yield index, offset
      offset = end
      index += 1
  finally:
    close()


def count_records(path: str) -> int:
  """Records in a TFRecord file (its framing, no decoding); ``DataError`` if
  the file is truncated."""
  count = 0
  for count, _ in enumerate(_frames(path), 1):
    pass
  return count


def _count_shards(shards: Sequence[manifest_lib.Shard]) -> List[int]:
  if len(shards) <= 1:
    return [count_records(s.path) for s in shards]
  with concurrent.futures.ThreadPoolExecutor(min(16, len(shards))) as pool:
    return list(pool.map(lambda s: count_records(s.path), shards))


def recount(info: manifest_lib.DataInfo, splits: Sequence[str]
            ) -> Tuple[manifest_lib.DataInfo, Dict[str, str]]:
  """``info`` with the shards of ``splits`` counted from their files.

  Returns the corrected info and, for each split whose manifest count
  differs from its files, one line naming the manifest, the split, both
  counts and the shards that differ (the caller says what it does about it).
  """
  splits_out = dict(info.splits)
  mismatches = {}
  for split in splits:
    shards = info.shards(split)
    counted = tuple(manifest_lib.Shard(s.path, n)
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


def locate_read_error(info: manifest_lib.DataInfo, splits: Sequence[str],
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
  except manifest_lib.DataError as e:  # cut short since it was counted
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
              f"{manifest_lib.repair_advice(info.data_dir)}")
  return (f"reading {', '.join(splits)} of {info.data_dir} failed "
          f"({match.group(0)}) but every shard reads back now; "
          f"{manifest_lib.repair_advice(info.data_dir)}")


def parse_checked(record, split: str, shard, index, label_base: int,
                  num_classes: int):
  """A record's features, usable only once the record passes its checks.

  The label must be one of the manifest's classes, and RAW image bytes must
  be height x width x 3; otherwise reading fails with an assertion that
  names the split, shard and record (``bad_record_line`` reads it). The
  image bytes are returned behind the check, so nothing decodes them first.

  Args:
    record: a serialized tf.train.Example (scalar string tensor).
    split: the split the record belongs to.
    shard: the shard's place in ``info.shards(split)`` (int64 scalar).
    index: the record's place in its shard (int64 scalar).
    label_base: the manifest's label_base (label of class 0).
    num_classes: the manifest's num_classes.

  Returns:
    (encoded, image_format, height, width, class index as int32).
  """
  features = tf.io.parse_single_example(record, _FEATURES)
  encoded = features["image/encoded"]
  image_format = features["image/format"]
  height, width = features["image/height"], features["image/width"]
  label = features["image/class/label"]
  num_bytes = tf.cast(tf.strings.length(encoded), tf.int64)
  raw = tf.equal(tf.strings.lower(image_format), "raw")
  raw_ok = (height > 0) & (width > 0) & tf.equal(num_bytes, height * width * 3)
  ok = (label >= label_base) & (label < label_base + num_classes) & (
      tf.logical_not(raw) | raw_ok)
  check = tf.debugging.Assert(ok, [
      _BAD_RECORD, split, tf.cast(shard, tf.int64), tf.cast(index, tf.int64),
      label, num_bytes, height, width, tf.cast(raw, tf.int64)])
  with tf.control_dependencies([check]):
    return (tf.identity(encoded), image_format, tf.cast(height, tf.int32),
            tf.cast(width, tf.int32), tf.cast(label - label_base, tf.int32))


def _shard_path(info: manifest_lib.DataInfo, split: str, shard: int
                ) -> Optional[str]:
  if split not in info.splits or not 0 <= shard < len(info.shards(split)):
    return None
  return info.shards(split)[shard].path


def bad_record_line(info: manifest_lib.DataInfo, message: str
                    ) -> Optional[str]:
  """One line for a ``parse_checked`` assertion in ``message``, else None."""
  match = _BAD_RECORD_ERROR.search(message or "")
  if match is None:
    return None
  split = match.group(1)
  shard, index, label, num_bytes, height, width = map(int, match.groups()[1:7])
  path = _shard_path(info, split, shard)
  if path is None:
    return None
  base, classes = info.label_base, info.num_classes
  if not base <= label < base + classes:
    return (f"{path}: record {index} has label {label}, outside the "
            f"{classes} classes {info.manifest_path} lists (labels {base}.."
            f"{base + classes - 1}: num_classes {classes}, label_base "
            f"{base}), so the shard or the manifest is wrong; "
            f"{manifest_lib.repair_advice(info.data_dir)}")
  return (f"{path}: record {index} is a RAW image of {num_bytes:,} bytes, not "
          f"height x width x 3 = {height} x {width} x 3 = "
          f"{height * width * 3:,}; {manifest_lib.repair_advice(info.data_dir)}")


def _numbered_records(info: manifest_lib.DataInfo, split: str
                      ) -> tf.data.Dataset:
  """(shard, record index, record) of every record of ``split``."""
  shards = info.shards(split)
  return tf.data.Dataset.from_tensor_slices(
      (tf.range(len(shards), dtype=tf.int64), [s.path for s in shards])
  ).interleave(
      lambda shard, path: tf.data.TFRecordDataset(path).enumerate().map(
          lambda index, record: (shard, index, record)),
      cycle_length=max(1, min(len(shards), 8)),
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)


def _prepared(info: manifest_lib.DataInfo, split: str):
  """(shard, index, record) -> (shard, index) once the record is checked and
  its image decoded, as the input pipelines would."""
  def prepare(shard, index, record):
    encoded, image_format, height, width, _ = parse_checked(
        record, split, shard, index, info.label_base, info.num_classes)
    image = augment.decode(encoded, image_format, height, width)
    with tf.control_dependencies([tf.shape(image)]):
      return tf.identity(shard), index
  return prepare


def _reason(error: tf.errors.OpError) -> str:
  """The first line of TensorFlow's message, without its node prefixes."""
  line = (error.message or type(error).__name__).strip().splitlines()[0]
  line = re.sub(r"^(\{\{[^}]*\}\}\s*)+", "", line)
  _, found, after = line.partition(" transformation with iterator: ")
  if found:
    line = re.sub(r"^Iterator::[\w:]+: ", "", after)
  if line.startswith("Could not parse example input"):
    return "not a serialized tf.train.Example"
  return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip()


def locate_bad_record(info: manifest_lib.DataInfo, splits: Sequence[str]
                      ) -> Optional[str]:
  """One line naming the first record of ``splits`` that cannot be prepared.

  Reads every record of the splits' shards (in parallel) through the
  pipelines' checks and image decoding: what a decoder error gives no
  record for. None when every record reads back now.

  Args:
    info: the data directory.
    splits: the splits the failed pipeline read.
  """
  for split in splits:
    counts = [s.num_examples for s in info.shards(split)]
    seen = [np.zeros(n, bool) for n in counts]
    good = _numbered_records(info, split).map(
        _prepared(info, split), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=False).ignore_errors().batch(4096)
    for shards, indices in good.as_numpy_iterator():
      for shard, index in zip(shards, indices):
        if index < len(seen[shard]):
          seen[shard][index] = True
    for shard, marks in enumerate(seen):
      if marks.all():
        continue
      index = int(np.argmin(marks))
      path = info.shards(split)[shard].path
      one = tf.data.TFRecordDataset(path).skip(index).take(1).map(
          lambda record, s=shard, i=index: _prepared(info, split)(
              tf.constant(s, tf.int64), tf.constant(i, tf.int64), record))
      try:
        for _ in one:
          pass
      except tf.errors.OpError as e:
        line = bad_record_line(info, e.message)
        if line is not None:
          return line
        return (f"{path}: record {index} cannot be read as an image record "
                f"({_reason(e)}); {manifest_lib.repair_advice(info.data_dir)}")
  return None


def missing_shard_line(info: manifest_lib.DataInfo, splits: Sequence[str],
                       message: str = "") -> Optional[str]:
  """One line naming a shard of ``splits`` that is gone since it was counted
  (the one ``message`` names first); None when every shard is there."""
  gone = [(split, s.path) for split in splits for s in info.shards(split)
          if not tf.io.gfile.exists(s.path)]
  if not gone:
    return None
  gone.sort(key=lambda item: item[1] not in (message or ""))
  split, path = gone[0]
  more = f" (and {len(gone) - 1} more of its shards)" if len(gone) > 1 else ""
  return (f"{path}: this shard of split {split!r} is gone{more}: deleted or "
          "moved after the run counted it; put it back, or re-run the "
          f"conversion into {info.data_dir}, then run the same command again")


@contextlib.contextmanager
def named_read_errors(info: Optional[manifest_lib.DataInfo],
                      splits: Sequence[str],
                      error_class=manifest_lib.DataError):
  """Turns a failure to read ``splits`` of ``info`` into ``error_class`` with
  one line naming the shard (and record): a TFRecord read error
  (``locate_read_error``), a record that fails ``parse_checked`` or does not
  decode (``locate_bad_record``), or a shard that is gone. Other errors
  pass."""
  try:
    yield
  except tf.errors.DataLossError as e:
    line = locate_read_error(info, splits, e) if info is not None else None
    if line is None:
      raise
    raise error_class(line) from None
  except tf.errors.InvalidArgumentError as e:
    line = None
    if info is not None:
      line = bad_record_line(info, e.message)
      if line is None and _INPUT_ERROR.search(e.message or ""):
        line = locate_bad_record(info, splits)
    if line is None:
      raise
    raise error_class(line) from None
  except tf.errors.NotFoundError as e:
    line = (missing_shard_line(info, splits, e.message) if info is not None
            else None)
    if line is None:
      raise
    raise error_class(line) from None


def first_image_size(info: manifest_lib.DataInfo, split: str
                     ) -> Optional[Tuple[int, int]]:
  """(height, width) of the first image of ``split``, from its record.

  Why: CIFAR-style evaluation pads or crops the data's images to the
  model's size without resizing, so a model fed another size than it was
  trained at scores wrongly without any error; callers compare the two.

  Args:
    info: the data directory's manifest.
    split: the split to look at.

  Returns:
    The record's ``image/height`` and ``image/width``, or None when the
    split is empty, the record lacks them, or it cannot be read (the
    evaluation reports that itself).
  """
  features = {"image/height": tf.io.FixedLenFeature([], tf.int64, 0),
              "image/width": tf.io.FixedLenFeature([], tf.int64, 0)}
  for shard in info.shards(split):
    if shard.num_examples == 0:
      continue
    try:
      for record in tf.data.TFRecordDataset(shard.path).take(1):
        parsed = tf.io.parse_single_example(record, features)
        height = int(parsed["image/height"])
        width = int(parsed["image/width"])
        return (height, width) if height > 0 and width > 0 else None
    except (tf.errors.OpError, ValueError):
      return None
    return None
  return None

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
"""

import concurrent.futures
import contextlib
import dataclasses
import os
import re
import struct
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import tensorflow as tf

from pyramidnet_tf.data import manifest as manifest_lib


_HEADER = 12  # uint64 little-endian data length, uint32 masked CRC of it


_FOOTER = 4   # uint32 masked CRC of the data


_LENGTH = struct.Struct("<Q")


_READ_ERROR = re.compile(r"(corrupted|truncated) record at (\d+)")


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


@contextlib.contextmanager
def named_read_errors(info: Optional[manifest_lib.DataInfo],
                      splits: Sequence[str],
                      error_class=manifest_lib.DataError):
  """Turns a TFRecord read error from reading ``splits`` of ``info`` into
  ``error_class`` with ``locate_read_error``'s line (other errors pass)."""
  try:
    yield
  except tf.errors.DataLossError as e:
    line = locate_read_error(info, splits, e) if info is not None else None
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

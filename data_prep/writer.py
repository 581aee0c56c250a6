"""Writing shards into the output folder so that a killed run never leaves a bad one.

Each shard is written to a hidden temporary file, flushed to disk, its checksums recorded in
a state file under STATE_DIR, and only then renamed to its final name; `write_shards` does
this in this process or in a pool of worker processes. `commit` writes manifest.json last
and removes the state folder. A full disk becomes a DiskFullError that says how to resume.
docs/data-format.md describes what a reader can rely on.
"""

import errno
import hashlib
import json
import multiprocessing
import os
import re
import sys
from typing import Callable, Dict, Iterator, Optional, Sequence

from data_prep import DataPrepError
from pyramidnet_tf import images
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import progress as progress_lib
from data_prep import tf_import

STATE_DIR = ".data_prep_state"
TEMP_RE = re.compile(r"^\..+-\d{5}-of-\d{5}\.tfrecord\.tmp-\d+$")
_PROGRESS_EVERY = 32  # images between progress updates from a worker process


# ---------------------------------------------------------------------------------------
# Files: checksums, atomic JSON, durable renames.


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
  """The SHA-256 of a file, as manifests record it for shards.

  Args:
    path: The file.
    chunk: Bytes read at a time.

  Returns:
    The hex digest.

  Raises:
    OSError: The file cannot be read.
  """
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while True:
      block = f.read(chunk)
      if not block:
        return h.hexdigest()
      h.update(block)


def _write_json_atomic(path: str, obj) -> None:
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, ensure_ascii=False)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _fsync_dir(path: str) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def count_records(path: str) -> int:
  """Records in a TFRecord file, counted by its framing (12-byte length headers).

  Args:
    path: The TFRecord file.

  Returns:
    The number of records, or -1 if the file ends inside a record.
  """
  size = os.path.getsize(path)
  offset = count = 0
  with open(path, "rb", buffering=0) as f:
    while offset < size:
      f.seek(offset)
      header = f.read(12)
      if len(header) < 12:
        return -1
      offset += 16 + int.from_bytes(header[:8], "little")
      if offset > size:
        return -1
      count += 1
  return count


def record_state(output_dir: str, result: planning.ShardResult) -> None:
  """Records a finished shard's result in the state folder (until manifest.json is written).

  Args:
    output_dir: The output folder.
    result: The shard's result.
  """
  state_dir = os.path.join(output_dir, STATE_DIR)
  os.makedirs(state_dir, exist_ok=True)
  _write_json_atomic(os.path.join(state_dir, result.file + ".json"), result.to_json())


def commit(output_dir: str, manifest: dict) -> None:
  """Writes manifest.json atomically, then removes the state folder.

  Args:
    output_dir: The output folder, holding every shard the manifest lists.
    manifest: The manifest to write.
  """
  _write_json_atomic(os.path.join(output_dir, manifest_lib.MANIFEST), manifest)
  state_dir = os.path.join(output_dir, STATE_DIR)
  for name in os.listdir(state_dir):
    os.remove(os.path.join(state_dir, name))
  os.rmdir(state_dir)
  _fsync_dir(output_dir)


def remove_temp_files(output_dir: str) -> None:
  """Removes the hidden temporary shard files of any run in `output_dir`.

  Args:
    output_dir: The output folder.
  """
  for name in os.listdir(output_dir):
    if TEMP_RE.match(name):
      try:
        os.remove(os.path.join(output_dir, name))
      except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------
# A full disk.

_NO_SPACE = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file would exceed the file size limit",
}


class DiskFullError(DataPrepError):
  """The output folder ran out of space; rerunning the same command resumes."""


def no_space_reason(error: BaseException) -> Optional[str]:
  """Why `error` means the output is out of space, or None if it does not.

  Args:
    error: Python's OSError or TensorFlow's status error (or anything else).

  Returns:
    A short reason ("the disk is full ..."), or None.
  """
  if isinstance(error, OSError):
    return _NO_SPACE.get(error.errno)
  tf = sys.modules.get("tensorflow")
  if tf is not None and isinstance(error, tf.errors.OpError):
    for code, reason in _NO_SPACE.items():  # TensorFlow reports "<path>; <strerror>"
      if os.strerror(code) in (error.message or ""):
        return reason
  return None


def disk_full_error(output_dir: str, reason: str) -> DiskFullError:
  """The error that tells the user to free space and rerun.

  Args:
    output_dir: The output folder.
    reason: What `no_space_reason` said.

  Returns:
    The error, to be raised.
  """
  return DiskFullError(f"cannot write --output_dir={output_dir}: {reason}; free some space and "
                       "rerun the same command: it keeps every finished shard and writes the "
                       "rest (nothing half-written is kept)")


# ---------------------------------------------------------------------------------------
# Writing one shard (in the main process or in a worker process).

_open_archives: Dict[str, int] = {}


def read_source(item: planning.Item) -> bytes:
  """The input bytes of an image.

  Args:
    item: The input.

  Returns:
    Its bytes (for "raw" items, the pixels).

  Raises:
    OSError: The file cannot be read.
    DataPrepError: The archive ends inside the image.
    ValueError: The item has an unknown source kind.
  """
  kind = item.source[0]
  if kind == "raw":
    return item.source[1]
  if kind == "file":
    with open(item.source[1], "rb") as f:
      return f.read()
  if kind == "tar":
    path, offset = item.source[1], item.source[2]
    fd = _open_archives.get(path)
    if fd is None:
      fd = _open_archives[path] = os.open(path, os.O_RDONLY)
    data = os.pread(fd, item.size, offset)
    if len(data) != item.size:
      raise DataPrepError(f"{path} ends at byte {offset + len(data)} inside {item.key} "
                          f"({item.size} bytes at offset {offset}): the archive is truncated")
    return data
  raise ValueError(f"unknown source kind {kind!r}")


def _example(tf, encoded: bytes, image_format: bytes, height: int, width: int,
             item: planning.Item) -> bytes:
  def b(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

  def i(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
  feature = {
      "image/encoded": b(encoded),
      "image/format": b(image_format),
      "image/height": i(height),
      "image/width": i(width),
      "image/class/label": i(item.label),
      "image/filename": b(item.filename.encode("utf-8")),
  }
  if item.synset is not None:
    feature["image/class/synset"] = b(item.synset.encode("ascii"))
  if item.coarse_label is not None:
    feature["image/class/coarse_label"] = i(item.coarse_label)
  example = tf.train.Example(features=tf.train.Features(feature=feature))
  return example.SerializeToString(deterministic=True)


def write_shard(plan: planning.ShardPlan, output_dir: str,
                on_progress: Callable[[int], None] = lambda n: None) -> planning.ShardResult:
  """Writes one shard atomically and records its state file.

  Inputs that cannot be read or decoded are rejected (listed in the result), not raised.

  Args:
    plan: The shard to write.
    output_dir: The output folder.
    on_progress: Called with the number of inputs done since its last call.

  Returns:
    The shard's result.

  Raises:
    DiskFullError: The output ran out of space (the temporary file is removed).
    DataPrepError: The written file does not hold every record, or an archive is truncated.
  """
  tf = tf_import.tensorflow()
  final = os.path.join(output_dir, plan.file)
  tmp = os.path.join(output_dir, f".{plan.file}.tmp-{os.getpid()}")
  inputs = hashlib.sha256()
  repaired, rejected = [], []
  written = 0
  pending = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for item in plan.items:
        try:
          data = read_source(item)
        except OSError as e:
          data = None
          rejected.append((item.filename, f"cannot read: {e}"))
        if data is not None:
          inputs.update(item.key.encode("utf-8") + b"\0" + len(data).to_bytes(8, "little"))
          inputs.update(data)
          if item.source[0] == "raw":
            _, pixels, height, width = item.source
            writer.write(_example(tf, pixels, b"RAW", height, width, item))
            written += 1
          else:
            prepared = images.prepare(data)
            if prepared.status == images.REJECTED:
              rejected.append((item.filename, prepared.reason))
            else:
              writer.write(_example(tf, prepared.encoded, b"JPEG", prepared.height,
                                    prepared.width, item))
              if prepared.status == images.REPAIRED:
                repaired.append((item.filename, prepared.reason))
              else:
                written += 1
        pending += 1
        if pending >= _PROGRESS_EVERY:
          on_progress(pending)
          pending = 0
    with open(tmp, "rb+") as f:
      os.fsync(f.fileno())
    held = count_records(tmp)
    if held != written + len(repaired):
      found = f"holds {held}" if held >= 0 else "ends inside a record"
      raise DataPrepError(f"{tmp}: {written + len(repaired)} records were written but the file "
                          f"{found}; rerun the same command to write this shard again")
    result = planning.ShardResult(
        split=plan.split, file=plan.file, num_examples=written + len(repaired),
        sha256=sha256_file(tmp), plan_sha256=plan.plan_sha256,
        input_sha256=inputs.hexdigest(), written=written, repaired=repaired,
        rejected=rejected)
    record_state(output_dir, result)
    os.replace(tmp, final)
  except Exception as e:  # pylint: disable=broad-except
    reason = no_space_reason(e)
    if reason is None:
      raise
    # A DataPrepError, not TensorFlow's error: it crosses the process pool intact.
    raise disk_full_error(output_dir, reason) from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  on_progress(pending)
  return result


# ---------------------------------------------------------------------------------------
# Writing many shards.

_worker_counter = None


def _init_worker(counter) -> None:
  global _worker_counter
  _worker_counter = counter
  tf_import.tensorflow()


def _count_in_worker(n: int) -> None:
  if n:
    with _worker_counter.get_lock():
      _worker_counter.value += n


def _write_shard_in_worker(args) -> planning.ShardResult:
  plan, output_dir = args
  return write_shard(plan, output_dir, _count_in_worker)


def _write_in_pool(plans: Sequence[planning.ShardPlan], output_dir: str, workers: int,
                   progress: progress_lib.Progress) -> Iterator[planning.ShardResult]:
  context = multiprocessing.get_context("spawn")
  counter = context.Value("q", 0)
  with context.Pool(min(workers, len(plans)), initializer=_init_worker,
                    initargs=(counter,)) as pool:
    results = pool.imap_unordered(_write_shard_in_worker,
                                  [(plan, output_dir) for plan in plans], chunksize=1)
    try:
      while True:
        try:
          result = results.next(timeout=0.25)
        except multiprocessing.TimeoutError:
          progress.set(counter.value)
          continue
        except StopIteration:
          break
        progress.set(counter.value)
        yield result
    except BaseException:
      # The other workers are stopped mid-shard: remove their temporary files now, so that a
      # full disk gets its space back (the next run would remove them too).
      pool.terminate()
      pool.join()
      remove_temp_files(output_dir)
      raise


def write_shards(plans: Sequence[planning.ShardPlan], output_dir: str, workers: int,
                 progress: progress_lib.Progress) -> Iterator[planning.ShardResult]:
  """Writes the shards: in this process when workers == 1, else in a process pool.

  Once every shard is written, the folder itself is synced so that their renames last.

  Args:
    plans: The shards to write.
    output_dir: The output folder.
    workers: How many processes may write at once.
    progress: Counts the inputs done.

  Yields:
    Each shard's result, in the order they finish.

  Raises:
    DiskFullError, DataPrepError: As `write_shard` raises them.
  """
  if workers <= 1 or len(plans) <= 1:
    for plan in plans:
      yield write_shard(plan, output_dir, progress.add)
  else:
    yield from _write_in_pool(plans, output_dir, workers, progress)
  _fsync_dir(output_dir)

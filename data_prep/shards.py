"""Deterministic order, atomic and resumable shard writing, checksums and manifest.json.

Output of every converter (`--output_dir=DIR`):

    DIR/<split>-<iiiii>-of-<nnnnn>.tfrecord     e.g. train-00007-of-01024.tfrecord
    DIR/manifest.json

Record order. Each split is sorted by SHA-256("<seed>:<key>"), where the key is stable and
unique within the split (`train_00042` for CIFAR, `n01440764/n01440764_10026.JPEG` for an
ImageNet training image, the file name for a validation image, the relative path in a
folder), never by listing order. Shard i of S holds the records [i*N//S, (i+1)*N//S) of that
order minus the rejected ones, so the same input gives byte-identical shards and manifest on
any machine (repaired images are re-encoded by Pillow: identical wherever the same Pillow,
i.e. the same libjpeg-turbo, is installed).

tf.train.Example features (serialized deterministically):

    image/encoded          bytes   the image (see "Decoding" below)
    image/format           bytes   b"JPEG" or b"RAW"
    image/height           int64   rows of the decoded image
    image/width            int64   columns of the decoded image
    image/class/label      int64   class index + label_base
    image/filename         bytes   UTF-8 name of the input (CIFAR: "train_00042")
    image/class/synset     bytes   WordNet ID, ImageNet only
    image/class/coarse_label int64 CIFAR-100 only: coarse class index + label_base

Decoding, by manifest["image"]["encoding"] (equal to image/format, lower-cased):

    "jpeg": every image/encoded is an 8-bit 3-component JPEG:
            tf.io.decode_jpeg(encoded, channels=3) -> uint8 [image/height, image/width, 3]
            (tf.image.decode_and_crop_jpeg works too).
    "raw":  image/encoded is height*width*3 bytes of uint8 RGB in row-major HWC order:
            tf.reshape(tf.io.decode_raw(encoded, tf.uint8), [image/height, image/width, 3])
            (CIFAR: always [32, 32, 3]; manifest["image"] also gives height and width).

manifest.json (UTF-8 JSON, keys in this order):

    format, format_version  "data_prep shards", 1
    converter               the module that wrote it, e.g. "data_prep.cifar"
    converter_version       data_prep.CONVERTER_VERSION
    dataset                 "cifar10", "cifar100", "imagenet2012" or the folder dataset's name
    num_classes             len(class_names)
    label_base              0, or 1 when written with --label_offset=1: the label of
                            class_names[i] is i + label_base
    class_names             one name per class, in label order
    synsets                 ImageNet only: the WordNet IDs in label order (== class_names)
    class_descriptions      ImageNet with a devkit meta.mat only: its `words` per class
    coarse_class_names      CIFAR-100 only: the 20 superclass names
    image                   {"encoding": "jpeg"|"raw", "format_feature": "JPEG"|"RAW",
                             "channels": 3, "dtype": "uint8", "decode": a one-line recipe,
                             and for raw "layout": "HWC", "height", "width"}
    features                {feature name: "bytes"|"int64"} for every feature written
    order                   {"method": "sha256(seed:key)", "seed": the --seed used}
    source                  {"format": what was read, e.g. "cifar-10 binary archive",
                             "fingerprint": "sha256:<hex>" over every input image's key and
                             bytes in record order (independent of paths, archive layout and
                             file times, so the python and binary CIFAR archives agree)}
    splits                  {split: {"num_examples", "seen", "written", "repaired",
                             "rejected", "shards": [{"file", "num_examples", "sha256",
                             "plan_sha256", "input_sha256"}]}}
                            seen = written (untouched) + repaired + rejected and
                            num_examples = written + repaired. sha256 is the shard file's;
                            plan_sha256 hashes the shard's planned inputs (keys, labels,
                            sizes) and settings; input_sha256 hashes the input bytes it read.
    repaired                [{"split", "image", "shard", "reason"}] for every re-encoded image
    rejected                [{"split", "image", "shard", "reason"}] for every input not written

Atomicity and resume. A shard is written to `DIR/.<name>.tmp-<pid>`, flushed to disk, its
checksums are recorded in `DIR/.data_prep_state/<name>.json`, and only then is it renamed to
its final name; a killed run can leave hidden temporary files (deleted by the next run) but
never a final-named shard that is incomplete (a shard whose record framing does not hold every
record written is an error, not a result). A rerun keeps every shard whose plan_sha256 is
unchanged and whose file still has the recorded SHA-256 (from the state files or the previous
manifest) and redoes the rest. manifest.json is written last, atomically, and only when the
number of rejected inputs is within --max_rejected; the state folder is removed after that.
A full disk stops the run with one line saying so; rerunning the same command resumes it.

Reused output folders. A run deletes only files that a data_prep run wrote there: the shards
listed in its manifest.json or recorded in its state folder, and its own hidden temporary
files. Any other shard-named file (a user's `backup-00000-of-00001.tfrecord`, shards copied in
from elsewhere) or a manifest.json that is not data_prep's makes the run stop before it changes
anything, naming the files, since this tool would otherwise delete or overwrite them.
"""

import collections
import dataclasses
import errno
import hashlib
import json
import multiprocessing
import os
import re
import sys
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from absl import logging

from data_prep import CONVERTER_VERSION, DataPrepError
from data_prep import images
from data_prep import progress as progress_lib

MANIFEST = "manifest.json"
STATE_DIR = ".data_prep_state"
MAX_SHARDS = 99999
SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")
_TEMP_RE = re.compile(r"^\..+-\d{5}-of-\d{5}\.tfrecord\.tmp-\d+$")
_PROGRESS_EVERY = 32  # images between progress updates from a worker process

JPEG_IMAGE = {
    "encoding": "jpeg",
    "format_feature": "JPEG",
    "channels": 3,
    "dtype": "uint8",
    "decode": "tf.io.decode_jpeg(image/encoded, channels=3)",
}


def raw_image(height: int, width: int) -> dict:
  return {
      "encoding": "raw",
      "format_feature": "RAW",
      "channels": 3,
      "dtype": "uint8",
      "layout": "HWC",
      "height": height,
      "width": width,
      "decode": "tf.reshape(tf.io.decode_raw(image/encoded, tf.uint8), "
                "[image/height, image/width, 3])",
  }


class Item(NamedTuple):
  """One input image.

  source is ("file", path), ("tar", path, offset) for `size` bytes at `offset` of an
  uncompressed archive, or ("raw", pixels, height, width) for uint8 HWC RGB bytes.
  """

  key: str
  filename: str
  label: int
  size: int
  source: tuple
  synset: Optional[str] = None
  coarse_label: Optional[int] = None


@dataclasses.dataclass
class DatasetInfo:
  """Everything in the manifest that is not about splits and shards."""

  converter: str
  dataset: str
  class_names: List[str]
  image: dict
  source_format: str
  label_base: int = 0
  synsets: Optional[List[str]] = None
  class_descriptions: Optional[List[str]] = None
  coarse_class_names: Optional[List[str]] = None


@dataclasses.dataclass
class ShardPlan:
  split: str
  index: int
  total: int
  items: List[Item]
  plan_sha256: str = ""

  @property
  def file(self) -> str:
    return shard_name(self.split, self.index, self.total)


@dataclasses.dataclass
class ShardResult:
  split: str
  file: str
  num_examples: int
  sha256: str
  plan_sha256: str
  input_sha256: str
  written: int
  repaired: List[Tuple[str, str]]  # (image, reason)
  rejected: List[Tuple[str, str]]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> "ShardResult":
    return cls(split=d["split"], file=d["file"], num_examples=int(d["num_examples"]),
               sha256=d["sha256"], plan_sha256=d["plan_sha256"],
               input_sha256=d["input_sha256"], written=int(d["written"]),
               repaired=[tuple(r) for r in d["repaired"]],
               rejected=[tuple(r) for r in d["rejected"]])


def shard_name(split: str, index: int, total: int) -> str:
  return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def order_key(seed: int, key: str) -> bytes:
  return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()


def order(items: Iterable[Item], seed: int) -> List[Item]:
  """Items sorted by the seeded hash of their key; duplicate keys are an error."""
  items = list(items)
  keys = collections.Counter(item.key for item in items)
  duplicates = sorted(k for k, n in keys.items() if n > 1)
  if duplicates:
    raise DataPrepError(f"{len(duplicates)} input names occur more than once, e.g. "
                        f"{', '.join(duplicates[:5])}; every image needs a unique name")
  return sorted(items, key=lambda item: (order_key(seed, item.key), item.key))


def _plan_hash(plan: ShardPlan, image: dict, seed: int) -> str:
  h = hashlib.sha256()
  header = [CONVERTER_VERSION, images.REPAIR_JPEG_QUALITY, image["encoding"], seed,
            plan.split, plan.index, plan.total]
  h.update(json.dumps(header).encode("utf-8"))
  for item in plan.items:
    row = [item.key, item.filename, item.label, item.size, item.synset, item.coarse_label]
    if item.source[0] == "raw":
      row.append(hashlib.sha256(item.source[1]).hexdigest())
      row.extend(item.source[2:])
    h.update(b"\n" + json.dumps(row, ensure_ascii=False).encode("utf-8"))
  return h.hexdigest()


def plan_split(split: str, items: Sequence[Item], num_shards: int, seed: int,
               image: dict, flag: str) -> List[ShardPlan]:
  """Orders a split and cuts it into `num_shards` contiguous, near-equal shards."""
  n = len(items)
  if n == 0:
    raise DataPrepError(f"split {split!r} has no images")
  if not 1 <= num_shards <= MAX_SHARDS:
    raise DataPrepError(f"{flag}={num_shards}: must be between 1 and {MAX_SHARDS}")
  if num_shards > n:
    raise DataPrepError(f"{flag}={num_shards} is more than the {n:,} images of split "
                        f"{split!r}; pass {flag}={n} or fewer")
  ordered = order(items, seed)
  plans = []
  for i in range(num_shards):
    plan = ShardPlan(split, i, num_shards, ordered[i * n // num_shards:(i + 1) * n // num_shards])
    plan.plan_sha256 = _plan_hash(plan, image, seed)
    plans.append(plan)
  return plans


def sha256_file(path: str, chunk: int = 1 << 22) -> str:
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


_NO_SPACE = {
    errno.ENOSPC: "the disk is full (no space left on device)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EFBIG: "a file would exceed the file size limit",
}


class DiskFullError(DataPrepError):
  """The output folder ran out of space; rerunning the same command resumes."""


def _no_space_reason(error: BaseException) -> Optional[str]:
  """Why `error` is a full disk (Python's OSError or TensorFlow's status error), or None."""
  if isinstance(error, OSError):
    return _NO_SPACE.get(error.errno)
  tf = sys.modules.get("tensorflow")
  if tf is not None and isinstance(error, tf.errors.OpError):
    for code, reason in _NO_SPACE.items():  # TensorFlow reports "<path>; <strerror>"
      if os.strerror(code) in (error.message or ""):
        return reason
  return None


def _disk_full(output_dir: str, reason: str) -> DiskFullError:
  return DiskFullError(f"cannot write --output_dir={output_dir}: {reason}; free some space and "
                       "rerun the same command: it keeps every finished shard and writes the "
                       "rest (nothing half-written is kept)")


def count_records(path: str) -> int:
  """Records in a TFRecord file by its framing (12-byte length headers); -1 if it is cut short."""
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


# ---------------------------------------------------------------------------------------
# Writing one shard (runs in the main process or in a worker process).

_open_archives: Dict[str, int] = {}
_tf_module = None


def _tf():
  """TensorFlow, imported on first use (planning and the main process of a pool need none).

  The TensorFlow wheel depends on Keras and its __init__ imports parts of Keras when it is
  installed; data_prep uses no Keras, so TensorFlow is imported with `keras` / `tf_keras`
  hidden (they import normally again afterwards). PYRAMIDNET_TF_ALLOW_KERAS=1 turns that off.
  """
  global _tf_module
  if _tf_module is None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    hidden = []
    if "tensorflow" not in sys.modules and os.environ.get("PYRAMIDNET_TF_ALLOW_KERAS") != "1":
      hidden = [name for name in ("keras", "tf_keras") if name not in sys.modules]
    for name in hidden:
      sys.modules[name] = None  # `import keras` raises ImportError while TF imports
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    finally:
      for name in hidden:
        if name in sys.modules and sys.modules[name] is None:
          del sys.modules[name]
    _tf_module = tf
  return _tf_module


def read_source(item: Item) -> bytes:
  """The input bytes of an image; raises OSError if they cannot be read."""
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
             item: Item) -> bytes:
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


def write_shard(plan: ShardPlan, output_dir: str,
                on_progress: Callable[[int], None] = lambda n: None) -> ShardResult:
  """Writes one shard atomically; records its state file; returns its result."""
  tf = _tf()
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
    result = ShardResult(
        split=plan.split, file=plan.file, num_examples=written + len(repaired),
        sha256=sha256_file(tmp), plan_sha256=plan.plan_sha256,
        input_sha256=inputs.hexdigest(), written=written, repaired=repaired,
        rejected=rejected)
    state_dir = os.path.join(output_dir, STATE_DIR)
    os.makedirs(state_dir, exist_ok=True)
    _write_json_atomic(os.path.join(state_dir, plan.file + ".json"), result.to_json())
    os.replace(tmp, final)
  except Exception as e:  # pylint: disable=broad-except
    reason = _no_space_reason(e)
    if reason is None:
      raise
    # A DataPrepError, not TensorFlow's error: it crosses the process pool intact.
    raise _disk_full(output_dir, reason) from None
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  on_progress(pending)
  return result


_worker_counter = None


def _init_worker(counter) -> None:
  global _worker_counter
  _worker_counter = counter
  _tf()


def _count_in_worker(n: int) -> None:
  if n:
    with _worker_counter.get_lock():
      _worker_counter.value += n


def _write_shard_in_worker(args) -> ShardResult:
  plan, output_dir = args
  return write_shard(plan, output_dir, _count_in_worker)


def run_tasks(plans: Sequence[ShardPlan], output_dir: str, workers: int,
              progress: progress_lib.Progress) -> Iterator[ShardResult]:
  """Writes the shards, in this process when workers == 1, else in a process pool."""
  if workers <= 1 or len(plans) <= 1:
    for plan in plans:
      yield write_shard(plan, output_dir, progress.add)
    return
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
      _remove_temp_files(output_dir)
      raise


def _remove_temp_files(output_dir: str) -> None:
  for name in os.listdir(output_dir):
    if _TEMP_RE.match(name):
      try:
        os.remove(os.path.join(output_dir, name))
      except FileNotFoundError:
        pass


# ---------------------------------------------------------------------------------------
# Resume.


def _previous_results(output_dir: str) -> Dict[str, ShardResult]:
  """Shard results recorded by earlier runs: the previous manifest, then state files."""
  found: Dict[str, ShardResult] = {}
  manifest_path = os.path.join(output_dir, MANIFEST)
  if os.path.exists(manifest_path):
    try:
      with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
      for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
          found[shard["file"]] = ShardResult(
              split=split, file=shard["file"], num_examples=shard["num_examples"],
              sha256=shard["sha256"], plan_sha256=shard["plan_sha256"],
              input_sha256=shard["input_sha256"], written=0, repaired=[], rejected=[])
      for kind in ("repaired", "rejected"):
        for entry in manifest[kind]:
          result = found.get(entry["shard"])
          if result is not None:
            getattr(result, kind).append((entry["image"], entry["reason"]))
      for result in found.values():
        result.written = result.num_examples - len(result.repaired)
    except (OSError, ValueError, KeyError, TypeError) as e:
      logging.warning("ignoring unreadable %s (%s); redoing every shard", manifest_path, e)
      found = {}
  state_dir = os.path.join(output_dir, STATE_DIR)
  if os.path.isdir(state_dir):
    for name in sorted(os.listdir(state_dir)):
      if not name.endswith(".tfrecord.json"):
        continue
      try:
        with open(os.path.join(state_dir, name), encoding="utf-8") as f:
          result = ShardResult.from_json(json.load(f))
      except (OSError, ValueError, KeyError, TypeError):
        continue  # an unreadable state file only means that shard is redone
      found[result.file] = result
  return found


def _manifest_files(manifest_path: str) -> Optional[set]:
  """The shard files a data_prep manifest lists; None when the file is not one."""
  try:
    with open(manifest_path, encoding="utf-8") as f:
      manifest = json.load(f)
    if manifest.get("format") != "data_prep shards":
      return None
    return {os.path.basename(shard["file"]) for entry in manifest["splits"].values()
            for shard in entry["shards"]}
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return None


def _check_ownership(output_dir: str) -> None:
  """Refuses, before anything is changed, an output folder holding files this tool would
  delete or overwrite but no data_prep run wrote (the manifest and state files list ours)."""
  manifest_path = os.path.join(output_dir, MANIFEST)
  owned = set()
  if os.path.exists(manifest_path):
    listed = _manifest_files(manifest_path)
    if listed is None:
      raise DataPrepError(f"{manifest_path} is not a data_prep manifest (unreadable, or no "
                          '"format": "data_prep shards"), so this tool will not replace it: move '
                          "it elsewhere or choose another --output_dir")
    owned |= listed
  state_dir = os.path.join(output_dir, STATE_DIR)
  if os.path.isdir(state_dir):
    owned |= {name[:-len(".json")] for name in os.listdir(state_dir)
              if name.endswith(".tfrecord.json")}
  foreign = sorted(name for name in os.listdir(output_dir)
                   if SHARD_RE.match(name) and name not in owned)
  if foreign:
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                      else "")
    raise DataPrepError(
        f"--output_dir={output_dir} holds {_plural(len(foreign), 'shard-named file')} that no "
        f"data_prep run there wrote ({shown}); this tool deletes or overwrites such names, so "
        "move them elsewhere or choose another --output_dir")


def _prepare_output_dir(output_dir: str, plans: Sequence[ShardPlan]) -> Dict[str, ShardResult]:
  """Finds the verified shards to keep, then removes stale files. Returns the kept ones.

  Removes only what earlier runs wrote (see _check_ownership), in an order that keeps every
  remaining shard recorded somewhere if this run is killed: state files for the kept shards,
  then the stale shards (still listed by the old manifest), then the manifest itself.
  """
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise DataPrepError(f"--output_dir={output_dir} exists and is not a folder")
  os.makedirs(output_dir, exist_ok=True)
  _check_ownership(output_dir)
  previous = _previous_results(output_dir)
  planned = {plan.file: plan for plan in plans}
  kept: Dict[str, ShardResult] = {}
  for name, result in previous.items():
    plan = planned.get(name)
    path = os.path.join(output_dir, name)
    if (plan is not None and result.plan_sha256 == plan.plan_sha256
        and result.split == plan.split and os.path.isfile(path)
        and sha256_file(path) == result.sha256):
      kept[name] = result
  state_dir = os.path.join(output_dir, STATE_DIR)
  os.makedirs(state_dir, exist_ok=True)
  for name, result in kept.items():
    # Carry what the old manifest knew into state files before the manifest goes.
    _write_json_atomic(os.path.join(state_dir, name + ".json"), result.to_json())
  for name in sorted(os.listdir(output_dir)):
    path = os.path.join(output_dir, name)
    if _TEMP_RE.match(name) or name.startswith(MANIFEST + ".tmp-"):
      os.remove(path)
    elif SHARD_RE.match(name) and name not in kept:  # ours: _check_ownership passed
      if name not in planned:
        logging.info("removing %s: not part of this conversion", path)
      os.remove(path)
  manifest_path = os.path.join(output_dir, MANIFEST)
  if os.path.exists(manifest_path):
    os.remove(manifest_path)
  for name in sorted(os.listdir(state_dir)):
    if name[:-len(".json")] not in kept:
      os.remove(os.path.join(state_dir, name))
  return kept


# ---------------------------------------------------------------------------------------
# The whole conversion.


@dataclasses.dataclass
class SplitSummary:
  seen: int = 0
  written: int = 0
  repaired: int = 0
  rejected: int = 0
  shards: int = 0


@dataclasses.dataclass
class Summary:
  splits: Dict[str, SplitSummary]
  rejected: List[Tuple[str, str, str]]   # (split, image, reason)
  repaired: List[Tuple[str, str, str]]
  kept_shards: int
  manifest_written: bool
  exit_code: int


def _features(info: DatasetInfo) -> dict:
  features = {
      "image/encoded": "bytes",
      "image/format": "bytes",
      "image/height": "int64",
      "image/width": "int64",
      "image/class/label": "int64",
      "image/filename": "bytes",
  }
  if info.synsets is not None:
    features["image/class/synset"] = "bytes"
  if info.coarse_class_names is not None:
    features["image/class/coarse_label"] = "int64"
  return features


def build_manifest(info: DatasetInfo, seed: int, plans_by_split: Dict[str, List[ShardPlan]],
                   results: Dict[str, ShardResult]) -> dict:
  manifest = {
      "format": "data_prep shards",
      "format_version": 1,
      "converter": info.converter,
      "converter_version": CONVERTER_VERSION,
      "dataset": info.dataset,
      "num_classes": len(info.class_names),
      "label_base": info.label_base,
      "class_names": list(info.class_names),
  }
  if info.synsets is not None:
    manifest["synsets"] = list(info.synsets)
  if info.class_descriptions is not None:
    manifest["class_descriptions"] = list(info.class_descriptions)
  if info.coarse_class_names is not None:
    manifest["coarse_class_names"] = list(info.coarse_class_names)
  manifest["image"] = dict(info.image)
  manifest["features"] = _features(info)
  manifest["order"] = {"method": "sha256(seed:key)", "seed": seed}
  fingerprint = hashlib.sha256()
  splits = {}
  repaired, rejected = [], []
  for split, plans in plans_by_split.items():
    shards = []
    totals = SplitSummary()
    for plan in plans:
      r = results[plan.file]
      fingerprint.update(f"{split}/{r.file}:{r.input_sha256}\n".encode("utf-8"))
      shards.append({"file": r.file, "num_examples": r.num_examples, "sha256": r.sha256,
                     "plan_sha256": r.plan_sha256, "input_sha256": r.input_sha256})
      totals.written += r.written
      totals.repaired += len(r.repaired)
      totals.rejected += len(r.rejected)
      repaired.extend({"split": split, "image": image, "shard": r.file, "reason": reason}
                      for image, reason in r.repaired)
      rejected.extend({"split": split, "image": image, "shard": r.file, "reason": reason}
                      for image, reason in r.rejected)
    splits[split] = {
        "num_examples": totals.written + totals.repaired,
        "seen": totals.written + totals.repaired + totals.rejected,
        "written": totals.written,
        "repaired": totals.repaired,
        "rejected": totals.rejected,
        "shards": shards,
    }
  manifest["source"] = {"format": info.source_format,
                        "fingerprint": "sha256:" + fingerprint.hexdigest()}
  manifest["splits"] = splits
  manifest["repaired"] = repaired
  manifest["rejected"] = rejected
  return manifest


def _plural(count: int, word: str) -> str:
  return f"{count:,} {word}{'' if count == 1 else 's'}"


def _reason_kind(reason: str) -> str:
  return re.sub(r"\d+", "N", reason.split(":")[0])


def print_summary(summary: Summary, output_dir: str, max_rejected: int,
                  out=None) -> None:
  out = out if out is not None else sys.stdout
  width = max(len(s) for s in list(summary.splits) + ["total"])
  total = SplitSummary()
  for split, s in summary.splits.items():
    print(f"{split:<{width}}: seen {s.seen:,} = written {s.written:,} + repaired "
          f"{s.repaired:,} + rejected {s.rejected:,}  ({_plural(s.shards, 'shard')})", file=out)
    for field in ("seen", "written", "repaired", "rejected", "shards"):
      setattr(total, field, getattr(total, field) + getattr(s, field))
  print(f"{'total':<{width}}: seen {total.seen:,} = written {total.written:,} + repaired "
        f"{total.repaired:,} + rejected {total.rejected:,}  ({_plural(total.shards, 'shard')}, "
        f"{summary.kept_shards:,} kept from an earlier run)", file=out)
  if summary.repaired:
    kinds = collections.Counter(_reason_kind(reason) for _, _, reason in summary.repaired)
    print("repaired: " + ", ".join(f"{n:,} {kind}" for kind, n in sorted(kinds.items())) +
          (f" (each listed in {os.path.join(output_dir, MANIFEST)})"
           if summary.manifest_written else ""), file=out)
  for split, image, reason in summary.rejected:
    print(f"rejected: {split} {image}: {reason}", file=out)
  if summary.manifest_written:
    print(f"wrote {os.path.join(output_dir, MANIFEST)}", file=out)
  else:
    print(f"error: {_plural(total.rejected, 'input')} rejected but "
          f"--max_rejected={max_rejected}; "
          f"{MANIFEST} was not written. The shards are kept: rerun the same command with "
          f"--max_rejected={total.rejected} to accept these losses, or fix the inputs and "
          "rerun (only the affected shards are redone).", file=out)


def convert(info: DatasetInfo, splits: Dict[str, Sequence[Item]],
            num_shards: Dict[str, Tuple[int, str]], output_dir: str, workers: int = 1,
            max_rejected: int = 0, seed: int = 0) -> Summary:
  """Plans, writes (or keeps) every shard, then writes manifest.json.

  num_shards maps each split to (shard count, the flag that set it, for error messages).
  All planning errors are raised before anything is written to `output_dir`.
  """
  if workers < 1:
    raise DataPrepError(f"--workers={workers}: must be at least 1")
  if max_rejected < 0:
    raise DataPrepError(f"--max_rejected={max_rejected}: must be 0 or more")
  plans_by_split = {}
  for split, items in splits.items():
    count, flag = num_shards[split]
    plans_by_split[split] = plan_split(split, items, count, seed, info.image, flag)
  try:
    return _convert_planned(info, plans_by_split, output_dir, workers, max_rejected, seed)
  except Exception as e:  # pylint: disable=broad-except
    reason = _no_space_reason(e)
    if reason is None:
      raise
    raise _disk_full(output_dir, reason) from None


def _convert_planned(info: DatasetInfo, plans_by_split: Dict[str, List[ShardPlan]],
                     output_dir: str, workers: int, max_rejected: int, seed: int) -> Summary:
  all_plans = [plan for plans in plans_by_split.values() for plan in plans]
  kept = _prepare_output_dir(output_dir, all_plans)
  todo = [plan for plan in all_plans if plan.file not in kept]
  if kept:
    logging.info("resuming: kept %d verified shards, writing %d", len(kept), len(todo))
  results = dict(kept)
  progress = progress_lib.Progress(sum(len(p.items) for p in todo),
                                   f"writing {len(todo)} shards")
  try:
    for result in run_tasks(todo, output_dir, workers, progress):
      results[result.file] = result
  finally:
    progress.close()
  _fsync_dir(output_dir)

  split_summaries = {}
  all_rejected, all_repaired = [], []
  for split, plans in plans_by_split.items():
    s = SplitSummary(shards=len(plans))
    for plan in plans:
      r = results[plan.file]
      s.written += r.written
      s.repaired += len(r.repaired)
      s.rejected += len(r.rejected)
      all_repaired.extend((split, image, reason) for image, reason in r.repaired)
      all_rejected.extend((split, image, reason) for image, reason in r.rejected)
    s.seen = s.written + s.repaired + s.rejected
    split_summaries[split] = s
  ok = len(all_rejected) <= max_rejected
  if ok:
    manifest = build_manifest(info, seed, plans_by_split, results)
    _write_json_atomic(os.path.join(output_dir, MANIFEST), manifest)
    state_dir = os.path.join(output_dir, STATE_DIR)
    for name in os.listdir(state_dir):
      os.remove(os.path.join(state_dir, name))
    os.rmdir(state_dir)
    _fsync_dir(output_dir)
  summary = Summary(split_summaries, all_rejected, all_repaired, len(kept), ok,
                    0 if ok else 1)
  print_summary(summary, output_dir, max_rejected)
  return summary

"""CIFAR-10 / CIFAR-100 -> sharded TFRecords.

    python -m data_prep.cifar --dataset=cifar10 --source=cifar-10-python.tar.gz --output_dir=DIR
    python -m data_prep.cifar --dataset=cifar100 --download --output_dir=DIR
    python -m data_prep.cifar --dataset=cifar10 --source=tfds [--tfds_data_dir=DIR] --output_dir=DIR

--source is any of cifar-10-python.tar.gz, cifar-10-binary.tar.gz, cifar-100-python.tar.gz,
cifar-100-binary.tar.gz or the folder one of them unpacks to (or a folder above it). Which
format each file holds is read from its content (a Python pickle or fixed-size binary records),
not from its name, and the python and binary archives give byte-identical shards. --download
fetches the official binary archive into --download_dir, checks its SHA-256 before use, and
reuses a verified copy; --download_url / --download_sha256 point it at a mirror or another
file. --source=tfds reads a TFDS `cifar10`/`cifar100` data dir prepared earlier (its files are
read directly, without importing tensorflow_datasets).

Splits `train` and `test`. Record keys (and image/filename) are TFDS's ids: `train_00000` is
the first image of data_batch_1 (CIFAR-100: of `train`), numbered across the batches in
order. Labels are 0-based; CIFAR-100 records also carry image/class/coarse_label.

Pixels are stored raw (manifest image.encoding "raw", image/format b"RAW"): 3,072 bytes of
uint8 RGB in HWC order per image. A reader decodes them with

    tf.reshape(tf.io.decode_raw(features["image/encoded"], tf.uint8), [32, 32, 3])

Raw was chosen over PNG by measuring the trainer's read path (TFRecordDataset -> parse ->
decode -> batch 256, 20,000 CIFAR-like records; `python bench/convert_bench.py
--only=cifar_read`): on one thread raw read 47k images/s against 12k for PNG (1.5x to 4x
across runs on a shared 2-core machine), never slower with parallel calls, for 21% more bytes
(3,216 vs 2,649 bytes a record: CIFAR-10 train is 161 MB instead of 132 MB).
"""

import dataclasses
import hashlib
import importlib
import io
import json
import lzma
import os
import pickle
import re
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from typing import Dict, List, Optional, Tuple

import numpy as np
from absl import app
from absl import flags
from absl import logging
from PIL import Image

from data_prep import DataPrepError
from data_prep import cli
from data_prep import shards

FLAGS = flags.FLAGS

# The official binary archives and their size and SHA-256 (as TFDS pins them).
OFFICIAL_DOWNLOADS = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", 170052171,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", 168513733,
                 "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
}
DEFAULT_TRAIN_SHARDS = 16
DEFAULT_TEST_SHARDS = 4
IMAGE_SHAPE = (32, 32, 3)
_PIXELS = 32 * 32 * 3


@dataclasses.dataclass(frozen=True)
class _Layout:
  name: str                      # "CIFAR-10"
  archives: str                  # what --source may be
  splits: Dict[str, List[str]]   # split -> data files, in record order
  meta_pickle: str               # the python-format meta file
  meta_text: Dict[str, str]      # label kind -> binary-format names file
  num_classes: int
  num_coarse: int                # 0 for CIFAR-10


LAYOUTS = {
    "cifar10": _Layout(
        name="CIFAR-10",
        archives="cifar-10-python.tar.gz or cifar-10-binary.tar.gz",
        splits={"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        meta_pickle="batches.meta",
        meta_text={"label": "batches.meta.txt"},
        num_classes=10, num_coarse=0),
    "cifar100": _Layout(
        name="CIFAR-100",
        archives="cifar-100-python.tar.gz or cifar-100-binary.tar.gz",
        splits={"train": ["train"], "test": ["test"]},
        meta_pickle="meta",
        meta_text={"coarse": "coarse_label_names.txt", "label": "fine_label_names.txt"},
        num_classes=100, num_coarse=20),
}


@dataclasses.dataclass
class CifarData:
  """A whole CIFAR dataset in memory."""

  dataset: str
  pixels: Dict[str, np.ndarray]               # split -> uint8 [N, 32, 32, 3]
  labels: Dict[str, np.ndarray]               # split -> int64 [N]
  coarse_labels: Optional[Dict[str, np.ndarray]]
  keys: Dict[str, List[str]]                  # split -> record keys, e.g. train_00000
  class_names: List[str]
  coarse_class_names: Optional[List[str]]
  source_format: str


# ---------------------------------------------------------------------------------------
# Finding the files, in an archive or a folder.


def _file_names(layout: _Layout) -> List[str]:
  names = []
  for files in layout.splits.values():
    for name in files:
      names += [name, name + ".bin"]
  return names + [layout.meta_pickle] + list(layout.meta_text.values())


_ALL_NAMES = {name for layout in LAYOUTS.values() for name in _file_names(layout)}


def _collect(path: str) -> Tuple[Dict[str, Dict[str, bytes]], List[str]]:
  """{folder: {file name: bytes}} for every CIFAR-looking file; plus a sample of all names."""
  found: Dict[str, Dict[str, bytes]] = {}
  seen: List[str] = []
  if os.path.isdir(path):
    for root, dirs, files in os.walk(path):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      if os.path.relpath(root, path).count(os.sep) >= 3:
        dirs[:] = []
      for name in sorted(files):
        seen.append(os.path.relpath(os.path.join(root, name), path))
        if name in _ALL_NAMES:
          with open(os.path.join(root, name), "rb") as f:
            found.setdefault(os.path.relpath(root, path), {})[name] = f.read()
    return found, seen
  try:
    tar = tarfile.open(path, mode="r:*")
  except tarfile.ReadError:
    raise DataPrepError(f"--source={path} is neither a folder nor a tar archive (plain, gzip, "
                        "bzip2 or xz); expected the CIFAR python or binary archive as "
                        "downloaded, or the folder it unpacks to") from None
  except (tarfile.TarError, OSError) as e:
    raise DataPrepError(f"--source={path} is neither a folder nor a readable tar archive "
                        f"({getattr(e, 'strerror', None) or e})") from None
  try:
    with tar:
      for info in tar:
        if not info.isreg():
          continue
        folder, name = os.path.split(info.name)
        seen.append(info.name)
        if name in _ALL_NAMES:
          found.setdefault(folder, {})[name] = tar.extractfile(info).read()
  except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError, OSError) as e:
    # gzip's EOFError, zlib's and tarfile's errors: a download cut short or damaged.
    reason = " ".join(str(e).split()) or type(e).__name__
    raise DataPrepError(f"--source={path} is truncated or damaged after {len(seen)} members "
                        f"({reason}); download it again") from None
  return found, seen


def _pick_folder(dataset: str, path: str,
                 found: Dict[str, Dict[str, bytes]], seen: List[str]) -> Tuple[str, Dict]:
  layout = LAYOUTS[dataset]

  def complete(files: Dict[str, bytes], lay: _Layout) -> bool:
    data_ok = all(n in files or n + ".bin" in files
                  for names in lay.splits.values() for n in names)
    meta_ok = lay.meta_pickle in files or all(n in files for n in lay.meta_text.values())
    return data_ok and meta_ok

  matches = sorted(folder for folder, files in found.items() if complete(files, layout))
  if len(matches) == 1:
    return matches[0], found[matches[0]]
  if len(matches) > 1:
    raise DataPrepError(f"--source={path} holds {layout.name} more than once (in "
                        f"{', '.join(m or '.' for m in matches)}); pass the folder you mean")
  for other, other_layout in LAYOUTS.items():
    if other != dataset and any(complete(f, other_layout) for f in found.values()):
      raise DataPrepError(f"--source={path} holds {other_layout.name}, not {layout.name}; "
                          f"pass --dataset={other}")
  expected = []
  for split, names in layout.splits.items():
    expected += names
  expected.append(f"{layout.meta_pickle} (or {', '.join(layout.meta_text.values())})")
  sample = ", ".join(seen[:12]) + (f", ... ({len(seen)} files)" if len(seen) > 12 else "")
  raise DataPrepError(
      f"--source={path} does not hold {layout.name}: expected {layout.archives} or the "
      f"folder it unpacks to, with the files {', '.join(expected)} (each with or without "
      f".bin); found: {sample or 'no files'}")


# ---------------------------------------------------------------------------------------
# Parsing the two formats.

_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Loads the CIFAR pickles (dicts, lists, numpy arrays) and refuses anything else."""

  def find_class(self, module, name):
    if (module, name) not in _ALLOWED_GLOBALS:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR pickles hold "
                                   "only dicts, lists, strings and numpy arrays")
    if module.startswith("numpy.core") and hasattr(np, "_core"):
      module = "numpy._core" + module[len("numpy.core"):]
    return getattr(importlib.import_module(module), name)


def _is_pickle(data: bytes) -> bool:
  return data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")


def _unpickle(data: bytes, where: str) -> dict:
  try:
    obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
  except Exception as e:  # pickle raises many types for damaged data.
    raise DataPrepError(f"{where}: cannot read the pickle ({type(e).__name__}: {e})") from None
  if not isinstance(obj, dict):
    raise DataPrepError(f"{where}: expected a pickled dict, found {type(obj).__name__}")
  return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _field(batch: dict, key: str, where: str):
  if key not in batch:
    raise DataPrepError(f"{where}: missing {key!r}; it has {', '.join(sorted(batch))}")
  return batch[key]


def _parse_pickle_batch(data: bytes, where: str, layout: _Layout):
  batch = _unpickle(data, where)
  pixels = np.asarray(_field(batch, "data", where))
  if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != _PIXELS:
    raise DataPrepError(f"{where}: 'data' must be uint8 [N, {_PIXELS}], found "
                        f"{pixels.dtype} {list(pixels.shape)}")
  if layout.num_coarse:
    labels = np.asarray(_field(batch, "fine_labels", where), dtype=np.int64)
    coarse = np.asarray(_field(batch, "coarse_labels", where), dtype=np.int64)
  else:
    labels = np.asarray(_field(batch, "labels", where), dtype=np.int64)
    coarse = None
  for name, values in (("labels", labels), ("coarse_labels", coarse)):
    if values is not None and values.shape != (len(pixels),):
      raise DataPrepError(f"{where}: {len(pixels)} images but {values.size} {name}")
  return pixels, labels, coarse


def _parse_binary_batch(data: bytes, where: str, layout: _Layout):
  label_bytes = 2 if layout.num_coarse else 1
  record = label_bytes + _PIXELS
  if len(data) % record:
    raise DataPrepError(f"{where}: {len(data)} bytes is not a whole number of "
                        f"{layout.name} records ({record} bytes each); the file is truncated "
                        "or belongs to the other CIFAR")
  rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
  if layout.num_coarse:
    return rows[:, 2:], rows[:, 1].astype(np.int64), rows[:, 0].astype(np.int64)
  return rows[:, 1:], rows[:, 0].astype(np.int64), None


def _names_from_text(data: bytes, where: str) -> List[str]:
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataPrepError(f"{where}: not a text file of class names ({e})") from None
  return [line.strip() for line in text.splitlines() if line.strip()]


def _check_names(names, expected: int, where: str) -> List[str]:
  names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
  if len(names) != expected:
    raise DataPrepError(f"{where}: expected {expected} class names, found {len(names)}")
  return names


def _check_labels(labels: np.ndarray, count: int, where: str, what: str) -> None:
  bad = np.flatnonzero((labels < 0) | (labels >= count))
  if bad.size:
    raise DataPrepError(f"{where}: {bad.size} {what} outside [0, {count}), e.g. record "
                        f"{bad[0]} has {labels[bad[0]]}")


def load(dataset: str, path: str) -> CifarData:
  """Reads a CIFAR archive or folder (python or binary format) into memory."""
  if not os.path.exists(path):
    raise DataPrepError(f"--source={path}: no such file or folder; expected "
                        f"{LAYOUTS[dataset].archives}, the folder it unpacks to, or 'tfds'")
  layout = LAYOUTS[dataset]
  found, seen = _collect(path)
  folder, files = _pick_folder(dataset, path, found, seen)
  formats = set()
  pixels, labels, coarse, keys = {}, {}, {}, {}
  for split, names in layout.splits.items():
    parts = []
    for name in names:
      # The python archive's file has no extension; the binary one ends in .bin. Either
      # way the content decides how it is parsed.
      file_name = name if name in files else name + ".bin"
      data = files[file_name]
      where = f"--source={path}: {os.path.join(folder, file_name)}"
      if _is_pickle(data):
        formats.add("python")
        parts.append(_parse_pickle_batch(data, where, layout))
      else:
        formats.add("binary")
        parts.append(_parse_binary_batch(data, where, layout))
    flat = np.concatenate([p[0] for p in parts])
    pixels[split] = np.ascontiguousarray(flat.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels[split] = np.concatenate([p[1] for p in parts])
    if layout.num_coarse:
      coarse[split] = np.concatenate([p[2] for p in parts])
    keys[split] = [f"{split}_{i:05d}" for i in range(len(flat))]
    _check_labels(labels[split], layout.num_classes, f"--source={path} ({split})", "labels")
    if layout.num_coarse:
      _check_labels(coarse[split], layout.num_coarse, f"--source={path} ({split})",
                    "coarse labels")
  where = f"--source={path}: {os.path.join(folder, layout.meta_pickle)}"
  if layout.meta_pickle in files and _is_pickle(files[layout.meta_pickle]):
    meta = _unpickle(files[layout.meta_pickle], where)
    if layout.num_coarse:
      class_names = _check_names(_field(meta, "fine_label_names", where), 100, where)
      coarse_names = _check_names(_field(meta, "coarse_label_names", where), 20, where)
    else:
      class_names = _check_names(_field(meta, "label_names", where), 10, where)
      coarse_names = None
  else:
    texts = {}
    for kind, name in layout.meta_text.items():
      if name not in files:
        raise DataPrepError(f"--source={path}: {folder or '.'} has no {name} (class names)")
      w = f"--source={path}: {os.path.join(folder, name)}"
      texts[kind] = _names_from_text(files[name], w)
    class_names = _check_names(texts["label"], layout.num_classes,
                               f"--source={path}: {layout.meta_text['label']}")
    coarse_names = (_check_names(texts["coarse"], layout.num_coarse,
                                 f"--source={path}: {layout.meta_text['coarse']}")
                    if layout.num_coarse else None)
  if len(formats) > 1:
    raise DataPrepError(f"--source={path}: {folder or '.'} mixes python-pickle and binary "
                        "batch files; use one archive's files")
  kind = "archive" if os.path.isfile(path) else "folder"
  return CifarData(dataset, pixels, labels, coarse if layout.num_coarse else None, keys,
                   class_names, coarse_names, f"{layout.name} {formats.pop()} {kind}")


def _tfds_class_names(folder: str, feature: str, expected: int, where: str) -> List[str]:
  path = os.path.join(folder, f"{feature}.labels.txt")
  if not os.path.isfile(path):
    raise DataPrepError(f"{where}: {path} (the {feature} names) is missing")
  with open(path, "rb") as f:
    return _check_names(_names_from_text(f.read(), path), expected, path)


def load_tfds(dataset: str, data_dir: str) -> CifarData:
  """Reads a prepared TFDS cifar10/cifar100 (data_dir/<dataset>/<version>/).

  The files are read directly (dataset_info.json, <feature>.labels.txt and the TFRecord
  shards of serialized tf.train.Examples with `id`, PNG `image`, `label`, `coarse_label`),
  without importing tensorflow_datasets (which would import Keras).
  """
  root = os.path.join(data_dir, dataset)
  versions = []
  if os.path.isdir(root):
    for name in os.listdir(root):
      if (re.fullmatch(r"\d+\.\d+\.\d+", name)
          and os.path.isfile(os.path.join(root, name, "dataset_info.json"))):
        versions.append(tuple(int(p) for p in name.split(".")))
  if not versions:
    raise DataPrepError(
        f"--source=tfds: no prepared TFDS {dataset} under --tfds_data_dir={data_dir} "
        f"(expected {root}/<version>/dataset_info.json); prepare it with `tfds build "
        f"{dataset} --data_dir={data_dir}` or pass --source=<archive>")
  version = ".".join(str(p) for p in max(versions))
  folder = os.path.join(root, version)
  where = f"--source=tfds ({folder})"
  try:
    with open(os.path.join(folder, "dataset_info.json"), encoding="utf-8") as f:
      info = json.load(f)
  except (OSError, ValueError) as e:
    raise DataPrepError(f"{where}: unreadable dataset_info.json ({e})") from None
  file_format = info.get("fileFormat", "tfrecord")
  if file_format != "tfrecord":
    raise DataPrepError(f"{where}: stored as {file_format}; expected tfrecord (rebuild with "
                        f"`tfds build {dataset} --file_format=tfrecord`) or pass an archive")
  layout = LAYOUTS[dataset]
  class_names = _tfds_class_names(folder, "label", layout.num_classes, where)
  coarse_names = (_tfds_class_names(folder, "coarse_label", layout.num_coarse, where)
                  if layout.num_coarse else None)
  splits_info = {s.get("name"): s for s in info.get("splits", [])}
  tf = shards._tf()  # pylint: disable=protected-access
  pixels, labels, coarse, keys = {}, {}, {}, {}
  for split in layout.splits:
    if split not in splits_info:
      raise DataPrepError(f"{where} has no {split!r} split (it has "
                          f"{', '.join(sorted(map(str, splits_info))) or 'none'})")
    lengths = [int(n) for n in splits_info[split].get("shardLengths", [])]
    template = splits_info[split].get("filepathTemplate",
                                      "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    rows = []
    for index in range(len(lengths)):
      name = (template.replace("{DATASET}", info.get("name", dataset))
              .replace("{SPLIT}", split).replace("{FILEFORMAT}", file_format)
              .replace("{SHARD_X_OF_Y}", f"{index:05d}-of-{len(lengths):05d}"))
      path = os.path.join(folder, name)
      if not os.path.isfile(path):
        raise DataPrepError(f"{where}: {name} is missing (listed in dataset_info.json)")
      for raw in tf.data.TFRecordDataset(path):
        feature = tf.train.Example.FromString(raw.numpy()).features.feature
        try:
          row = (feature["id"].bytes_list.value[0].decode("utf-8"),
                 feature["image"].bytes_list.value[0],
                 feature["label"].int64_list.value[0],
                 feature["coarse_label"].int64_list.value[0] if layout.num_coarse else 0)
        except (KeyError, IndexError):
          raise DataPrepError(f"{where}: {name} holds a record without id, image and "
                              "label") from None
        rows.append(row)
    if len(rows) != sum(lengths):
      raise DataPrepError(f"{where}: {split!r} has {len(rows)} records, dataset_info.json "
                          f"says {sum(lengths)}")
    rows.sort(key=lambda r: r[0])  # TFDS stores records shuffled
    ids = [r[0] for r in rows]
    bad = [i for i in ids if not re.fullmatch(rf"{split}_\d{{5}}", i)]
    if bad or len(set(ids)) != len(ids):
      raise DataPrepError(f"{where}: unexpected ids in {split!r}, e.g. "
                          f"{(bad or ids)[0]!r}; expected {split}_00000, {split}_00001, ...")
    images = []
    for key, png, _, _ in rows:
      try:
        with Image.open(io.BytesIO(png)) as image:
          array = np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
      except Exception as e:  # PIL raises many types for bad data.
        raise DataPrepError(f"{where}: image of {key} does not decode ({e})") from None
      if array.shape != IMAGE_SHAPE:
        raise DataPrepError(f"{where}: image of {key} is {list(array.shape)}, expected "
                            "[32, 32, 3]")
      images.append(array)
    pixels[split] = np.stack(images)
    labels[split] = np.asarray([r[2] for r in rows], dtype=np.int64)
    keys[split] = ids
    _check_labels(labels[split], layout.num_classes, f"{where} ({split})", "labels")
    if layout.num_coarse:
      coarse[split] = np.asarray([r[3] for r in rows], dtype=np.int64)
      _check_labels(coarse[split], layout.num_coarse, f"{where} ({split})", "coarse labels")
  return CifarData(dataset, pixels, labels, coarse if layout.num_coarse else None, keys,
                   class_names, coarse_names, f"TFDS {dataset} {version}")


# ---------------------------------------------------------------------------------------
# Download.


def download(dataset: str, download_dir: str, url: str = "", sha256: str = "") -> str:
  """Fetches (or reuses) the archive; returns its path once its SHA-256 matches."""
  official_url, _, official_sha256 = OFFICIAL_DOWNLOADS[dataset]
  url = url or official_url
  expected = (sha256 or official_sha256).lower()
  if not re.fullmatch(r"[0-9a-f]{64}", expected):
    raise DataPrepError(f"--download_sha256={sha256}: expected 64 hex digits")
  name = os.path.basename(urllib.parse.urlparse(url).path) or f"{dataset}.tar.gz"
  os.makedirs(download_dir, exist_ok=True)
  dest = os.path.join(download_dir, name)
  if os.path.exists(dest):
    if shards.sha256_file(dest) == expected:
      logging.info("using %s (SHA-256 verified)", dest)
      return dest
    logging.warning("%s does not have the expected SHA-256; downloading it again", dest)
    os.remove(dest)
  tmp = f"{dest}.part-{os.getpid()}"
  digest = hashlib.sha256()
  size = 0
  try:
    try:
      with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        last_log = time.monotonic()
        while True:
          block = response.read(1 << 20)
          if not block:
            break
          out.write(block)
          digest.update(block)
          size += len(block)
          if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            logging.info("downloading %s: %s of %s bytes", url, f"{size:,}",
                         f"{total:,}" if total else "?")
    except (urllib.error.URLError, OSError) as e:
      raise DataPrepError(f"cannot download {url}: {e}; pass --source=PATH to a copy of "
                          f"{LAYOUTS[dataset].archives} instead") from None
    got = digest.hexdigest()
    if got != expected:
      raise DataPrepError(
          f"download of {url} has SHA-256 {got} ({size:,} bytes), expected {expected}; "
          "the file was not kept (pass --download_sha256 if --download_url serves another "
          "file on purpose)")
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  logging.info("downloaded %s to %s (%s bytes, SHA-256 verified)", url, dest, f"{size:,}")
  return dest


# ---------------------------------------------------------------------------------------
# Conversion.


def to_items(data: CifarData) -> Dict[str, List[shards.Item]]:
  items = {}
  for split in LAYOUTS[data.dataset].splits:
    pixels, labels = data.pixels[split], data.labels[split]
    coarse = data.coarse_labels[split] if data.coarse_labels is not None else None
    items[split] = [
        shards.Item(key=key, filename=key, label=int(labels[i]), size=_PIXELS,
                    source=("raw", pixels[i].tobytes(), 32, 32),
                    coarse_label=int(coarse[i]) if coarse is not None else None)
        for i, key in enumerate(data.keys[split])]
  return items


def convert(data: CifarData, output_dir: str, train_shards: int = DEFAULT_TRAIN_SHARDS,
            test_shards: int = DEFAULT_TEST_SHARDS, workers: int = 1,
            seed: int = 0) -> shards.Summary:
  info = shards.DatasetInfo(
      converter="data_prep.cifar", dataset=data.dataset, class_names=data.class_names,
      image=shards.raw_image(32, 32), source_format=data.source_format,
      coarse_class_names=data.coarse_class_names)
  for split in data.pixels:
    logging.info("%s: %d images", split, len(data.keys[split]))
  return shards.convert(info, to_items(data),
                        {"train": (train_shards, "--train_shards"),
                         "test": (test_shards, "--test_shards")},
                        output_dir, workers=workers, seed=seed)


def define_flags() -> None:
  flags.DEFINE_enum("dataset", None, ["cifar10", "cifar100"], "Which CIFAR.")
  flags.mark_flag_as_required("dataset")
  flags.DEFINE_string("source", None,
                      "cifar-10-python.tar.gz, cifar-10-binary.tar.gz, "
                      "cifar-100-python.tar.gz, cifar-100-binary.tar.gz, the folder one of "
                      "them unpacks to, or 'tfds' (a prepared TFDS data dir, see "
                      "--tfds_data_dir). Not with --download.")
  flags.DEFINE_bool("download", False,
                    "Fetch the official binary archive into --download_dir (or reuse a "
                    "verified copy there) and check its SHA-256 before converting.")
  flags.DEFINE_string("download_dir", os.path.join("~", ".cache", "data_prep"),
                      "Where --download keeps archives.")
  flags.DEFINE_string("download_url", "",
                      "Fetch from this URL instead of the official address "
                      "(default: www.cs.toronto.edu/~kriz/cifar-10[0]-binary.tar.gz).")
  flags.DEFINE_string("download_sha256", "",
                      "Expected SHA-256 of the downloaded file (default: the official "
                      "archive's).")
  flags.DEFINE_string("tfds_data_dir",
                      os.environ.get("TFDS_DATA_DIR",
                                     os.path.join("~", "tensorflow_datasets")),
                      "TFDS data dir for --source=tfds (default: $TFDS_DATA_DIR or "
                      "~/tensorflow_datasets).")
  flags.DEFINE_integer("train_shards", DEFAULT_TRAIN_SHARDS, "Shards of the train split.")
  flags.DEFINE_integer("test_shards", DEFAULT_TEST_SHARDS, "Shards of the test split.")
  cli.define_output_flags(
      with_max_rejected=False, workers=1,
      workers_help="Processes that write shards in parallel. Default 1: raw CIFAR records "
      "are cheap to write, and starting worker processes (each imports TensorFlow) costs "
      "more than it saves.")
  flags.adopt_module_key_flags(cli)


def _main() -> int:
  if FLAGS.download and FLAGS.source:
    raise DataPrepError("pass either --source or --download, not both")
  if FLAGS.download:
    path = download(FLAGS.dataset, os.path.expanduser(FLAGS.download_dir),
                    FLAGS.download_url, FLAGS.download_sha256)
    data = load(FLAGS.dataset, path)
  elif FLAGS.source == "tfds":
    data = load_tfds(FLAGS.dataset, os.path.expanduser(FLAGS.tfds_data_dir))
  elif FLAGS.source:
    data = load(FLAGS.dataset, os.path.expanduser(FLAGS.source))
  else:
    raise DataPrepError(f"pass --source=PATH ({LAYOUTS[FLAGS.dataset].archives}, the "
                        "folder it unpacks to, or 'tfds') or --download")
  summary = convert(data, os.path.expanduser(FLAGS.output_dir), FLAGS.train_shards,
                    FLAGS.test_shards, FLAGS.workers, FLAGS.seed)
  return summary.exit_code


def run() -> None:
  define_flags()
  app.run(cli.main_with_errors("data_prep.cifar", _main))


if __name__ == "__main__":
  run()

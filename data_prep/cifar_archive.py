"""CIFAR-10 / CIFAR-100 archives and folders -> a CifarData in memory.

`load` reads cifar-10-python.tar.gz, cifar-10-binary.tar.gz, cifar-100-python.tar.gz,
cifar-100-binary.tar.gz or the folder one of them unpacks to (or a folder above it). Which
format each file holds is read from its content (a Python pickle or fixed-size binary records),
not from its name, so the python and binary archives give the same data; which CIFAR it
holds is read from its file names (data_batch_1..5 and test_batch, or train and test), so the
dataset need not be named. The pickles are
loaded by an unpickler that accepts only dicts, lists, strings and numpy arrays, so a crafted
archive cannot run code.

Record keys are TFDS's ids: `train_00000` is the first image of data_batch_1 (CIFAR-100: of
`train`), numbered across the batches in order.
"""

import dataclasses
import importlib
import io
import lzma
import os
import pickle
import tarfile
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from data_prep import DataPrepError
from data_prep import DataPrepFlagError

IMAGE_SHAPE = (32, 32, 3)
PIXELS = 32 * 32 * 3  # bytes of one image


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where one CIFAR keeps its images and class names, in either archive format."""

  name: str                      # "CIFAR-10"
  archives: str                  # what --source may be
  splits: Dict[str, List[str]]   # split -> data files, in record order
  meta_pickle: str               # the python-format meta file
  meta_text: Dict[str, str]      # label kind -> binary-format names file
  num_classes: int
  num_coarse: int                # 0 for CIFAR-10


LAYOUTS = {
    "cifar10": Layout(
        name="CIFAR-10",
        archives="cifar-10-python.tar.gz or cifar-10-binary.tar.gz",
        splits={"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
        meta_pickle="batches.meta",
        meta_text={"label": "batches.meta.txt"},
        num_classes=10, num_coarse=0),
    "cifar100": Layout(
        name="CIFAR-100",
        archives="cifar-100-python.tar.gz or cifar-100-binary.tar.gz",
        splits={"train": ["train"], "test": ["test"]},
        meta_pickle="meta",
        meta_text={"coarse": "coarse_label_names.txt", "label": "fine_label_names.txt"},
        num_classes=100, num_coarse=20),
}
ANY_ARCHIVE = ("cifar-10-python.tar.gz, cifar-10-binary.tar.gz, cifar-100-python.tar.gz or "
               "cifar-100-binary.tar.gz")


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


def _file_names(layout: Layout) -> List[str]:
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


def _complete(files: Dict[str, bytes], layout: Layout) -> bool:
  """Whether one folder's files hold every data file and the class names of `layout`."""
  data_ok = all(n in files or n + ".bin" in files
                for names in layout.splits.values() for n in names)
  meta_ok = layout.meta_pickle in files or all(n in files for n in layout.meta_text.values())
  return data_ok and meta_ok


def _held(found: Dict[str, Dict[str, bytes]]) -> List[str]:
  """The datasets ("cifar10", "cifar100") some folder of `found` holds completely."""
  return [name for name, layout in LAYOUTS.items()
          if any(_complete(files, layout) for files in found.values())]


def _pick_dataset(dataset: Optional[str], path: str,
                  found: Dict[str, Dict[str, bytes]], seen: List[str]) -> str:
  """`dataset` checked against what `path` holds, or (None) read from it."""
  held = _held(found)
  if dataset is not None:
    if dataset not in held and held:
      other = held[0]
      raise DataPrepFlagError(
          f"--dataset={dataset} contradicts --source={path}: it holds {LAYOUTS[other].name}, "
          f"not {LAYOUTS[dataset].name}; pass --dataset={other} or leave --dataset out (it "
          "is read from --source)")
    return dataset
  if len(held) == 1:
    return held[0]
  if len(held) > 1:
    raise DataPrepFlagError(f"--source={path} holds both CIFAR-10 and CIFAR-100; pass "
                            "--dataset=cifar10 or --dataset=cifar100 to choose")
  sample = ", ".join(seen[:12]) + (f", ... ({len(seen)} files)" if len(seen) > 12 else "")
  raise DataPrepError(
      f"--source={path} holds neither CIFAR-10 nor CIFAR-100: expected {ANY_ARCHIVE} or the "
      f"folder one of them unpacks to; found: {sample or 'no files'}")


def _pick_folder(dataset: str, path: str,
                 found: Dict[str, Dict[str, bytes]], seen: List[str]) -> Tuple[str, Dict]:
  layout = LAYOUTS[dataset]
  matches = sorted(folder for folder, files in found.items() if _complete(files, layout))
  if len(matches) == 1:
    return matches[0], found[matches[0]]
  if len(matches) > 1:
    raise DataPrepError(f"--source={path} holds {layout.name} more than once (in "
                        f"{', '.join(m or '.' for m in matches)}); pass the folder you mean")
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


def _parse_pickle_batch(data: bytes, where: str, layout: Layout):
  batch = _unpickle(data, where)
  pixels = np.asarray(_field(batch, "data", where))
  if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != PIXELS:
    raise DataPrepError(f"{where}: 'data' must be uint8 [N, {PIXELS}], found "
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


def _parse_binary_batch(data: bytes, where: str, layout: Layout):
  label_bytes = 2 if layout.num_coarse else 1
  record = label_bytes + PIXELS
  if len(data) % record:
    raise DataPrepError(f"{where}: {len(data)} bytes is not a whole number of "
                        f"{layout.name} records ({record} bytes each); the file is truncated "
                        "or belongs to the other CIFAR")
  rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
  if layout.num_coarse:
    return rows[:, 2:], rows[:, 1].astype(np.int64), rows[:, 0].astype(np.int64)
  return rows[:, 1:], rows[:, 0].astype(np.int64), None


def names_from_text(data: bytes, where: str) -> List[str]:
  """The non-blank lines of a class-names text file, stripped.

  Args:
    data: The file's bytes (UTF-8).
    where: Names the file in error messages.

  Returns:
    The names, in file order.

  Raises:
    DataPrepError: The bytes are not UTF-8 text.
  """
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataPrepError(f"{where}: not a text file of class names ({e})") from None
  return [line.strip() for line in text.splitlines() if line.strip()]


def check_class_names(names: Sequence, expected: int, where: str) -> List[str]:
  """Class names as str (bytes are latin-1, as in the pickles), checked to be `expected` many.

  Args:
    names: The names as read (str or bytes).
    expected: How many classes the dataset has.
    where: Names the source in error messages.

  Returns:
    The names as str.

  Raises:
    DataPrepError: There are not `expected` names.
  """
  names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names]
  if len(names) != expected:
    raise DataPrepError(f"{where}: expected {expected} class names, found {len(names)}")
  return names


def check_labels(labels: np.ndarray, count: int, where: str, what: str) -> None:
  """Checks that every label is in [0, count).

  Args:
    labels: The labels of one split.
    count: How many classes there are.
    where: Names the source in error messages.
    what: "labels" or "coarse labels", for the message.

  Raises:
    DataPrepError: A label is out of range (the message names the first such record).
  """
  bad = np.flatnonzero((labels < 0) | (labels >= count))
  if bad.size:
    raise DataPrepError(f"{where}: {bad.size} {what} outside [0, {count}), e.g. record "
                        f"{bad[0]} has {labels[bad[0]]}")


def load(dataset: Optional[str], path: str) -> CifarData:
  """Reads a CIFAR archive or folder (python or binary format) into memory.

  Args:
    dataset: "cifar10" or "cifar100", checked against the files; None reads it from them
      (which of the two CIFARs a folder holds is clear from its file names).
    path: An archive as downloaded (any tar compression), the folder it unpacks to, or a
      folder above that.

  Returns:
    The dataset, splits `train` and `test`.

  Raises:
    DataPrepFlagError: `dataset` contradicts the files (they hold the other CIFAR), or it is
      None and `path` holds both.
    DataPrepError: `path` is missing, damaged, or lacks files; the message says what was
      expected and what was found.
  """
  if not os.path.exists(path):
    expected = LAYOUTS[dataset].archives if dataset else ANY_ARCHIVE
    raise DataPrepError(f"--source={path}: no such file or folder; expected {expected}, the "
                        "folder it unpacks to, or 'tfds'")
  found, seen = _collect(path)
  dataset = _pick_dataset(dataset, path, found, seen)
  layout = LAYOUTS[dataset]
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
    check_labels(labels[split], layout.num_classes, f"--source={path} ({split})", "labels")
    if layout.num_coarse:
      check_labels(coarse[split], layout.num_coarse, f"--source={path} ({split})",
                    "coarse labels")
  where = f"--source={path}: {os.path.join(folder, layout.meta_pickle)}"
  if layout.meta_pickle in files and _is_pickle(files[layout.meta_pickle]):
    meta = _unpickle(files[layout.meta_pickle], where)
    if layout.num_coarse:
      class_names = check_class_names(_field(meta, "fine_label_names", where), 100, where)
      coarse_names = check_class_names(_field(meta, "coarse_label_names", where), 20, where)
    else:
      class_names = check_class_names(_field(meta, "label_names", where), 10, where)
      coarse_names = None
  else:
    texts = {}
    for kind, name in layout.meta_text.items():
      if name not in files:
        raise DataPrepError(f"--source={path}: {folder or '.'} has no {name} (class names)")
      w = f"--source={path}: {os.path.join(folder, name)}"
      texts[kind] = names_from_text(files[name], w)
    class_names = check_class_names(texts["label"], layout.num_classes,
                               f"--source={path}: {layout.meta_text['label']}")
    coarse_names = (check_class_names(texts["coarse"], layout.num_coarse,
                                 f"--source={path}: {layout.meta_text['coarse']}")
                    if layout.num_coarse else None)
  if len(formats) > 1:
    raise DataPrepError(f"--source={path}: {folder or '.'} mixes python-pickle and binary "
                        "batch files; use one archive's files")
  kind = "archive" if os.path.isfile(path) else "folder"
  return CifarData(dataset, pixels, labels, coarse if layout.num_coarse else None, keys,
                   class_names, coarse_names, f"{layout.name} {formats.pop()} {kind}")


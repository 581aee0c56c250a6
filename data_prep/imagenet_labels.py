"""ILSVRC2012 validation labels from any of the three files people have.

* TFDS / slim style `validation_labels.txt` (= slim's imagenet_2012_validation_synset_labels.txt):
  one synset per line, line i for the i-th validation image in sorted file-name order.
* Kaggle `LOC_val_solution.csv`: `ImageId,PredictionString` rows, the prediction string being
  `<synset> xmin ymin xmax ymax` repeated once per box (every box has the image's class).
* The devkit's `ILSVRC2012_validation_ground_truth.txt`: line i is the ILSVRC2012_ID of
  ILSVRC2012_val_<i:08d>.JPEG. Those IDs follow the devkit's own order (ID 1 is n02119789,
  kit fox), NOT the alphabetical synset order used for class indices, so they are mapped to
  synsets through the devkit's `meta.mat` (its `synsets` struct: ILSVRC2012_ID, WNID, words,
  num_children). Pass the ground-truth file (with meta.mat beside it or --meta_mat), the
  devkit folder, or ILSVRC2012_devkit_t12.tar.gz itself.

The format is recognised from the content. Every error names the file and what it expected.
"""

import csv
import dataclasses
import io
import os
import re
import tarfile
from typing import Dict, List, Optional, Sequence

import numpy as np

from data_prep import DataPrepError

SYNSET_RE = re.compile(r"n\d{8}")
VAL_NAME_RE = re.compile(r"ILSVRC2012_val_(\d{8})")
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META_MAT = "meta.mat"

FORMATS_HELP = (
    "validation_labels.txt (one synset per line, in sorted image-name order, as TFDS ships "
    "it), Kaggle's LOC_val_solution.csv, or the devkit's "
    "ILSVRC2012_validation_ground_truth.txt with its meta.mat (beside it or --meta_mat), "
    "the devkit folder or ILSVRC2012_devkit_t12.tar.gz")


@dataclasses.dataclass
class ValLabels:
  """Validation labels, by image name (without extension) or by sorted position."""

  kind: str                                   # "tfds", "kaggle" or "devkit"
  path: str
  by_name: Optional[Dict[str, str]] = None    # image stem -> synset (kaggle, devkit)
  in_sorted_order: Optional[List[str]] = None  # tfds: synset of the i-th sorted image
  classes: Optional[List[str]] = None         # devkit: the 1000 leaf synsets of meta.mat
  descriptions: Optional[Dict[str, str]] = None  # devkit: synset -> words

  def synsets(self) -> List[str]:
    return sorted(set(self.by_name.values() if self.by_name is not None
                      else self.in_sorted_order))


def stem(name: str) -> str:
  base = os.path.basename(name)
  return os.path.splitext(base)[0]


def _lines(data: bytes, where: str) -> List[str]:
  try:
    text = data.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    raise DataPrepError(f"{where}: not a text file ({e}); expected {FORMATS_HELP}") from None
  lines = text.splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  return lines


def _parse_tfds(lines: Sequence[str], where: str) -> List[str]:
  out = []
  for number, line in enumerate(lines, 1):
    synset = line.strip()
    if not SYNSET_RE.fullmatch(synset):
      raise DataPrepError(f"{where} line {number}: {line!r} is not a synset like n01440764")
    out.append(synset)
  return out


def _parse_kaggle(data: bytes, where: str) -> Dict[str, str]:
  reader = csv.reader(io.StringIO(data.decode("utf-8-sig")))
  header = next(reader, None)
  if not header or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
    raise DataPrepError(f"{where}: expected the header ImageId,PredictionString, found "
                        f"{header!r}")
  out = {}
  for number, row in enumerate(reader, 2):
    if not row or not "".join(row).strip():
      continue
    if len(row) < 2:
      raise DataPrepError(f"{where} line {number}: expected ImageId,PredictionString, "
                          f"found {row!r}")
    image, prediction = row[0].strip(), row[1].split()
    synsets = set(prediction[0::5])
    if not prediction or len(prediction) % 5:
      raise DataPrepError(f"{where} line {number} ({image}): expected '<synset> xmin ymin "
                          f"xmax ymax' per box, found {row[1]!r}")
    bad = [s for s in synsets if not SYNSET_RE.fullmatch(s)]
    if bad:
      raise DataPrepError(f"{where} line {number} ({image}): {bad[0]!r} is not a synset")
    if len(synsets) > 1:
      raise DataPrepError(f"{where} line {number} ({image}): boxes of different classes "
                          f"({', '.join(sorted(synsets))}); expected one class per image")
    if stem(image) in out:
      raise DataPrepError(f"{where} line {number}: {image} is listed twice")
    out[stem(image)] = synsets.pop()
  return out


def read_meta_mat(data: bytes, where: str):
  """(ILSVRC2012_ID -> synset, leaf synsets, synset -> words) from the devkit's meta.mat."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  try:
    mat = scipy.io.loadmat(io.BytesIO(data), squeeze_me=True, struct_as_record=True)
  except Exception as e:  # scipy raises several types for bad files.
    raise DataPrepError(f"{where}: cannot read it as a MATLAB file ({type(e).__name__}: "
                        f"{e}); expected the devkit's meta.mat") from None
  if "synsets" not in mat:
    found = ", ".join(k for k in mat if not k.startswith("__"))
    raise DataPrepError(f"{where}: no 'synsets' variable (found: {found or 'none'}); "
                        "expected the devkit's meta.mat")
  synsets = np.atleast_1d(mat["synsets"])
  names = synsets.dtype.names or ()
  for field in ("ILSVRC2012_ID", "WNID"):
    if field not in names:
      raise DataPrepError(f"{where}: the 'synsets' struct has no {field} field (it has "
                          f"{', '.join(names) or 'none'})")
  by_id, leaves, words = {}, [], {}
  for entry in synsets:
    ilsvrc_id, wnid = int(entry["ILSVRC2012_ID"]), str(entry["WNID"])
    if ilsvrc_id in by_id:
      raise DataPrepError(f"{where}: ILSVRC2012_ID {ilsvrc_id} occurs twice")
    by_id[ilsvrc_id] = wnid
    if "num_children" not in names or int(entry["num_children"]) == 0:
      leaves.append(wnid)
    if "words" in names:
      words[wnid] = str(entry["words"])
  return by_id, sorted(leaves), words


def _parse_devkit(ground_truth: bytes, meta: bytes, where: str, meta_where: str) -> ValLabels:
  by_id, leaves, words = read_meta_mat(meta, meta_where)
  by_name = {}
  for number, line in enumerate(_lines(ground_truth, where), 1):
    text = line.strip()
    if not text.isdigit():
      raise DataPrepError(f"{where} line {number}: {line!r} is not an ILSVRC2012_ID")
    if int(text) not in by_id:
      raise DataPrepError(f"{where} line {number}: ILSVRC2012_ID {text} is not in "
                          f"{meta_where}")
    by_name[f"ILSVRC2012_val_{number:08d}"] = by_id[int(text)]
  return ValLabels("devkit", where, by_name=by_name, classes=leaves, descriptions=words)


def _devkit_from_tar(path: str) -> ValLabels:
  ground_truth = meta = None
  names = []
  try:
    tar = tarfile.open(path, "r:*")
  except (tarfile.TarError, OSError) as e:
    raise DataPrepError(f"--val_labels={path}: compressed but not a readable tar ({e}); "
                        f"expected {FORMATS_HELP}") from None
  with tar:
    for info in tar:
      if not info.isreg():
        continue
      names.append(info.name)
      base = os.path.basename(info.name)
      if base == GROUND_TRUTH:
        ground_truth = (info.name, tar.extractfile(info).read())
      elif base == META_MAT:
        meta = (info.name, tar.extractfile(info).read())
  if ground_truth is None or meta is None:
    raise DataPrepError(f"--val_labels={path}: a tar without both {GROUND_TRUTH} and "
                        f"{META_MAT} (found {', '.join(names[:10]) or 'no files'}); "
                        f"expected {FORMATS_HELP}")
  return _parse_devkit(ground_truth[1], meta[1], f"--val_labels={path}: {ground_truth[0]}",
                       f"--val_labels={path}: {meta[0]}")


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def read(path: str, meta_mat: str = "") -> ValLabels:
  """Reads validation labels in any supported format (recognised from the content)."""
  if not os.path.exists(path):
    raise DataPrepError(f"--val_labels={path}: no such file or folder; expected {FORMATS_HELP}")
  if os.path.isdir(path):
    for candidate in (os.path.join(path, "data"), path):
      gt = os.path.join(candidate, GROUND_TRUTH)
      if os.path.isfile(gt):
        return read(gt, meta_mat)
    raise DataPrepError(f"--val_labels={path} is a folder without {GROUND_TRUTH} (in it or "
                        f"its data/ folder); expected {FORMATS_HELP}")
  with open(path, "rb") as f:
    head = f.read(512)
  if head[:2] == b"\x1f\x8b" or tarfile.is_tarfile(path):
    return _devkit_from_tar(path)
  data = _read(path)
  where = f"--val_labels={path}"
  lines = _lines(data, where)
  first = lines[0].strip() if lines else ""
  if first.startswith("ImageId"):
    return ValLabels("kaggle", path, by_name=_parse_kaggle(data, where))
  if SYNSET_RE.fullmatch(first):
    return ValLabels("tfds", path, in_sorted_order=_parse_tfds(lines, where))
  if first.isdigit():
    meta_path = meta_mat or os.path.join(os.path.dirname(path), META_MAT)
    if not os.path.isfile(meta_path):
      raise DataPrepError(
          f"{where} holds devkit ILSVRC2012_IDs, which must be mapped through the devkit's "
          f"{META_MAT} (its IDs are not in alphabetical synset order), but "
          f"{meta_path} does not exist; pass --meta_mat=PATH")
    return _parse_devkit(data, _read(meta_path), where,
                         f"--meta_mat={meta_path}" if meta_mat else meta_path)
  raise DataPrepError(f"{where}: unrecognised content (first line {first[:80]!r}); expected "
                      f"{FORMATS_HELP}")


def assign(labels: ValLabels, image_names: Sequence[str]) -> List[str]:
  """The synset of each validation image (same order as `image_names`).

  Raises DataPrepError when the label file and the images do not match one to one.
  """
  if labels.in_sorted_order is not None:
    if len(labels.in_sorted_order) != len(image_names):
      raise DataPrepError(
          f"--val_labels={labels.path} has {len(labels.in_sorted_order):,} labels but --val "
          f"has {len(image_names):,} images; the labels are matched to the images in sorted "
          "name order, so the counts must be equal")
    order = sorted(range(len(image_names)), key=lambda i: os.path.basename(image_names[i]))
    out = [""] * len(image_names)
    for position, index in enumerate(order):
      out[index] = labels.in_sorted_order[position]
    return out
  stems = [stem(n) for n in image_names]
  missing = [n for n, s in zip(image_names, stems) if s not in labels.by_name]
  extra = sorted(set(labels.by_name) - set(stems))
  if missing or extra:
    parts = []
    if missing:
      parts.append(f"{len(missing):,} images have no label (e.g. "
                   f"{', '.join(missing[:5])})")
    if extra:
      parts.append(f"{len(extra):,} labels have no image (e.g. {', '.join(extra[:5])})")
    raise DataPrepError(f"--val_labels={labels.path} ({labels.kind}) does not match --val "
                        f"({len(labels.by_name):,} labels, {len(image_names):,} images): "
                        + "; ".join(parts))
  return [labels.by_name[s] for s in stems]

"""A data directory's contract: ``manifest.json`` and its TFRecord shards.

The trainer reads only what data_prep's output contract promises
(``DIR/manifest.json`` and ``DIR/<split>-<iiiii>-of-<nnnnn>.tfrecord``,
docs/data-format.md), never data_prep's code. ``DataInfo`` is that contract
as read: kind, classes, splits and their shards with record counts.
"""

import dataclasses
import json
import os
from typing import Dict, List, Optional, Tuple

import tensorflow as tf



MANIFEST = "manifest.json"


CIFAR_KINDS = ("cifar10", "cifar100")


EVAL_SPLITS = ("validation", "test", "val")


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
    """What ``preprocessing.preprocessing_for`` keys on: cifar10/cifar100 or
    'images'."""
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


def class_names_list(info: Optional[DataInfo], num_classes: int) -> List[str]:
  if info is not None and info.num_classes == num_classes:
    return list(info.class_names)
  return [f"class_{i}" for i in range(num_classes)]

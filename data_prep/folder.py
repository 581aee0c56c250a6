"""A folder of images, one subfolder per class -> sharded TFRecords.

    python -m data_prep.folder --source=DIR --output_dir=data/NAME [--val_fraction=0.1]

DIR holds one subfolder per class (the class names, sorted, give labels 0, 1, ...); each
class folder holds images (JPEG, PNG, BMP, GIF, WebP, TIFF), also in nested folders. Every
visible file in a class folder is an input: its content decides what it is, so a non-image
file is rejected with a reason (and fails the run unless --max_rejected allows it). Hidden
files and folders (names starting with '.') are skipped and logged. Files directly in DIR are
an error.

Clean JPEGs are written untouched; everything else is re-encoded as RGB JPEG (counted as
repaired, with the reason) so that every record decodes with
`tf.io.decode_jpeg(features["image/encoded"], channels=3)`; see `pyramidnet_tf.images`. Note that
PNG/BMP/... inputs therefore become (quality 95) JPEGs.

--val_fraction (default 0.1) moves round(n * fraction) images of each class, chosen by a
seeded hash of their path, to the `validation` split; the rest are `train`. 0 writes only
`train`. Shard counts default to one shard per ~128 MiB of input (--train_shards /
--val_shards override). image/filename is the path relative to DIR, e.g. "cat/0001.jpg".
--output_dir must not be a model directory (one holding checkpoints or model_config.json).
"""

import dataclasses
import math
import os
from typing import Dict, List, Optional

from absl import flags
from absl import logging

from pyramidnet_tf import errors

from data_prep import DataPrepError
from data_prep import cli
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import shards
from data_prep import summary as summary_lib

SHARD_TARGET_BYTES = 128 << 20


def _visible_files(folder: str) -> List[str]:
  out, hidden = [], 0
  for root, dirs, files in os.walk(folder, followlinks=True):
    hidden += sum(d.startswith(".") for d in dirs)
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      if name.startswith("."):
        hidden += 1
      else:
        out.append(os.path.join(root, name))
  if hidden:
    logging.warning("ignoring %d hidden files or folders under %s", hidden, folder)
  return out


def list_classes(source: str) -> Dict[str, List[str]]:
  """{class name: its image paths} for a folder of class folders."""
  if not os.path.isdir(source):
    raise DataPrepError(f"--source={source}: no such folder; expected a folder with one "
                        "subfolder of images per class")
  names = sorted(n for n in os.listdir(source) if not n.startswith("."))
  loose = [n for n in names if not os.path.isdir(os.path.join(source, n))]
  if loose:
    shown = ", ".join(loose[:8]) + (f" and {len(loose) - 8} more" if len(loose) > 8 else "")
    raise DataPrepError(f"--source={source}: expected only class subfolders (one per class, "
                        f"holding its images); found files at the top level: {shown}")
  if not names:
    raise DataPrepError(f"--source={source}: no class subfolders; expected one subfolder of "
                        "images per class")
  classes = {}
  for name in names:
    files = _visible_files(os.path.join(source, name))
    if not files:
      raise DataPrepError(f"--source={source}: class folder {name}/ holds no files")
    classes[name] = files
  return classes


def plan(source: str, val_fraction: float = 0.1, seed: int = 0,
         dataset_name: str = ""):
  if not 0.0 <= val_fraction < 1.0:
    raise DataPrepError(f"--val_fraction={val_fraction}: must be at least 0 and below 1")
  classes = list_classes(source)
  splits: Dict[str, List[planning.Item]] = {"train": []}
  if val_fraction > 0:
    splits["validation"] = []
  for label, (name, paths) in enumerate(classes.items()):
    items = []
    for path in paths:
      rel = os.path.relpath(path, source).replace(os.sep, "/")
      items.append(planning.Item(rel, rel, label, os.path.getsize(path), ("file", path)))
    items.sort(key=lambda item: planning.order_key(seed, "split:" + item.key))
    n_val = int(math.floor(len(items) * val_fraction + 0.5)) if val_fraction > 0 else 0
    if n_val:
      splits["validation"].extend(items[:n_val])
    splits["train"].extend(items[n_val:])
  if val_fraction > 0 and not splits["validation"]:
    raise DataPrepError(f"--val_fraction={val_fraction} rounds to no validation images for "
                        "every class (they are too small); use a larger fraction, or 0 for "
                        "no validation split")
  if not splits["train"]:
    raise DataPrepError(f"--val_fraction={val_fraction} leaves no training images")
  name = dataset_name or os.path.basename(os.path.normpath(os.path.abspath(source)))
  info = manifest_lib.DatasetInfo(
      converter="data_prep.folder", dataset=name, class_names=list(classes),
      image=dict(manifest_lib.JPEG_IMAGE), source_format="image folder")
  return info, splits


def auto_shards(items: List[planning.Item]) -> int:
  return max(1, min(len(items), math.ceil(sum(i.size for i in items) / SHARD_TARGET_BYTES)))


def convert(source: str, output_dir: str, val_fraction: float = 0.1, train_shards: int = 0,
            val_shards: int = 0, workers: int = 1, max_rejected: int = 0, seed: int = 0,
            dataset_name: str = "", overwrite: bool = False) -> summary_lib.Summary:
  info, splits = plan(source, val_fraction, seed, dataset_name)
  counts = {"train": (train_shards or auto_shards(splits["train"]), "--train_shards")}
  if "validation" in splits:
    counts["validation"] = (val_shards or auto_shards(splits["validation"]), "--val_shards")
  for split, items in splits.items():
    logging.info("%s: %d images", split, len(items))
  return shards.convert(info, splits, counts, output_dir, workers=workers,
                        max_rejected=max_rejected, seed=seed, overwrite=overwrite)


def define_flags() -> None:
  flags.DEFINE_string("source", None, "A folder with one subfolder of images per class.")
  flags.DEFINE_float("val_fraction", 0.1,
                     "Fraction of each class for the validation split (0: none).")
  errors.register_number_validator("val_fraction", low=0.0, high=1.0, high_open=True,
                                   note="0 = no validation split")
  flags.DEFINE_string("dataset_name", "",
                      "Dataset name for the manifest (default: --source's folder name).")
  flags.DEFINE_integer("train_shards", 0,
                       "Shards of the train split (0: one per ~128 MiB of input).")
  flags.DEFINE_integer("val_shards", 0,
                       "Shards of the validation split (0: one per ~128 MiB of input).")
  for name in ("train_shards", "val_shards"):
    errors.register_number_validator(name, low=0, integer=True, note="0 = automatic")
  cli.define_output_flags()


GROUPS = (
    ("Input", ("source", "val_fraction", "dataset_name")),
    ("Output", cli.output_flags() + ("train_shards", "val_shards")),
)


@dataclasses.dataclass(frozen=True)
class FolderCommand:
  """data_prep.folder's command line (each field is the flag of its name).

  Attributes:
    source: the class-per-subfolder folder (None when left out).
    val_fraction: fraction of each class held out for validation.
    dataset_name: the manifest's dataset name ("" for the folder's name).
    train_shards, val_shards: shards per split (0: automatic).
    output: where and how to write.
  """
  source: Optional[str]
  val_fraction: float
  dataset_name: str
  train_shards: int
  val_shards: int
  output: cli.Output


def _problems(command: FolderCommand) -> List[Optional[str]]:
  expected = "a folder with one subfolder of images per class"
  return [cli.required(command.source, "source", expected) or
          cli.missing_path(command.source, "source", expected),
          *cli.output_problems(command.output)]


def _main(command: FolderCommand) -> int:
  out = command.output
  summary = convert(os.path.expanduser(command.source), out.path, command.val_fraction,
                    command.train_shards, command.val_shards, out.workers, out.max_rejected,
                    out.seed, command.dataset_name, out.overwrite)
  return summary.exit_code


def run() -> None:
  define_flags()
  cli.run("data_prep.folder", _main, config=FolderCommand, groups=GROUPS, problems=_problems,
          doc=__doc__ + "\n" + cli.exit_codes_text(
              "finished: every split written and verified, manifest.json written",
              "an expected failure, named in one line (a folder that is not one folder per "
              "class, more rejected images than --max_rejected, a full disk)"))


if __name__ == "__main__":
  run()

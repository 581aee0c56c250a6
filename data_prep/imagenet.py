"""ILSVRC2012 (ImageNet-1k) -> sharded TFRecords.

    python -m data_prep.imagenet --train=ILSVRC2012_img_train.tar --val=ILSVRC2012_img_val.tar \\
        --val_labels=validation_labels.txt --output_dir=DIR [--workers=N] [--label_offset=1]

--train is ILSVRC2012_img_train.tar (a tar of one tar per synset, n01440764.tar, ...), read in
place: its headers are indexed and each image is read with one pread, nothing is unpacked to
disk. It may also be a folder of synset folders (Kaggle's ILSVRC/Data/CLS-LOC/train, or the
unpacked tar), or a folder of the per-synset tars. --val is ILSVRC2012_img_val.tar or a
folder, flat (ILSVRC2012_val_00000001.JPEG, ...) or with one subfolder per synset.
--val_labels is validation_labels.txt (TFDS/slim), LOC_val_solution.csv (Kaggle) or the devkit
(ILSVRC2012_validation_ground_truth.txt + meta.mat, the devkit folder or its .tar.gz); see
`data_prep.imagenet_labels`. A val folder with synset subfolders needs no --val_labels (if one
is given, the two must agree). Either split may be left out.

Classes are the sorted training synsets (without --train: the devkit's 1,000 leaf synsets,
else the synsets the labels use); label = position in that list + --label_offset (0, or 1 for
slim / Model Garden readers that reserve 0 for "background"). Every label problem (a count
mismatch, an image without a label, a synset that is not a class) is reported before anything
is written.

Splits `train` (--train_shards, default 1024) and `validation` (--val_shards, default 128).
Images are sniffed and repaired as `pyramidnet_tf.images` describes; all records are JPEG:
`tf.io.decode_jpeg(features["image/encoded"], channels=3)`. Records also carry
image/class/synset. --output_dir must not be a model directory (one holding checkpoints or
model_config.json).
"""

import dataclasses
import os
from typing import Dict, List, NamedTuple, Optional, Sequence

from absl import flags
from absl import logging

from pyramidnet_tf import errors

from data_prep import DataPrepError
from data_prep import archives
from data_prep import cli
from data_prep import imagenet_labels
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import shards
from data_prep import summary as summary_lib

SYNSET_RE = imagenet_labels.SYNSET_RE
EXPECTED_TRAIN = ("ILSVRC2012_img_train.tar (one tar per synset, named like n01440764.tar), "
                  "a folder of synset folders or a folder of per-synset tars")
EXPECTED_VAL = ("ILSVRC2012_img_val.tar or a folder of validation images (flat, or one "
                "subfolder per synset)")
DEFAULT_TRAIN_SHARDS = 1024
DEFAULT_VAL_SHARDS = 128


class Entry(NamedTuple):
  key: str
  filename: str
  size: int
  source: tuple
  synset: Optional[str]     # from the folder / inner tar it came from


def _hidden(name: str) -> bool:
  return os.path.basename(name).startswith(".")


def _describe(names: Sequence[str], limit: int = 8) -> str:
  shown = ", ".join(repr(n) for n in names[:limit])
  return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _walk_files(folder: str) -> List[str]:
  """Relative paths of the visible files under `folder`, sorted; hidden ones are logged."""
  out, hidden = [], []
  for root, dirs, files in os.walk(folder, followlinks=True):
    hidden.extend(os.path.join(root, d) for d in dirs if d.startswith("."))
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(files):
      full = os.path.join(root, name)
      if name.startswith("."):
        hidden.append(full)
      else:
        out.append(os.path.relpath(full, folder))
  if hidden:
    logging.warning("ignoring %d hidden files or folders in %s: %s", len(hidden), folder,
                    _describe(hidden))
  return out


def _file_entry(key: str, filename: str, path: str, synset: Optional[str]) -> Entry:
  return Entry(key, filename, os.path.getsize(path), ("file", path), synset)


def _tar_entries(path: str, flag: str, synset: str, outer=None) -> List[Entry]:
  if outer is None:
    members = archives.members(path, flag, f"a per-synset tar of images ({synset}.tar)")
  else:
    members = archives.nested_members(path, flag, "a per-synset tar of images", outer)
  entries = []
  for m in members:
    if _hidden(m.name):
      logging.warning("ignoring hidden member %s of %s", m.name, outer.name if outer else path)
      continue
    entries.append(Entry(f"{synset}/{m.name}", m.name, m.size, ("tar", path, m.offset),
                         synset))
  return entries


def list_train(path: str) -> Dict[str, List[Entry]]:
  """{synset: its images} from the training tar or folder."""
  flag = "--train"
  by_synset: Dict[str, List[Entry]] = {}

  def add(synset: str, entries: List[Entry], where: str) -> None:
    if synset in by_synset:
      raise DataPrepError(f"{flag}={path}: synset {synset} occurs twice ({where})")
    if not entries:
      raise DataPrepError(f"{flag}={path}: {where} holds no images")
    by_synset[synset] = entries

  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if not _hidden(n))
    unexpected = []
    for name in names:
      full = os.path.join(path, name)
      if os.path.isdir(full) and SYNSET_RE.fullmatch(name):
        files = _walk_files(full)
        add(name, [_file_entry(f"{name}/{rel}", rel, os.path.join(full, rel), name)
                   for rel in files], f"{name}/")
      elif (os.path.isfile(full) and name.endswith(".tar")
            and SYNSET_RE.fullmatch(name[:-len(".tar")])):
        synset = name[:-len(".tar")]
        add(synset, _tar_entries(full, flag, synset), name)
      else:
        unexpected.append(name + ("/" if os.path.isdir(full) else ""))
    if unexpected:
      raise DataPrepError(f"{flag}={path}: expected {EXPECTED_TRAIN}; found "
                          f"{_describe(unexpected)}")
  elif os.path.isfile(path):
    unexpected = []
    for outer in archives.members(path, flag, EXPECTED_TRAIN):
      base = os.path.basename(outer.name)
      if _hidden(base):
        logging.warning("ignoring hidden member %s of %s", outer.name, path)
        continue
      if not (base.endswith(".tar") and SYNSET_RE.fullmatch(base[:-len(".tar")])):
        unexpected.append(outer.name)
        if len(unexpected) >= 8:
          break
        continue
      synset = base[:-len(".tar")]
      add(synset, _tar_entries(path, flag, synset, outer), outer.name)
    if unexpected:
      hint = ""
      if any(n.lower().endswith((".jpeg", ".jpg")) for n in unexpected):
        hint = " (images at the top level: is this the validation tar?)"
      raise DataPrepError(f"{flag}={path}: expected {EXPECTED_TRAIN}; found "
                          f"{_describe(unexpected)}{hint}")
  else:
    raise DataPrepError(f"{flag}={path}: no such file or folder; expected {EXPECTED_TRAIN}")
  if not by_synset:
    raise DataPrepError(f"{flag}={path}: no per-synset tars or folders found; expected "
                        f"{EXPECTED_TRAIN}")
  return by_synset


def list_val(path: str) -> List[Entry]:
  """Validation images; `synset` is set when they sit in synset subfolders."""
  flag = "--val"
  entries: List[Entry] = []
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if not _hidden(n))
    dirs = [n for n in names if os.path.isdir(os.path.join(path, n))]
    files = [n for n in names if n not in dirs]
    if dirs:
      bad = [d + "/" for d in dirs if not SYNSET_RE.fullmatch(d)] + files
      if bad:
        raise DataPrepError(f"{flag}={path}: expected {EXPECTED_VAL}; it has synset "
                            f"subfolders but also {_describe(bad)}")
      for synset in dirs:
        folder = os.path.join(path, synset)
        for rel in _walk_files(folder):
          base = os.path.basename(rel)
          entries.append(_file_entry(base, base, os.path.join(folder, rel), synset))
    else:
      tars = [n for n in files if n.endswith(".tar")]
      if tars:
        raise DataPrepError(f"{flag}={path}: expected {EXPECTED_VAL}; found tars "
                            f"({_describe(tars)}): is this the training data?")
      entries = [_file_entry(n, n, os.path.join(path, n), None) for n in files]
  elif os.path.isfile(path):
    flat, nested, bad = [], [], []
    for m in archives.members(path, flag, EXPECTED_VAL):
      parts = m.name.split("/")
      if _hidden(parts[-1]):
        logging.warning("ignoring hidden member %s of %s", m.name, path)
        continue
      entry = Entry(parts[-1], parts[-1], m.size, ("tar", path, m.offset),
                    parts[0] if len(parts) == 2 else None)
      if len(parts) == 1 and not parts[0].endswith(".tar"):
        flat.append(entry)
      elif len(parts) == 2 and SYNSET_RE.fullmatch(parts[0]):
        nested.append(entry)
      else:
        bad.append(m.name)
    if bad or (flat and nested):
      found = bad or [e.filename for e in flat][:3] + [f"{e.synset}/{e.filename}"
                                                       for e in nested][:3]
      hint = (" (per-synset tars: is this the training tar?)"
              if any(n.endswith(".tar") for n in bad) else "")
      raise DataPrepError(f"{flag}={path}: expected {EXPECTED_VAL} (members 'X.JPEG' or "
                          f"'n01440764/X.JPEG', not both); found {_describe(found)}{hint}")
    entries = flat + nested
  else:
    raise DataPrepError(f"{flag}={path}: no such file or folder; expected {EXPECTED_VAL}")
  if not entries:
    raise DataPrepError(f"{flag}={path}: no images found; expected {EXPECTED_VAL}")
  return entries


def plan(train: str = "", val: str = "", val_labels: str = "", meta_mat: str = "",
         label_offset: int = 0):
  """(DatasetInfo, {split: [Item]}) after every layout and label check."""
  if not train and not val:
    raise DataPrepError("nothing to convert: pass --train=PATH and/or --val=PATH")
  if label_offset not in (0, 1):
    raise DataPrepError(f"--label_offset={label_offset}: must be 0 (labels 0..999) or 1 "
                        "(labels 1..1000, 0 reserved for background)")
  if val_labels and not val:
    raise DataPrepError("--val_labels needs --val (the validation images)")
  train_entries = list_train(train) if train else {}
  labels = imagenet_labels.read(val_labels, meta_mat) if val_labels else None
  val_entries = list_val(val) if val else []

  val_synsets: List[str] = []
  if val_entries:
    folder_synsets = [e.synset for e in val_entries]
    if labels is not None:
      val_synsets = imagenet_labels.assign(labels, [e.filename for e in val_entries])
      clash = [(e.filename, e.synset, s) for e, s in zip(val_entries, val_synsets)
               if e.synset is not None and e.synset != s]
      if clash:
        raise DataPrepError(
            f"--val_labels={val_labels} disagrees with the synset folders of --val={val} "
            f"for {len(clash):,} images, e.g. " + ", ".join(
                f"{name} is in {folder}/ but labelled {label}" for name, folder, label
                in clash[:3]))
    elif any(s is None for s in folder_synsets):
      raise DataPrepError(f"--val={val} holds images without synset folders, so they need "
                          f"labels: pass --val_labels=PATH, one of "
                          f"{imagenet_labels.FORMATS_HELP}")
    else:
      val_synsets = folder_synsets

  if train_entries:
    classes = sorted(train_entries)
  elif labels is not None and labels.classes:
    classes = list(labels.classes)
  else:
    classes = sorted(set(val_synsets))
  index = {s: i for i, s in enumerate(classes)}
  unknown = sorted(set(val_synsets) - set(index))
  if unknown:
    source = "the training synsets" if train_entries else "the classes"
    raise DataPrepError(f"validation labels use {len(unknown)} synsets that are not among "
                        f"{source} ({len(classes)}): {_describe(unknown)}")

  splits: Dict[str, List[planning.Item]] = {}
  if train_entries:
    splits["train"] = [
        planning.Item(e.key, e.filename, index[synset] + label_offset, e.size, e.source,
                    synset=synset)
        for synset in classes for e in train_entries[synset]]
  if val_entries:
    splits["validation"] = [
        planning.Item(e.key, e.filename, index[s] + label_offset, e.size, e.source, synset=s)
        for e, s in zip(val_entries, val_synsets)]
  descriptions = None
  if labels is not None and labels.descriptions and all(
      s in labels.descriptions for s in classes):
    descriptions = [labels.descriptions[s] for s in classes]
  formats = []
  if train:
    formats.append("train " + ("tar" if os.path.isfile(train) else "folder"))
  if val:
    formats.append("validation " + ("tar" if os.path.isfile(val) else "folder"))
  if labels is not None:
    formats.append(f"{labels.kind} validation labels")
  info = manifest_lib.DatasetInfo(
      converter="data_prep.imagenet", dataset="imagenet2012", class_names=list(classes),
      image=dict(manifest_lib.JPEG_IMAGE), source_format="ILSVRC2012 " + ", ".join(formats),
      label_base=label_offset, synsets=list(classes), class_descriptions=descriptions)
  for split, items in splits.items():
    logging.info("%s: %d images in %d classes", split, len(items),
                 len({item.synset for item in items}))
  return info, splits


def convert(output_dir: str, train: str = "", val: str = "", val_labels: str = "",
            meta_mat: str = "", label_offset: int = 0,
            train_shards: int = DEFAULT_TRAIN_SHARDS, val_shards: int = DEFAULT_VAL_SHARDS,
            workers: int = 1, max_rejected: int = 0, seed: int = 0,
            overwrite: bool = False) -> summary_lib.Summary:
  info, splits = plan(train, val, val_labels, meta_mat, label_offset)
  return shards.convert(info, splits,
                        {"train": (train_shards, "--train_shards"),
                         "validation": (val_shards, "--val_shards")},
                        output_dir, workers=workers, max_rejected=max_rejected, seed=seed,
                        overwrite=overwrite)


def define_flags() -> None:
  flags.DEFINE_string("train", "", f"Training images: {EXPECTED_TRAIN}.")
  flags.DEFINE_string("val", "", f"Validation images: {EXPECTED_VAL}.")
  flags.DEFINE_string("val_labels", "",
                      f"Validation labels: {imagenet_labels.FORMATS_HELP}. Not needed when "
                      "--val has synset subfolders.")
  flags.DEFINE_string("meta_mat", "",
                      "The devkit's meta.mat, when --val_labels is "
                      "ILSVRC2012_validation_ground_truth.txt and meta.mat is not beside it.")
  flags.DEFINE_integer("label_offset", 0,
                       "0: labels 0..999; 1: labels 1..1000 (slim / Model Garden, 0 = "
                       "background).")
  errors.register_number_validator("label_offset", low=0, high=1, integer=True)
  flags.DEFINE_integer("train_shards", DEFAULT_TRAIN_SHARDS, "Shards of the train split.")
  flags.DEFINE_integer("val_shards", DEFAULT_VAL_SHARDS, "Shards of the validation split.")
  for name in ("train_shards", "val_shards"):
    errors.register_number_validator(name, low=1, integer=True)
  cli.define_output_flags()


GROUPS = (
    ("Input", ("train", "val", "val_labels", "meta_mat", "label_offset")),
    ("Output", cli.output_flags() + ("train_shards", "val_shards")),
)


@dataclasses.dataclass(frozen=True)
class ImagenetCommand:
  """data_prep.imagenet's command line (each field is the flag of its name).

  Attributes:
    train, val, val_labels, meta_mat: the inputs ("" when not given).
    label_offset: 0 for labels 0..999, 1 for 1..1000.
    train_shards, val_shards: shards per split.
    output: where and how to write.
  """
  train: str
  val: str
  val_labels: str
  meta_mat: str
  label_offset: int
  train_shards: int
  val_shards: int
  output: cli.Output


def _problems(command: ImagenetCommand) -> List[Optional[str]]:
  problems = []
  if not command.train and not command.val:
    problems.append("nothing to convert: pass --train=PATH, --val=PATH or both")
  problems += [cli.missing_path(command.train, "train", EXPECTED_TRAIN),
               cli.missing_path(command.val, "val", EXPECTED_VAL),
               cli.missing_path(command.val_labels, "val_labels",
                                imagenet_labels.FORMATS_HELP),
               cli.missing_path(command.meta_mat, "meta_mat", "the devkit's meta.mat")]
  return problems + cli.output_problems(command.output)


def _main(command: ImagenetCommand) -> int:
  expand = os.path.expanduser
  out = command.output
  summary = convert(out.path, expand(command.train), expand(command.val),
                    expand(command.val_labels), expand(command.meta_mat),
                    command.label_offset, command.train_shards, command.val_shards,
                    out.workers, out.max_rejected, out.seed, out.overwrite)
  return summary.exit_code


def run() -> None:
  define_flags()
  cli.run("data_prep.imagenet", _main, config=ImagenetCommand, groups=GROUPS,
          problems=_problems,
          doc=__doc__ + "\n" + cli.exit_codes_text(
              "finished: every split written and verified, manifest.json written",
              "an expected failure, named in one line (labels that do not fit the images, "
              "more rejected images than --max_rejected, a full disk)"))


if __name__ == "__main__":
  run()

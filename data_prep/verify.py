"""Checks a data_prep output folder end to end.

    python -m data_prep.verify --data_dir=DIR [--workers=N]

Re-reads every shard listed in DIR/manifest.json and checks: the file exists and has the
manifest's SHA-256; every record's TFRecord CRCs; the record count per shard and per split;
every record has the manifest's features with the right types, its image/format matches the
manifest encoding, its label (and coarse label / synset) is consistent with the class lists;
every image decodes the way the trainer decodes it (tf.io.decode_jpeg(channels=3) for "jpeg",
decode_raw for "raw") to exactly image/height x image/width x 3, and every JPEG is one that
data_prep writes (8-bit, 3 components, ends with its end-of-image marker). Shard files in DIR
that the manifest does not list are reported too.

Prints one line per problem, naming the shard file (and the record's index and image/filename),
then a summary; exit code 0 when everything checks out, 1 otherwise (2: a usage error).
"""

import dataclasses
import multiprocessing
import os
import re
import sys
from typing import List, Optional, Tuple

from absl import flags

from pyramidnet_tf import errors

from data_prep import DataPrepError
from data_prep import cli
from pyramidnet_tf import images
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import progress as progress_lib
from data_prep import tf_import
from data_prep import writer

_REQUIRED = {
    "image/encoded": "bytes_list",
    "image/format": "bytes_list",
    "image/height": "int64_list",
    "image/width": "int64_list",
    "image/class/label": "int64_list",
    "image/filename": "bytes_list",
}


def load_manifest(data_dir: str) -> dict:
  path = os.path.join(data_dir, manifest_lib.MANIFEST)
  if not os.path.isdir(data_dir):
    raise DataPrepError(f"--data_dir={data_dir}: no such folder")
  if not os.path.isfile(path):
    state = os.path.join(data_dir, writer.STATE_DIR)
    hint = (" (a conversion into it did not finish or had too many rejected inputs: rerun "
            "it)" if os.path.isdir(state) else "")
    raise DataPrepError(f"{path} not found: --data_dir must be a folder written by "
                        f"data_prep.cifar, data_prep.imagenet or data_prep.folder{hint}")
  try:
    manifest = manifest_lib.load(path)
  except (OSError, ValueError) as e:
    raise DataPrepError(f"{path}: not readable JSON ({e})") from None
  missing = [k for k in ("num_classes", "label_base", "class_names", "image", "splits",
                         "features") if k not in manifest]
  if missing:
    raise DataPrepError(f"{path}: missing {', '.join(missing)}; not a data_prep manifest")
  if manifest["image"].get("encoding") not in ("jpeg", "raw"):
    raise DataPrepError(f"{path}: image.encoding is {manifest['image'].get('encoding')!r}; "
                        "expected 'jpeg' or 'raw'")
  return manifest


def _value(example, key, kind):
  feature = example.features.feature.get(key)
  if feature is None:
    return None, f"missing feature {key}"
  if feature.WhichOneof("kind") != kind:
    return None, f"feature {key} is {feature.WhichOneof('kind')}, expected {kind}"
  values = getattr(feature, kind).value
  if len(values) != 1:
    return None, f"feature {key} has {len(values)} values, expected 1"
  return values[0], None


def check_record(tf, manifest: dict, raw: bytes) -> Tuple[str, List[str]]:
  """(image/filename, problems) of one serialized record."""
  try:
    example = tf.train.Example.FromString(raw)
  except Exception as e:  # protobuf's DecodeError and friends
    return "?", [f"not a tf.train.Example ({e})"]
  problems, values = [], {}
  for key, kind in dict(_REQUIRED, **_optional(manifest)).items():
    value, problem = _value(example, key, kind)
    if problem:
      problems.append(problem)
    values[key] = value
  filename = values["image/filename"].decode("utf-8", "replace") if values.get(
      "image/filename") else "?"
  if problems:
    return filename, problems
  image = manifest["image"]
  if values["image/format"].decode("ascii", "replace") != image.get("format_feature"):
    problems.append(f"image/format is {values['image/format']!r}, the manifest says "
                    f"{image.get('format_feature')!r}")
  base, count = manifest["label_base"], manifest["num_classes"]
  label = values["image/class/label"]
  if not base <= label < base + count:
    problems.append(f"label {label} outside [{base}, {base + count})")
  elif "synsets" in manifest:
    want = manifest["synsets"][label - base]
    if values["image/class/synset"].decode("ascii", "replace") != want:
      problems.append(f"synset {values['image/class/synset']!r} but label {label} is {want}")
  if "coarse_class_names" in manifest:
    coarse = values["image/class/coarse_label"]
    if not base <= coarse < base + len(manifest["coarse_class_names"]):
      problems.append(f"coarse label {coarse} outside [{base}, "
                      f"{base + len(manifest['coarse_class_names'])})")
  height, width = values["image/height"], values["image/width"]
  encoded = values["image/encoded"]
  if image["encoding"] == "raw":
    if (height, width) != (image.get("height", height), image.get("width", width)):
      problems.append(f"size {height}x{width}, the manifest says "
                      f"{image.get('height')}x{image.get('width')}")
    if len(encoded) != height * width * 3:
      problems.append(f"{len(encoded)} raw bytes, expected {height}*{width}*3 = "
                      f"{height * width * 3}")
  else:
    not_clean = images.jpeg_is_clean(encoded)
    if not_clean:
      problems.append(f"image is not a clean RGB JPEG: {not_clean}")
    try:
      shape = tuple(tf.io.decode_jpeg(encoded, channels=3).shape)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as e:
      problems.append(f"JPEG does not decode: {_op_error_text(e)}")
    else:
      if shape != (height, width, 3):
        problems.append(f"decodes to {shape[0]}x{shape[1]}, image/height x image/width say "
                        f"{height}x{width}")
  return filename, problems


def _optional(manifest: dict) -> dict:
  extra = {}
  if "synsets" in manifest:
    extra["image/class/synset"] = "bytes_list"
  if "coarse_class_names" in manifest:
    extra["image/class/coarse_label"] = "int64_list"
  return extra


def verify_shard(data_dir: str, manifest: dict, shard: dict,
                 on_record=lambda: None) -> Tuple[List[str], int]:
  """(problem lines, records read) for one shard entry of the manifest."""
  tf = tf_import.tensorflow()
  name = shard["file"]
  path = os.path.join(data_dir, name)
  if not os.path.isfile(path):
    return [f"{name}: missing (listed in {manifest_lib.MANIFEST})"], 0
  problems = []
  digest = writer.sha256_file(path)
  if digest != shard["sha256"]:
    problems.append(f"{name}: SHA-256 {digest} differs from the manifest's {shard['sha256']}")
  count = 0
  try:
    for raw in tf.data.TFRecordDataset(path):
      filename, record_problems = check_record(tf, manifest, raw.numpy())
      problems.extend(f"{name} record {count} ({filename}): {p}" for p in record_problems)
      count += 1
      on_record()
  except tf.errors.OpError as e:
    problems.append(f"{name}: record {count} is unreadable ({type(e).__name__}: "
                    f"{_op_error_text(e)})")
  if count != shard["num_examples"]:
    problems.append(f"{name}: {count} records read, the manifest says {shard['num_examples']}")
  return problems, count


def _op_error_text(error) -> str:
  text = error.message.splitlines()[0] if error.message else str(error)
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
  return re.sub(r"\s*\[Op:.*$", "", text)


def _verify_in_worker(args):
  return verify_shard(*args)


def verify(data_dir: str, workers: int = 1, out=None) -> int:
  """Checks everything; prints one line per problem and a summary. Returns the exit code."""
  out = out if out is not None else sys.stdout
  manifest = load_manifest(data_dir)
  problems: List[str] = []
  listed = set()
  tasks = []
  for split, entry in manifest["splits"].items():
    total = 0
    for shard in entry["shards"]:
      listed.add(shard["file"])
      total += shard["num_examples"]
      match = planning.SHARD_RE.match(shard["file"])
      if not match or match.group("split") != split:
        problems.append(f"{shard['file']}: listed under split {split!r}, which its name "
                        "does not match")
      tasks.append(shard)
    if total != entry["num_examples"]:
      problems.append(f"{manifest_lib.MANIFEST}: split {split!r} says {entry['num_examples']} "
                      f"examples but its shards add up to {total}")
    if {"seen", "written", "repaired", "rejected"} <= set(entry) and (
        entry["seen"] != entry["written"] + entry["repaired"] + entry["rejected"]):
      problems.append(f"{manifest_lib.MANIFEST}: split {split!r}: seen != written + repaired + "
                      "rejected")
  for name in sorted(os.listdir(data_dir)):
    if planning.SHARD_RE.match(name) and name not in listed:
      problems.append(f"{name}: a shard file that {manifest_lib.MANIFEST} does not list")
  expected = sum(s["num_examples"] for s in tasks)
  progress = progress_lib.Progress(expected, f"verifying {len(tasks)} shards")
  records = 0
  if workers <= 1 or len(tasks) <= 1:
    for shard in tasks:
      shard_problems, count = verify_shard(data_dir, manifest, shard,
                                           lambda: progress.add(1))
      problems.extend(shard_problems)
      records += count
  else:
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(workers, len(tasks))) as pool:
      for shard_problems, count in pool.imap_unordered(
          _verify_in_worker, [(data_dir, manifest, s) for s in tasks]):
        problems.extend(shard_problems)
        records += count
        progress.add(count)
  progress.close()
  for line in problems:
    print(f"BAD {line}", file=out)
  if problems:
    print(f"verify: {len(problems)} problems in {data_dir} ({records:,} records read from "
          f"{len(tasks)} shards)", file=out)
    return 1
  print(f"verify: OK: {data_dir}: {len(manifest['splits'])} splits, {len(tasks)} shards, "
        f"{records:,} images decoded and checked", file=out)
  return 0


def define_flags() -> None:
  flags.DEFINE_string("data_dir", None, "A folder written by a data_prep converter.")
  flags.DEFINE_integer("workers", cli.default_workers(),
                       "Processes that check shards in parallel (default: the CPUs this "
                       "process may use).")
  errors.register_number_validator("workers", low=1, integer=True)


GROUPS = (("What to check", ("data_dir", "workers")),)


@dataclasses.dataclass(frozen=True)
class VerifyCommand:
  """data_prep.verify's command line (each field is the flag of its name).

  Attributes:
    data_dir: the converter's output folder (None when left out).
    workers: processes that check shards.
  """
  data_dir: Optional[str]
  workers: int


def _problems(command: VerifyCommand) -> List[Optional[str]]:
  expected = "a folder written by data_prep.cifar, data_prep.imagenet or data_prep.folder"
  return [cli.required(command.data_dir, "data_dir", expected) or
          cli.missing_path(command.data_dir, "data_dir", expected)]


def _main(command: VerifyCommand) -> int:
  return verify(os.path.expanduser(command.data_dir), command.workers)


def run() -> None:
  define_flags()
  cli.run("data_prep.verify", _main, config=VerifyCommand, groups=GROUPS, problems=_problems,
          doc=__doc__ + "\n" + cli.exit_codes_text(
              "every shard and record checks out",
              "problems found (one line each, then a summary), or a folder without a "
              "readable data_prep manifest.json"))


if __name__ == "__main__":
  run()

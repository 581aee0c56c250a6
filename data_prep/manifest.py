"""manifest.json: what it says about a dataset, built from the shard results, and read back.

A converter describes its dataset with a `DatasetInfo` (classes, image encoding, source);
`build` adds the splits, the shards' checksums and every repaired or rejected input. The
fields are described in docs/data-format.md.
"""

import dataclasses
import hashlib
import json
import os
from typing import Dict, List, Optional

from data_prep import CONVERTER_VERSION
from data_prep import planning

MANIFEST = "manifest.json"
FORMAT = "data_prep shards"
FORMAT_VERSION = 1

JPEG_IMAGE = {
    "encoding": "jpeg",
    "format_feature": "JPEG",
    "channels": 3,
    "dtype": "uint8",
    "decode": "tf.io.decode_jpeg(image/encoded, channels=3)",
}


def raw_image(height: int, width: int) -> dict:
  """The manifest's "image" entry for raw uint8 RGB pixels in HWC order.

  Args:
    height: Rows of every image.
    width: Columns of every image.

  Returns:
    The entry, with the decode recipe.
  """
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


def features(info: DatasetInfo) -> Dict[str, str]:
  """{feature name: "bytes" or "int64"} of every feature the records of `info` carry."""
  names = {
      "image/encoded": "bytes",
      "image/format": "bytes",
      "image/height": "int64",
      "image/width": "int64",
      "image/class/label": "int64",
      "image/filename": "bytes",
  }
  if info.synsets is not None:
    names["image/class/synset"] = "bytes"
  if info.coarse_class_names is not None:
    names["image/class/coarse_label"] = "int64"
  return names


def build(info: DatasetInfo, seed: int, plans_by_split: Dict[str, List[planning.ShardPlan]],
          results: Dict[str, planning.ShardResult]) -> dict:
  """The manifest of a finished conversion, keys in their documented order.

  Args:
    info: The dataset's description.
    seed: The --seed of the record order.
    plans_by_split: {split: its shard plans}, in the order the splits are listed.
    results: {shard file: its result}, for every planned shard.

  Returns:
    The manifest, ready for json.dump.
  """
  manifest = {
      "format": FORMAT,
      "format_version": FORMAT_VERSION,
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
  manifest["features"] = features(info)
  manifest["order"] = {"method": "sha256(seed:key)", "seed": seed}
  fingerprint = hashlib.sha256()
  splits = {}
  repaired, rejected = [], []
  for split, plans in plans_by_split.items():
    shards = []
    written = repaired_count = rejected_count = 0
    for plan in plans:
      r = results[plan.file]
      fingerprint.update(f"{split}/{r.file}:{r.input_sha256}\n".encode("utf-8"))
      shards.append({"file": r.file, "num_examples": r.num_examples, "sha256": r.sha256,
                     "plan_sha256": r.plan_sha256, "input_sha256": r.input_sha256})
      written += r.written
      repaired_count += len(r.repaired)
      rejected_count += len(r.rejected)
      repaired.extend({"split": split, "image": image, "shard": r.file, "reason": reason}
                      for image, reason in r.repaired)
      rejected.extend({"split": split, "image": image, "shard": r.file, "reason": reason}
                      for image, reason in r.rejected)
    splits[split] = {
        "num_examples": written + repaired_count,
        "seen": written + repaired_count + rejected_count,
        "written": written,
        "repaired": repaired_count,
        "rejected": rejected_count,
        "shards": shards,
    }
  manifest["source"] = {"format": info.source_format,
                        "fingerprint": "sha256:" + fingerprint.hexdigest()}
  manifest["splits"] = splits
  manifest["repaired"] = repaired
  manifest["rejected"] = rejected
  return manifest


def load(path: str) -> dict:
  """The parsed JSON of a manifest file, unchecked.

  Args:
    path: The manifest.json file.

  Returns:
    Its content.

  Raises:
    OSError: The file cannot be read.
    ValueError: It is not JSON (UnicodeDecodeError and json.JSONDecodeError are ValueErrors).
  """
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def listed_files(path: str) -> Optional[set]:
  """The shard file names a data_prep manifest lists.

  Args:
    path: A manifest.json file.

  Returns:
    The names, or None when the file is unreadable or not a data_prep manifest.
  """
  try:
    manifest = load(path)
    if manifest.get("format") != FORMAT:
      return None
    return {os.path.basename(shard["file"]) for entry in manifest["splits"].values()
            for shard in entry["shards"]}
  except (OSError, ValueError, KeyError, TypeError, AttributeError):
    return None


def shard_results(manifest: dict) -> Dict[str, planning.ShardResult]:
  """The result of every shard a manifest lists, with its repaired and rejected inputs.

  Args:
    manifest: A manifest as `build` made it.

  Returns:
    {shard file: its result}.

  Raises:
    KeyError, TypeError, ValueError: `manifest` does not have the documented fields.
  """
  found: Dict[str, planning.ShardResult] = {}
  for split, entry in manifest["splits"].items():
    for shard in entry["shards"]:
      found[shard["file"]] = planning.ShardResult(
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
  return found

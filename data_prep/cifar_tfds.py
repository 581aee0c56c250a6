"""A prepared TFDS `cifar10` / `cifar100` data dir -> a CifarData in memory.

The files of <data_dir>/<dataset>/<version>/ are read directly (dataset_info.json,
<feature>.labels.txt and the TFRecord shards of serialized tf.train.Examples with `id`, PNG
`image`, `label`, `coarse_label`), without importing tensorflow_datasets, which would import
Keras. The newest version present is used; records are put back in id order (TFDS stores
them shuffled), so the shards equal those converted from the archive.
"""

import io
import json
import os
import re
from typing import List, Optional

import numpy as np
from PIL import Image

from data_prep import DataPrepError
from data_prep import DataPrepFlagError
from data_prep import cifar_archive
from data_prep import tf_import


def _class_names(folder: str, feature: str, expected: int, where: str) -> List[str]:
  path = os.path.join(folder, f"{feature}.labels.txt")
  if not os.path.isfile(path):
    raise DataPrepError(f"{where}: {path} (the {feature} names) is missing")
  with open(path, "rb") as f:
    names = cifar_archive.names_from_text(f.read(), path)
  return cifar_archive.check_class_names(names, expected, path)


def _versions(data_dir: str, dataset: str) -> List[tuple]:
  """The prepared versions of `dataset` under a TFDS data dir, as tuples of ints."""
  root = os.path.join(data_dir, dataset)
  versions = []
  if os.path.isdir(root):
    for name in os.listdir(root):
      if (re.fullmatch(r"\d+\.\d+\.\d+", name)
          and os.path.isfile(os.path.join(root, name, "dataset_info.json"))):
        versions.append(tuple(int(p) for p in name.split(".")))
  return versions


def prepared(data_dir: str) -> List[str]:
  """The CIFARs ("cifar10", "cifar100") a TFDS data dir holds a prepared version of."""
  return [name for name in cifar_archive.LAYOUTS if _versions(data_dir, name)]


def load(dataset: Optional[str], data_dir: str) -> cifar_archive.CifarData:
  """Reads a prepared TFDS cifar10/cifar100 (data_dir/<dataset>/<version>/).

  Args:
    dataset: "cifar10" or "cifar100"; None: the one the data dir holds.
    data_dir: The TFDS data dir (--tfds_data_dir).

  Returns:
    The dataset, splits `train` and `test`, keys and labels as TFDS stores them.

  Raises:
    DataPrepFlagError: `dataset` is None and the data dir holds both CIFARs, or `dataset`
      is not prepared there but the other CIFAR is.
    DataPrepError: No prepared version, a file missing or unreadable, or records that do not
      match dataset_info.json; the message names the file.
  """
  if dataset is None:
    held = prepared(data_dir)
    if len(held) > 1:
      raise DataPrepFlagError(
          f"--source=tfds: --tfds_data_dir={data_dir} holds both cifar10 and cifar100; pass "
          "--dataset=cifar10 or --dataset=cifar100 to choose")
    if not held:
      raise DataPrepError(
          f"--source=tfds: no prepared TFDS cifar10 or cifar100 under --tfds_data_dir="
          f"{data_dir} (expected {os.path.join(data_dir, 'cifar10')}/<version>/"
          f"dataset_info.json); prepare one with `tfds build cifar10 --data_dir={data_dir}` "
          "or pass --source=<archive>")
    dataset = held[0]
  root = os.path.join(data_dir, dataset)
  versions = _versions(data_dir, dataset)
  if not versions and prepared(data_dir):
    other = prepared(data_dir)[0]
    raise DataPrepFlagError(
        f"--dataset={dataset} contradicts --source=tfds: --tfds_data_dir={data_dir} holds "
        f"{other}, not {dataset}; pass --dataset={other} or leave --dataset out (it is read "
        "from the data dir)")
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
  layout = cifar_archive.LAYOUTS[dataset]
  class_names = _class_names(folder, "label", layout.num_classes, where)
  coarse_names = (_class_names(folder, "coarse_label", layout.num_coarse, where)
                  if layout.num_coarse else None)
  splits_info = {s.get("name"): s for s in info.get("splits", [])}
  tf = tf_import.tensorflow()
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
      if array.shape != cifar_archive.IMAGE_SHAPE:
        raise DataPrepError(f"{where}: image of {key} is {list(array.shape)}, expected "
                            "[32, 32, 3]")
      images.append(array)
    pixels[split] = np.stack(images)
    labels[split] = np.asarray([r[2] for r in rows], dtype=np.int64)
    keys[split] = ids
    cifar_archive.check_labels(labels[split], layout.num_classes, f"{where} ({split})",
                               "labels")
    if layout.num_coarse:
      coarse[split] = np.asarray([r[3] for r in rows], dtype=np.int64)
      cifar_archive.check_labels(coarse[split], layout.num_coarse, f"{where} ({split})",
                                 "coarse labels")
  return cifar_archive.CifarData(dataset, pixels, labels,
                                 coarse if layout.num_coarse else None, keys, class_names,
                                 coarse_names, f"TFDS {dataset} {version}")



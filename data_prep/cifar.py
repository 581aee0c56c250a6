"""CIFAR-10 / CIFAR-100 -> sharded TFRecords.

    python -m data_prep.cifar --source=cifar-10-python.tar.gz --output_dir=data/cifar10
    python -m data_prep.cifar --dataset=cifar100 --download --output_dir=data/cifar100
    python -m data_prep.cifar --source=tfds [--tfds_data_dir=DIR] --output_dir=data/cifar10

--source is any of cifar-10-python.tar.gz, cifar-10-binary.tar.gz, cifar-100-python.tar.gz,
cifar-100-binary.tar.gz or the folder one of them unpacks to (or a folder above it). Which
CIFAR it holds is read from its files, so --dataset is needed only with --download (or to
choose when a folder or TFDS data dir holds both); when given, it must agree with them. Which
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

docs/data-format.md describes the output and why CIFAR pixels are raw. --output_dir must not
be a model directory (one holding checkpoints or model_config.json).
"""

import dataclasses
import os
from typing import Dict, List, Optional

from absl import flags
from absl import logging

from pyramidnet_tf import errors

from data_prep import cifar_archive
from data_prep import cifar_download
from data_prep import cifar_tfds
from data_prep import cli
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import shards
from data_prep import summary as summary_lib


DEFAULT_TRAIN_SHARDS = 16
DEFAULT_TEST_SHARDS = 4


def to_items(data: cifar_archive.CifarData) -> Dict[str, List[planning.Item]]:
  """The records of each split: raw 32x32x3 pixels, keyed by their TFDS id.

  Args:
    data: The dataset, as cifar_archive.load or cifar_tfds.load read it.

  Returns:
    {split: its items}, in the dataset's order (the conversion reorders them).
  """
  items = {}
  for split in cifar_archive.LAYOUTS[data.dataset].splits:
    pixels, labels = data.pixels[split], data.labels[split]
    coarse = data.coarse_labels[split] if data.coarse_labels is not None else None
    items[split] = [
        planning.Item(key=key, filename=key, label=int(labels[i]),
                      size=cifar_archive.PIXELS, source=("raw", pixels[i].tobytes(), 32, 32),
                      coarse_label=int(coarse[i]) if coarse is not None else None)
        for i, key in enumerate(data.keys[split])]
  return items


def convert(data: cifar_archive.CifarData, output_dir: str,
            train_shards: int = DEFAULT_TRAIN_SHARDS, test_shards: int = DEFAULT_TEST_SHARDS,
            workers: int = 1, seed: int = 0,
            overwrite: bool = False) -> summary_lib.Summary:
  """Writes the shards and manifest.json of a CIFAR dataset.

  Args:
    data: The dataset, as cifar_archive.load or cifar_tfds.load read it.
    output_dir: The output folder; created if missing, verified shards there are kept.
    train_shards: Shards of the train split.
    test_shards: Shards of the test split.
    workers: Processes that write shards in parallel (1: this process).
    seed: The seed of the record order.
    overwrite: Replace another dataset in the output folder (--overwrite).

  Returns:
    What the conversion did (it also prints a summary).

  Raises:
    DataPrepError: A shard count is out of range, or the output folder holds foreign files
      or (without `overwrite`) another dataset.
  """
  info = manifest_lib.DatasetInfo(
      converter="data_prep.cifar", dataset=data.dataset, class_names=data.class_names,
      image=manifest_lib.raw_image(32, 32), source_format=data.source_format,
      coarse_class_names=data.coarse_class_names)
  for split in data.pixels:
    logging.info("%s: %d images", split, len(data.keys[split]))
  return shards.convert(info, to_items(data),
                        {"train": (train_shards, "--train_shards"),
                         "test": (test_shards, "--test_shards")},
                        output_dir, workers=workers, seed=seed, overwrite=overwrite)


def define_flags() -> None:
  flags.DEFINE_enum("dataset", None, ["cifar10", "cifar100"],
                    "Which CIFAR; default: read from --source (checked against it when "
                    "given). Needed with --download.")
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
  for name in ("train_shards", "test_shards"):
    errors.register_number_validator(name, low=1, integer=True)
  cli.define_output_flags(
      with_max_rejected=False, workers=1,
      workers_help="Processes that write shards in parallel. Default 1: raw CIFAR records "
      "are cheap to write, and starting worker processes (each imports TensorFlow) costs "
      "more than it saves.")


GROUPS = (
    ("Input", ("source", "dataset", "tfds_data_dir")),
    ("Download", ("download", "download_dir", "download_url", "download_sha256")),
    ("Output", cli.output_flags(with_max_rejected=False) + ("train_shards", "test_shards")),
)


@dataclasses.dataclass(frozen=True)
class CifarCommand:
  """data_prep.cifar's command line (each field is the flag of its name).

  Attributes:
    dataset: "cifar10", "cifar100", or None to read it from the source.
    source: an archive, its unpacked folder, "tfds", or None with --download.
    download: fetch the official archive first.
    download_dir, download_url, download_sha256: where and what to fetch.
    tfds_data_dir: the TFDS data dir for source "tfds".
    train_shards, test_shards: shards per split.
    output: where and how to write.
  """
  dataset: Optional[str]
  source: Optional[str]
  download: bool
  download_dir: str
  download_url: str
  download_sha256: str
  tfds_data_dir: str
  train_shards: int
  test_shards: int
  output: cli.Output


def _problems(command: CifarCommand) -> List[Optional[str]]:
  problems = []
  if command.download and command.source:
    problems.append("pass either --source or --download, not both")
  elif command.download:
    if command.dataset is None:
      problems.append("--download needs --dataset=cifar10 or --dataset=cifar100 (which "
                      "archive to fetch)")
  elif not command.source:
    problems.append(f"--source is required: {cifar_archive.ANY_ARCHIVE}, the folder one of "
                    "them unpacks to, or 'tfds'; or pass --download with --dataset")
  elif command.source != "tfds":
    archives = (cifar_archive.LAYOUTS[command.dataset].archives if command.dataset
                else cifar_archive.ANY_ARCHIVE)
    problems.append(cli.missing_path(
        command.source, "source", f"{archives}, the folder one of them unpacks to, or 'tfds'"))
  return problems + cli.output_problems(command.output)


def _main(command: CifarCommand) -> int:
  expand = os.path.expanduser
  if command.download:
    path = cifar_download.download(command.dataset, expand(command.download_dir),
                                   command.download_url, command.download_sha256)
    data = cifar_archive.load(command.dataset, path)
  elif command.source == "tfds":
    data = cifar_tfds.load(command.dataset, expand(command.tfds_data_dir))
  else:
    data = cifar_archive.load(command.dataset, expand(command.source))
  out = command.output
  summary = convert(data, out.path, command.train_shards, command.test_shards, out.workers,
                    out.seed, out.overwrite)
  return summary.exit_code


def run() -> None:
  define_flags()
  cli.run("data_prep.cifar", _main, config=CifarCommand, groups=GROUPS, problems=_problems,
          doc=__doc__ + "\n" + cli.exit_codes_text(
              "finished: both splits written and verified, manifest.json written",
              "an expected failure, named in one line (an unreadable or damaged archive, a "
              "failed download, a full disk)"))


if __name__ == "__main__":
  run()

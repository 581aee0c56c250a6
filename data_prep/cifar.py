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

docs/data-format.md describes the output and why CIFAR pixels are raw.
"""

import os
from typing import Dict, List

from absl import app
from absl import flags
from absl import logging

from data_prep import DataPrepError
from data_prep import cifar_archive
from data_prep import cifar_download
from data_prep import cifar_tfds
from data_prep import cli
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import shards
from data_prep import summary as summary_lib

FLAGS = flags.FLAGS

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
    path = cifar_download.download(FLAGS.dataset, os.path.expanduser(FLAGS.download_dir),
                                   FLAGS.download_url, FLAGS.download_sha256)
    data = cifar_archive.load(FLAGS.dataset, path)
  elif FLAGS.source == "tfds":
    data = cifar_tfds.load(FLAGS.dataset, os.path.expanduser(FLAGS.tfds_data_dir))
  elif FLAGS.source:
    data = cifar_archive.load(FLAGS.dataset, os.path.expanduser(FLAGS.source))
  else:
    archives = cifar_archive.LAYOUTS[FLAGS.dataset].archives
    raise DataPrepError(f"pass --source=PATH ({archives}, the folder it unpacks to, or "
                        "'tfds') or --download")
  summary = convert(data, os.path.expanduser(FLAGS.output_dir), FLAGS.train_shards,
                    FLAGS.test_shards, FLAGS.workers, FLAGS.seed, FLAGS.overwrite)
  return summary.exit_code


def run() -> None:
  define_flags()
  app.run(cli.main_with_errors("data_prep.cifar", _main))


if __name__ == "__main__":
  run()

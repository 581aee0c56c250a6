"""data_prep.verify: catches every kind of damage and names the file."""

import io
import json
import os
import re
import shutil

import pytest

from data_prep import DataPrepError
from data_prep import imagenet
from data_prep import verify
from data_prep import writer
from tests import data_prep_fixtures as fx


@pytest.fixture(scope="module")
def good(tmp_path_factory):
  root = tmp_path_factory.mktemp("verify")
  train = fx.ilsvrc_train(per_class=3, special=("cmyk", "png"))
  tar = fx.write_train_tar(str(root / "train.tar"), train)
  val_files, val_labels = fx.ilsvrc_val(6)
  val = fx.write_tree(str(root / "val"), val_files)
  labels = fx.write_tfds_labels(str(root / "labels.txt"), val_labels)
  out = root / "out"
  summary = imagenet.convert(str(out), train=tar, val=val, val_labels=labels, train_shards=3,
                             val_shards=2)
  assert summary.exit_code == 0
  return out


def _copy(good, tmp_path):
  return shutil.copytree(good, tmp_path / "copy")


def _check(data_dir):
  out = io.StringIO()
  code = verify.verify(str(data_dir), out=out)
  return code, out.getvalue()


def test_good_output_passes(good):
  code, text = _check(good)
  assert code == 0, text
  assert "verify: OK" in text and "23 images decoded and checked" in text


def test_flipped_byte_is_caught_and_named(good, tmp_path):
  data_dir = _copy(good, tmp_path)
  shard = data_dir / "train-00001-of-00003.tfrecord"
  data = bytearray(shard.read_bytes())
  data[len(data) // 2] ^= 0x40
  shard.write_bytes(bytes(data))
  code, text = _check(data_dir)
  assert code == 1
  assert "BAD train-00001-of-00003.tfrecord: SHA-256" in text
  assert re.search(r"BAD train-00001-of-00003.tfrecord: record \d+ is unreadable "
                   r"\(DataLossError: corrupted record at \d+\)", text)  # TFRecord CRC
  assert "train-00000" not in text and "validation" not in text


def test_undecodable_image_with_matching_checksums_is_caught(good, tmp_path):
  """A shard whose bytes match the manifest but holds a truncated JPEG (e.g. written by a
  buggy converter): only decoding finds it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data_dir = _copy(good, tmp_path)
  name = "validation-00000-of-00002.tfrecord"
  records = [tf.train.Example.FromString(r.numpy())
             for r in tf.data.TFRecordDataset(str(data_dir / name))]
  feature = records[1].features.feature
  bad_name = feature["image/filename"].bytes_list.value[0].decode()
  encoded = feature["image/encoded"].bytes_list.value[0]
  feature["image/encoded"].bytes_list.value[0] = encoded[:len(encoded) // 2] + b"\xff\xd9"
  with tf.io.TFRecordWriter(str(data_dir / name)) as tfrecord:
    for record in records:
      tfrecord.write(record.SerializeToString())
  manifest = json.loads((data_dir / "manifest.json").read_text())
  for shard in manifest["splits"]["validation"]["shards"]:
    if shard["file"] == name:
      shard["sha256"] = writer.sha256_file(str(data_dir / name))
  (data_dir / "manifest.json").write_text(json.dumps(manifest))
  code, text = _check(data_dir)
  assert code == 1
  assert f"BAD {name} record 1 ({bad_name}): JPEG does not decode" in text


def test_label_and_count_problems(good, tmp_path):
  data_dir = _copy(good, tmp_path)
  manifest = json.loads((data_dir / "manifest.json").read_text())
  manifest["splits"]["train"]["shards"][0]["num_examples"] += 1
  manifest["synsets"][0], manifest["synsets"][1] = manifest["synsets"][1], manifest["synsets"][0]
  (data_dir / "manifest.json").write_text(json.dumps(manifest))
  code, text = _check(data_dir)
  assert code == 1
  assert "BAD manifest.json: split 'train' says 17 examples but its shards add up to 18" in text
  assert "records read, the manifest says" in text
  assert "synset b'n01440764' but label 0 is n01443537" in text


def test_missing_and_unlisted_shards(good, tmp_path):
  data_dir = _copy(good, tmp_path)
  os.remove(data_dir / "train-00002-of-00003.tfrecord")
  (data_dir / "train-00000-of-00009.tfrecord").write_bytes(b"")
  code, text = _check(data_dir)
  assert code == 1
  assert "BAD train-00002-of-00003.tfrecord: missing" in text
  assert "BAD train-00000-of-00009.tfrecord: a shard file that manifest.json does not list" in text


def test_no_manifest(tmp_path):
  with pytest.raises(DataPrepError, match="manifest.json not found"):
    verify.verify(str(tmp_path))


def test_cli_names_each_bad_file(good, tmp_path):
  proc = fx.run_cli("verify", f"--data_dir={good}", "--workers=1")
  assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
  assert "verify: OK" in proc.stdout
  data_dir = _copy(good, tmp_path)
  for name in ("train-00000-of-00003.tfrecord", "validation-00001-of-00002.tfrecord"):
    data = bytearray((data_dir / name).read_bytes())
    data[-20] ^= 0x01
    (data_dir / name).write_bytes(bytes(data))
  proc = fx.run_cli("verify", f"--data_dir={data_dir}", "--workers=2")
  assert proc.returncode == 1
  bad = {line.split()[1].rstrip(":") for line in proc.stdout.splitlines()
         if line.startswith("BAD ")}
  assert bad == {"train-00000-of-00003.tfrecord", "validation-00001-of-00002.tfrecord"}

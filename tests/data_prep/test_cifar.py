"""data_prep.cifar and its readers (cifar_archive, cifar_download, cifar_tfds): both archive
formats, folders, download, TFDS, errors, the CLI."""

import json
import os
import pickle

import numpy as np
import pytest

from data_prep import DataPrepError
from data_prep import cifar
from data_prep import cifar_archive
from data_prep import cifar_download
from data_prep import cifar_tfds
from tests import data_prep_fixtures as fx


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  """{(dataset, format): archive path} plus the arrays they hold."""
  root = tmp_path_factory.mktemp("cifar")
  out = {}
  for dataset, per_batch, test in (("cifar10", 8, 15), ("cifar100", 30, 12)):
    arrays = fx.cifar_arrays(dataset, per_batch, test, seed=1)
    out[dataset] = arrays
    for fmt in ("python", "binary"):
      name = f"{dataset.replace('cifar', 'cifar-')}-{fmt}.tar.gz"
      out[dataset, fmt] = fx.write_tar(str(root / name), fx.cifar_files(dataset, arrays, fmt),
                                       "w:gz")
  return out


def _convert(data, out, **kw):
  kw.setdefault("train_shards", 3)
  kw.setdefault("test_shards", 2)
  return cifar.convert(data, str(out), **kw)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_python_and_binary_archives_give_identical_records(dataset, sources, tmp_path):
  outputs = {}
  for fmt in ("python", "binary"):
    data = cifar_archive.load(dataset, sources[dataset, fmt])
    assert data.source_format.endswith(f"{fmt} archive")
    _convert(data, tmp_path / fmt)
    outputs[fmt] = fx.dir_bytes(str(tmp_path / fmt))
  python, binary = outputs["python"], outputs["binary"]
  assert sorted(python) == sorted(binary)
  for name in python:
    if name != "manifest.json":
      assert python[name] == binary[name], name
  m_python, m_binary = json.loads(python["manifest.json"]), json.loads(binary["manifest.json"])
  assert m_python["source"]["format"] != m_binary["source"]["format"]
  m_python["source"]["format"] = m_binary["source"]["format"]
  assert m_python == m_binary  # including the source fingerprint


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_records_hold_the_original_pixels_and_labels(dataset, sources, tmp_path):
  _convert(cifar_archive.load(dataset, sources[dataset, "python"]), tmp_path)
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["dataset"] == dataset
  assert manifest["image"] == {
      "encoding": "raw", "format_feature": "RAW", "channels": 3, "dtype": "uint8",
      "layout": "HWC", "height": 32, "width": 32,
      "decode": "tf.reshape(tf.io.decode_raw(image/encoded, tf.uint8), "
                "[image/height, image/width, 3])"}
  if dataset == "cifar10":
    assert manifest["class_names"] == fx.CIFAR10_NAMES
    assert "coarse_class_names" not in manifest
  else:
    assert manifest["class_names"][:2] == ["fine_00", "fine_01"]
    assert len(manifest["coarse_class_names"]) == 20
  for split in ("train", "test"):
    rows, fine, coarse = sources[dataset][split]
    seen = 0
    for shard in manifest["splits"][split]["shards"]:
      for record in fx.read_records(str(tmp_path / shard["file"])):
        index = int(record["image/filename"].decode().split("_")[1])
        assert record["image/filename"].decode() == f"{split}_{index:05d}"
        expected = rows[index].reshape(3, 32, 32).transpose(1, 2, 0)
        decoded = np.frombuffer(record["image/encoded"], np.uint8).reshape(
            record["image/height"], record["image/width"], 3)
        np.testing.assert_array_equal(decoded, expected)
        assert record["image/class/label"] == fine[index]
        if dataset == "cifar100":
          assert record["image/class/coarse_label"] == coarse[index]
        else:
          assert "image/class/coarse_label" not in record
        seen += 1
    assert seen == len(rows)


def test_tensorflow_decodes_records_with_the_documented_rule(sources, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  _convert(cifar_archive.load("cifar10", sources["cifar10", "binary"]), tmp_path)
  spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
          "image/height": tf.io.FixedLenFeature([], tf.int64),
          "image/width": tf.io.FixedLenFeature([], tf.int64)}
  path = str(tmp_path / "test-00000-of-00002.tfrecord")
  for serialized in tf.data.TFRecordDataset(path).take(2):
    f = tf.io.parse_single_example(serialized, spec)
    image = tf.reshape(tf.io.decode_raw(f["image/encoded"], tf.uint8),
                       [f["image/height"], f["image/width"], 3])
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8


def test_unpacked_folder_and_its_parent_work(sources, tmp_path):
  files = fx.cifar_files("cifar10", sources["cifar10"], "binary")
  fx.write_tree(str(tmp_path / "parent"), files)
  reference = cifar_archive.load("cifar10", sources["cifar10", "binary"])
  for path in (tmp_path / "parent", tmp_path / "parent" / "cifar-10-batches-bin"):
    data = cifar_archive.load("cifar10", str(path))
    assert data.source_format == "CIFAR-10 binary folder"
    for split in ("train", "test"):
      np.testing.assert_array_equal(data.pixels[split], reference.pixels[split])
      np.testing.assert_array_equal(data.labels[split], reference.labels[split])


def test_format_is_read_from_content_not_names(sources, tmp_path):
  files = fx.cifar_files("cifar10", sources["cifar10"], "python")
  renamed = {name + ".bin" if "batch" in name and "meta" not in name else name: data
             for name, data in files.items()}
  path = fx.write_tar(str(tmp_path / "odd-name.tar"), renamed)
  data = cifar_archive.load("cifar10", path)
  assert data.source_format == "CIFAR-10 python archive"
  binary = cifar_archive.load("cifar10", sources["cifar10", "binary"])
  np.testing.assert_array_equal(data.pixels["train"], binary.pixels["train"])


def test_wrong_dataset_flag_is_named(sources):
  with pytest.raises(DataPrepError, match="holds CIFAR-100, not CIFAR-10; pass "
                     "--dataset=cifar100"):
    cifar_archive.load("cifar10", sources["cifar100", "binary"])


def test_missing_files_say_what_was_expected_and_found(sources, tmp_path):
  files = fx.cifar_files("cifar10", sources["cifar10"], "binary")
  del files["cifar-10-batches-bin/data_batch_3.bin"]
  path = fx.write_tar(str(tmp_path / "partial.tar"), files)
  with pytest.raises(DataPrepError) as error:
    cifar_archive.load("cifar10", path)
  message = str(error.value)
  assert "expected cifar-10-python.tar.gz or cifar-10-binary.tar.gz" in message
  assert "data_batch_3" in message and "found: cifar-10-batches-bin/data_batch_1.bin" in message


def test_truncated_binary_batch_is_an_error(sources, tmp_path):
  files = fx.cifar_files("cifar10", sources["cifar10"], "binary")
  files["cifar-10-batches-bin/test_batch.bin"] = files["cifar-10-batches-bin/test_batch.bin"][:-5]
  with pytest.raises(DataPrepError, match="test_batch.bin: 46090 bytes is not a whole number "
                     "of CIFAR-10 records"):
    cifar_archive.load("cifar10", fx.write_tar(str(tmp_path / "t.tar"), files))


def test_label_out_of_range_is_an_error(sources, tmp_path):
  files = fx.cifar_files("cifar10", sources["cifar10"], "binary")
  data = bytearray(files["cifar-10-batches-bin/data_batch_2.bin"])
  data[3073] = 10  # label byte of the second record
  files["cifar-10-batches-bin/data_batch_2.bin"] = bytes(data)
  with pytest.raises(DataPrepError, match=r"1 labels outside \[0, 10\), e.g. record 9 has 10"):
    cifar_archive.load("cifar10", fx.write_tar(str(tmp_path / "t.tar"), files))


def test_pickles_may_hold_only_data(sources, tmp_path):
  files = fx.cifar_files("cifar10", sources["cifar10"], "python")

  class Evil:
    def __reduce__(self):
      return (os.system, ("echo owned",))
  files["cifar-10-batches-py/data_batch_1"] = pickle.dumps({"data": Evil()}, protocol=2)
  with pytest.raises(DataPrepError, match="refusing to load posix.system"):
    cifar_archive.load("cifar10", fx.write_tar(str(tmp_path / "evil.tar"), files))


def test_nonexistent_source_lists_the_choices(tmp_path):
  with pytest.raises(DataPrepError, match="no such file or folder; expected "
                     "cifar-100-python.tar.gz or cifar-100-binary.tar.gz"):
    cifar_archive.load("cifar100", str(tmp_path / "nope.tar.gz"))


# ---------------------------------------------------------------------------------------
# --download


def test_download_verifies_checksum_and_caches(sources, tmp_path):
  archive = sources["cifar10", "binary"]
  with open(archive, "rb") as f:
    digest = fx.sha256(f.read())
  cache = tmp_path / "cache"
  with fx.serve_directory(os.path.dirname(archive)) as base:
    url = f"{base}/{os.path.basename(archive)}"
    path = cifar_download.download("cifar10", str(cache), url, digest)
    assert open(path, "rb").read() == open(archive, "rb").read()
    # A wrong checksum (here: the official one) rejects the file and keeps nothing.
    with pytest.raises(DataPrepError) as error:
      cifar_download.download("cifar10", str(tmp_path / "other"), url)
    assert f"has SHA-256 {digest}" in str(error.value)
    assert cifar_download.OFFICIAL_DOWNLOADS["cifar10"][2] in str(error.value)
    assert os.listdir(tmp_path / "other") == []
  # The verified copy is reused without a server.
  assert cifar_download.download("cifar10", str(cache), url, digest) == path


def test_download_failure_is_a_clear_error(tmp_path):
  with fx.serve_directory(str(tmp_path)) as base:
    with pytest.raises(DataPrepError, match=r"cannot download .*/missing.tar.gz: HTTP Error "
                       "404.*pass --source=PATH"):
      cifar_download.download("cifar10", str(tmp_path / "cache"), f"{base}/missing.tar.gz")


def test_cli_download_converts(sources, tmp_path):
  archive = sources["cifar100", "python"]
  with open(archive, "rb") as f:
    digest = fx.sha256(f.read())
  out = tmp_path / "out"
  with fx.serve_directory(os.path.dirname(archive)) as base:
    proc = fx.run_cli("cifar", "--dataset=cifar100", "--download",
                      f"--download_dir={tmp_path / 'cache'}",
                      f"--download_url={base}/{os.path.basename(archive)}",
                      f"--download_sha256={digest}", f"--output_dir={out}",
                      "--train_shards=2", "--test_shards=1", "--workers=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "train: seen 30 = written 30 + repaired 0 + rejected 0  (2 shards)" in proc.stdout
  assert f"wrote {out}/manifest.json" in proc.stdout
  direct = tmp_path / "direct"
  _convert(cifar_archive.load("cifar100", archive), direct, train_shards=2, test_shards=1)
  assert fx.dir_bytes(str(out)) == fx.dir_bytes(str(direct))


def test_cli_errors_name_the_flag_and_choices(tmp_path):
  proc = fx.run_cli("cifar", "--dataset=cifar10", f"--source={tmp_path / 'missing'}",
                    f"--output_dir={tmp_path / 'out'}")
  assert proc.returncode == 2  # a path the user gave: a usage error
  assert "data_prep.cifar: error: --source=" in proc.stderr
  assert "expected cifar-10-python.tar.gz or cifar-10-binary.tar.gz" in proc.stderr
  assert not (tmp_path / "out").exists()
  proc = fx.run_cli("cifar", "--dataset=cifar20", "--source=x", "--output_dir=y")
  assert proc.returncode == 2
  assert "value should be one of <cifar10|cifar100>" in proc.stderr


# ---------------------------------------------------------------------------------------
# --source=tfds


def test_tfds_source_matches_the_archive(sources, tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.image_classification import cifar as tfds_cifar  # pylint: disable=g-import-not-at-top
  src = fx.write_tree(str(tmp_path / "extracted"),
                      fx.cifar_files("cifar10", sources["cifar10"], "binary"))

  class LocalCifar10(tfds_cifar.Cifar10, skip_registration=True):
    """The real TFDS builder, reading the fixture instead of downloading."""
    name = "cifar10"
    code_path = None  # no checksums file to look up (and no importlib_resources needed)

    def _split_generators(self, dl_manager):
      class Local:
        def download_and_extract(self, url):
          del url
          return src
      return super()._split_generators(Local())
  data_dir = str(tmp_path / "tfds")
  LocalCifar10(data_dir=data_dir).download_and_prepare(
      download_config=tfds.download.DownloadConfig(verify_ssl=False))
  data = cifar_tfds.load("cifar10", data_dir)
  assert data.source_format == "TFDS cifar10 3.0.2"
  _convert(data, tmp_path / "from_tfds")
  _convert(cifar_archive.load("cifar10", sources["cifar10", "binary"]), tmp_path / "from_archive")
  a, b = fx.dir_bytes(str(tmp_path / "from_tfds")), fx.dir_bytes(str(tmp_path / "from_archive"))
  assert [n for n in a if a[n] != b[n]] == ["manifest.json"]


def test_tfds_source_missing_says_how_to_prepare(tmp_path):
  with pytest.raises(DataPrepError, match="tfds build cifar10"):
    cifar_tfds.load("cifar10", str(tmp_path))

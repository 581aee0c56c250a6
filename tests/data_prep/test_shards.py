"""data_prep.shards and what it runs: atomic writing, resume, manifest, summary."""

import json
import os
import signal
import subprocess
import sys

import pytest

from data_prep import cifar
from data_prep import cifar_archive
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import shards
from data_prep import writer
from tests import data_prep_fixtures as fx


# ---------------------------------------------------------------------------------------
# Whole conversions (CIFAR-10 fixture: fast, raw pixels).


@pytest.fixture(scope="module")
def cifar_source(tmp_path_factory):
  root = tmp_path_factory.mktemp("cifar_src")
  arrays = fx.cifar_arrays("cifar10", per_batch=12, test=20, seed=5)
  return fx.write_tar(str(root / "cifar-10-binary.tar.gz"),
                      fx.cifar_files("cifar10", arrays, "binary"), "w:gz")


def _convert(source, out, **kw):
  kw.setdefault("train_shards", 6)
  kw.setdefault("test_shards", 2)
  return cifar.convert(cifar_archive.load("cifar10", source), str(out), **kw)


@pytest.fixture(scope="module")
def reference(cifar_source, tmp_path_factory):
  out = tmp_path_factory.mktemp("reference")
  _convert(cifar_source, out)
  return fx.dir_bytes(str(out))


def test_two_runs_give_identical_bytes(cifar_source, reference, tmp_path):
  _convert(cifar_source, tmp_path / "again")
  assert fx.dir_bytes(str(tmp_path / "again")) == reference
  assert sorted(reference) == ["manifest.json"] + [
      f"test-0000{i}-of-00002.tfrecord" for i in range(2)] + [
      f"train-0000{i}-of-00006.tfrecord" for i in range(6)]
  assert not os.path.exists(tmp_path / "again" / writer.STATE_DIR)


def test_manifest_describes_the_shards(reference):
  manifest = json.loads(reference["manifest.json"])
  assert manifest["format"] == "data_prep shards" and manifest["format_version"] == 1
  assert manifest["converter"] == "data_prep.cifar"
  assert manifest["num_classes"] == len(manifest["class_names"]) == 10
  assert manifest["label_base"] == 0
  assert manifest["image"]["encoding"] == "raw"
  assert manifest["source"]["fingerprint"].startswith("sha256:")
  for split, n in (("train", 60), ("test", 20)):
    entry = manifest["splits"][split]
    assert entry["num_examples"] == entry["seen"] == entry["written"] == n
    assert entry["repaired"] == entry["rejected"] == 0
    assert sum(s["num_examples"] for s in entry["shards"]) == n
    for shard in entry["shards"]:
      data = reference[shard["file"]]
      assert fx.sha256(data) == shard["sha256"]
  assert manifest["repaired"] == [] and manifest["rejected"] == []


def test_records_have_exactly_the_manifest_features(reference, tmp_path):
  manifest = json.loads(reference["manifest.json"])
  path = tmp_path / "shard.tfrecord"
  path.write_bytes(reference["train-00000-of-00006.tfrecord"])
  for record in fx.read_records(str(path)):
    assert set(record) == set(manifest["features"])
    assert record["image/format"] == b"RAW"


def test_ctrl_c_leaves_no_partial_shard_and_rerun_completes(cifar_source, reference, tmp_path,
                                                            monkeypatch):
  out = tmp_path / "out"
  calls = {"n": 0}
  real = writer._example  # pylint: disable=protected-access

  def interrupted(*args):
    calls["n"] += 1
    if calls["n"] == 25:  # inside the third train shard
      raise KeyboardInterrupt
    return real(*args)
  monkeypatch.setattr(writer, "_example", interrupted)
  with pytest.raises(KeyboardInterrupt):
    _convert(cifar_source, out)
  names = sorted(os.listdir(out))
  assert "manifest.json" not in names
  assert not [n for n in names if ".tmp-" in n]
  finished = [n for n in names if n.endswith(".tfrecord")]
  assert len(finished) == 2
  for name in finished:  # what is there is complete
    assert reference[name] == (out / name).read_bytes()
  monkeypatch.setattr(writer, "_example", real)
  summary = _convert(cifar_source, out)
  assert summary.kept_shards == 2
  assert fx.dir_bytes(str(out)) == reference


def test_killed_run_resumes_keeping_finished_shards(cifar_source, reference, tmp_path):
  out = tmp_path / "out"
  # A real SIGKILL in the middle of writing the fourth shard (one worker, this process).
  script = (
      "import os, signal, sys\n"
      "from data_prep import cifar, writer\n"
      "real, calls = writer._example, [0]\n"
      "def dying(*args):\n"
      "  calls[0] += 1\n"
      "  if calls[0] == 35:\n"
      "    os.kill(os.getpid(), signal.SIGKILL)\n"
      "  return real(*args)\n"
      "writer._example = dying\n"
      f"sys.argv = ['cifar', '--dataset=cifar10', '--source={cifar_source}',\n"
      f"            '--output_dir={out}', '--workers=1', '--train_shards=6',\n"
      "            '--test_shards=2']\n"
      "cifar.run()\n")
  env = dict(os.environ, PYTHONPATH=fx.REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
  names = sorted(os.listdir(out))
  assert "manifest.json" not in names
  temps = [n for n in names if ".tmp-" in n]
  assert len(temps) == 1  # the shard being written when the process died
  finished = [n for n in names if n.endswith(".tfrecord")]
  assert len(finished) == 3
  before = {n: os.stat(out / n) for n in finished}

  summary = _convert(cifar_source, out)
  assert summary.kept_shards == 3
  assert fx.dir_bytes(str(out)) == reference
  assert not [n for n in os.listdir(out) if ".tmp-" in n]
  for name, stat in before.items():  # kept, not rewritten
    after = os.stat(out / name)
    assert (after.st_ino, after.st_mtime_ns) == (stat.st_ino, stat.st_mtime_ns)


def test_damaged_shard_is_redone_on_rerun(cifar_source, reference, tmp_path):
  out = tmp_path / "out"
  _convert(cifar_source, out)
  victim = out / "train-00004-of-00006.tfrecord"
  data = bytearray(victim.read_bytes())
  data[len(data) // 2] ^= 0x01
  victim.write_bytes(bytes(data))
  summary = _convert(cifar_source, out)
  assert summary.kept_shards == 7
  assert fx.dir_bytes(str(out)) == reference


def test_new_shard_count_replaces_old_shards(cifar_source, tmp_path):
  out = tmp_path / "out"
  _convert(cifar_source, out)
  _convert(cifar_source, out, train_shards=4)
  names = sorted(n for n in os.listdir(out) if n.startswith("train"))
  assert names == [f"train-0000{i}-of-00004.tfrecord" for i in range(4)]


def test_summary_line_states_seen_written_repaired_rejected(cifar_source, tmp_path,
                                                           capsys):
  _convert(cifar_source, tmp_path / "out")
  out = capsys.readouterr().out
  assert "train: seen 60 = written 60 + repaired 0 + rejected 0  (6 shards)" in out
  assert "total: seen 80 = written 80 + repaired 0 + rejected 0" in out


def test_more_rejections_than_allowed_withholds_the_manifest(tmp_path, capsys):
  source = tmp_path / "src"
  fx.write_tree(str(source), {"a.jpg": fx.jpeg(), "b.jpg": fx.truncated_jpeg(),
                              "c.jpg": b"not an image"})
  items = [planning.Item(name, name, 0, os.path.getsize(source / name),
                         ("file", str(source / name))) for name in sorted(os.listdir(source))]
  info = manifest_lib.DatasetInfo("test", "tiny", ["only"], dict(manifest_lib.JPEG_IMAGE),
                                  "files")
  out = tmp_path / "out"
  summary = shards.convert(info, {"train": items}, {"train": (2, "--train_shards")}, str(out),
                           max_rejected=1)
  printed = capsys.readouterr().out
  assert summary.exit_code == 1 and not summary.manifest_written
  assert not (out / "manifest.json").exists()
  assert "train: seen 3 = written 1 + repaired 0 + rejected 2" in printed
  assert "rejected: train b.jpg: truncated JPEG" in printed
  assert "rejected: train c.jpg: not a recognised image" in printed
  assert "--max_rejected=2" in printed
  summary = shards.convert(info, {"train": items}, {"train": (2, "--train_shards")}, str(out),
                           max_rejected=2)
  assert summary.exit_code == 0 and summary.kept_shards == 2
  manifest = json.loads((out / "manifest.json").read_text())
  assert sorted(r["image"] for r in manifest["rejected"]) == ["b.jpg", "c.jpg"]
  assert manifest["splits"]["train"]["num_examples"] == 1


def test_conversion_and_verify_import_no_keras(cifar_source, tmp_path):
  script = (
      "import sys\n"
      "from data_prep import cifar, cifar_archive, verify\n"
      f"data = cifar_archive.load('cifar10', {str(cifar_source)!r})\n"
      f"cifar.convert(data, {str(tmp_path)!r}, train_shards=2, test_shards=1)\n"
      f"assert verify.verify({str(tmp_path)!r}) == 0\n"
      "print('KERAS=' + ','.join(m for m in sys.modules if m.split('.')[0] in "
      "('keras', 'tf_keras')))\n")
  env = dict(os.environ, PYTHONPATH=fx.REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("PYRAMIDNET_TF_ALLOW_KERAS", None)
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                        text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "KERAS=\n" in proc.stdout

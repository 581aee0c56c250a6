"""data_prep.shards: order, planning, atomic writing, resume, manifest, progress."""

import io
import json
import os
import signal
import subprocess
import sys

import pytest

from data_prep import DataPrepError
from data_prep import cifar
from data_prep import progress as progress_lib
from data_prep import shards
from tests import data_prep_fixtures as fx


def _items(n, prefix="k"):
  return [shards.Item(f"{prefix}{i:03d}", f"{prefix}{i:03d}.jpg", i % 3, 10, ("raw", bytes([i]) * 3, 1, 1))
          for i in range(n)]


def test_order_is_a_seeded_hash_of_the_key_not_the_input_order():
  items = _items(50)
  a = shards.order(items, seed=0)
  b = shards.order(list(reversed(items)), seed=0)
  assert [i.key for i in a] == [i.key for i in b]
  assert [i.key for i in a] != [i.key for i in items]          # actually shuffled
  assert [i.key for i in shards.order(items, seed=1)] != [i.key for i in a]


def test_duplicate_keys_are_an_error():
  items = _items(3) + _items(1)
  with pytest.raises(DataPrepError, match="k000"):
    shards.order(items, 0)


def test_plan_cuts_contiguous_near_equal_shards():
  plans = shards.plan_split("train", _items(10), 3, 0, shards.raw_image(1, 1), "--x")
  assert [len(p.items) for p in plans] == [3, 3, 4]
  assert [p.file for p in plans] == ["train-00000-of-00003.tfrecord",
                                     "train-00001-of-00003.tfrecord",
                                     "train-00002-of-00003.tfrecord"]
  ordered = shards.order(_items(10), 0)
  assert [i.key for p in plans for i in p.items] == [i.key for i in ordered]
  assert len({p.plan_sha256 for p in plans}) == 3


def test_plan_errors_name_the_flag():
  with pytest.raises(DataPrepError, match=r"--train_shards=11 is more than the 10 images"):
    shards.plan_split("train", _items(10), 11, 0, shards.raw_image(1, 1), "--train_shards")
  with pytest.raises(DataPrepError, match=r"--val_shards=0: must be between 1"):
    shards.plan_split("validation", _items(3), 0, 0, shards.raw_image(1, 1), "--val_shards")
  with pytest.raises(DataPrepError, match="has no images"):
    shards.plan_split("train", [], 1, 0, shards.raw_image(1, 1), "--train_shards")


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
  return cifar.convert(cifar.load("cifar10", source), str(out), **kw)


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
  assert not os.path.exists(tmp_path / "again" / shards.STATE_DIR)


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
  real = shards._example  # pylint: disable=protected-access

  def interrupted(*args):
    calls["n"] += 1
    if calls["n"] == 25:  # inside the third train shard
      raise KeyboardInterrupt
    return real(*args)
  monkeypatch.setattr(shards, "_example", interrupted)
  with pytest.raises(KeyboardInterrupt):
    _convert(cifar_source, out)
  names = sorted(os.listdir(out))
  assert "manifest.json" not in names
  assert not [n for n in names if ".tmp-" in n]
  finished = [n for n in names if n.endswith(".tfrecord")]
  assert len(finished) == 2
  for name in finished:  # what is there is complete
    assert reference[name] == (out / name).read_bytes()
  monkeypatch.setattr(shards, "_example", real)
  summary = _convert(cifar_source, out)
  assert summary.kept_shards == 2
  assert fx.dir_bytes(str(out)) == reference


def test_killed_run_resumes_keeping_finished_shards(cifar_source, reference, tmp_path):
  out = tmp_path / "out"
  # A real SIGKILL in the middle of writing the fourth shard (one worker, this process).
  script = (
      "import os, signal, sys\n"
      "from data_prep import shards, cifar\n"
      "real, calls = shards._example, [0]\n"
      "def dying(*args):\n"
      "  calls[0] += 1\n"
      "  if calls[0] == 35:\n"
      "    os.kill(os.getpid(), signal.SIGKILL)\n"
      "  return real(*args)\n"
      "shards._example = dying\n"
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
  items = [shards.Item(name, name, 0, os.path.getsize(source / name),
                       ("file", str(source / name))) for name in sorted(os.listdir(source))]
  info = shards.DatasetInfo("test", "tiny", ["only"], dict(shards.JPEG_IMAGE), "files")
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


# ---------------------------------------------------------------------------------------
# Progress display.


class _Clock:
  def __init__(self):
    self.t = 0.0

  def __call__(self):
    return self.t


class _Terminal(io.StringIO):
  def isatty(self):
    return True


def test_progress_bar_on_a_terminal_shows_rate_and_eta():
  clock, stream = _Clock(), _Terminal()
  bar = progress_lib.Progress(1000, "writing", stream=stream, clock=clock)
  clock.t = 2.0
  bar.add(500)
  text = stream.getvalue()
  assert text.startswith("\r[############............] writing: 500/1,000 images")
  assert "250 images/s, ETA 0:00:02" in text
  bar.close()
  assert stream.getvalue().endswith("\n")


def test_progress_without_terminal_logs_periodically(monkeypatch):
  lines = []
  monkeypatch.setattr(progress_lib.logging, "info", lambda fmt, *a: lines.append(fmt % a))
  clock = _Clock()
  bar = progress_lib.Progress(100, "writing", stream=io.StringIO(), clock=clock,
                              log_every_s=30)
  clock.t = 10.0
  bar.add(10)
  assert lines == []
  clock.t = 31.0
  bar.add(10)
  assert lines == ["writing: 20/100 images ( 20.0%) 1 images/s, ETA 0:02:04"]
  bar.close()
  assert lines[-1].endswith("(done in 0:00:31)")


def test_conversion_and_verify_import_no_keras(cifar_source, tmp_path):
  script = (
      "import sys\n"
      "from data_prep import cifar, verify\n"
      f"data = cifar.load('cifar10', {str(cifar_source)!r})\n"
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

"""Faults in the data path: damaged, missing and miscounted shards through
data_prep.verify, train and evaluate; data without an evaluation split;
reused output folders holding other files; conversions killed at seeded
points or stopped by a full disk, then resumed; bad inputs to the data_prep
tools.

What every case checks: a tool either does the whole job (every record read
exactly once, saying so when the manifest disagrees with the files) or ends
with status 1 and one line that names the file and what to do, without a
traceback; nothing a user put in an output folder is deleted; a conversion
resumed after a kill or a full disk is byte-identical to an uninterrupted
one.
"""

import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from tests import data_prep_fixtures as dp
from tests import train_fixtures as fx

TINY = fx.TINY_MODEL + ["--nobottleneck"]
CLASSES = 4
PER_CLASS = 12      # --val_fraction=0.25: 9 train + 3 validation images each
TRAIN = 36
VALIDATION = 12
TRAIN_SHARD = "train-00001-of-00002.tfrecord"
VAL_SHARD = "validation-00001-of-00002.tfrecord"


# ---------------------------------------------------------------------------
# Fixtures and helpers.


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("data_faults")


@pytest.fixture(scope="module")
def source(root):
  """An image folder: 4 classes x 12 JPEGs of 16x16 (written untouched)."""
  rng = np.random.default_rng(3)
  for label in range(CLASSES):
    folder = root / "source" / f"class_{label}"
    folder.mkdir(parents=True)
    for i in range(PER_CLASS):
      Image.fromarray(fx.class_image(label, CLASSES, 16, rng)).save(
          folder / f"{i:02d}.jpg", quality=95)
  return str(root / "source")


def _convert(source, out, **kwargs):
  """data_prep.folder in this process (2 + 2 shards unless told)."""
  from data_prep import folder  # pylint: disable=g-import-not-at-top
  args = dict(val_fraction=0.25, train_shards=2, val_shards=2, workers=1)
  args.update(kwargs)
  return folder.convert(source, str(out), **args)


def _folder_flags(source, out):
  return [f"--source={source}", f"--output_dir={out}", "--val_fraction=0.25",
          "--train_shards=2", "--val_shards=2"]


@pytest.fixture(scope="module")
def prepared(source, root):
  out = root / "prepared"
  assert _convert(source, out).exit_code == 0
  return str(out)


@pytest.fixture(scope="module")
def reference(prepared):
  """Every file of an uninterrupted conversion, by name."""
  return dp.dir_bytes(prepared)


def _train(data_dir, model_dir, *extra):
  return fx.run_cli("pyramidnet_tf.train", TINY + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
      *extra])


def _evaluate(model_dir, data_dir, *extra):
  return fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}", *extra])


@pytest.fixture(scope="module")
def model_dir(prepared, root):
  """A model trained two steps on the good data, evaluation off."""
  directory = str(root / "model")
  proc = _train(prepared, directory, "--train_steps=2", "--noeval_at_end")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return directory


@pytest.fixture(scope="module")
def good_eval(model_dir, prepared):
  """evaluate's metrics on the undamaged data."""
  proc = _evaluate(model_dir, prepared, "--eval_batch_size=4")
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout)
  assert result["examples"] == VALIDATION
  return result


def _copy(prepared, tmp_path):
  target = str(tmp_path / "data")
  shutil.copytree(prepared, target)
  return target


def _frames(path):
  """(offset, data length) of each record, read from the TFRecord framing
  here rather than with the code under test."""
  with open(path, "rb") as f:
    data = f.read()
  frames, offset = [], 0
  while offset < len(data):
    length = int.from_bytes(data[offset:offset + 8], "little")
    frames.append((offset, length))
    offset += 16 + length
  return frames


def _damage(data_dir, name, kind, record=None):
  """Corrupts (one bit of a record's data), truncates (inside the last
  record) or deletes a shard; returns the damaged record's index."""
  path = os.path.join(data_dir, name)
  frames = _frames(path)
  if kind == "corrupt":
    index = len(frames) // 2 if record is None else record
    offset, length = frames[index]
    with open(path, "r+b") as f:
      f.seek(offset + 12 + length // 2)
      byte = f.read(1)[0]
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte ^ 0x10]))
    return index
  if kind == "truncated":
    offset, length = frames[-1]
    os.truncate(path, offset + 12 + length // 2)
    return len(frames) - 1
  assert kind == "missing"
  os.remove(path)
  return None


def _miscount(data_dir, split, delta):
  """Moves the manifest's count of the split's first shard (and of the
  split) by ``delta``, as a hand edit or a mixed-up copy would."""
  path = os.path.join(data_dir, "manifest.json")
  with open(path) as f:
    manifest = json.load(f)
  entry = manifest["splits"][split]
  entry["shards"][0]["num_examples"] += delta
  entry["num_examples"] += delta
  with open(path, "w") as f:
    json.dump(manifest, f, indent=2)
  return entry["shards"][0]["file"]


def _one_line_error(proc, prog, *needles, code=1):
  assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines()
           if line.startswith((f"{prog}: error:", "FATAL Flags parsing error"))]
  assert len(lines) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


def _warnings(stderr, needle):
  return [line for line in stderr.splitlines() if needle in line]


# ---------------------------------------------------------------------------
# Damaged, missing and miscounted shards.


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "missing",
                                  "miscounted"])
def test_verify_names_the_damaged_shard(prepared, tmp_path, faults, kind):
  from data_prep import verify  # pylint: disable=g-import-not-at-top
  data_dir = _copy(prepared, tmp_path)
  with faults.inject(f"{kind} shard: data_prep.verify"):
    if kind == "miscounted":
      name = _miscount(data_dir, "train", 3)
    else:
      name = TRAIN_SHARD
      _damage(data_dir, name, kind)
    out = io.StringIO()
    assert verify.verify(data_dir, out=out) == 1
    bad = [line for line in out.getvalue().splitlines()
           if line.startswith("BAD ")]
    assert bad and all(name in line or "manifest.json" in line
                       for line in bad), out.getvalue()
    assert any(line.startswith(f"BAD {name}") for line in bad)


@pytest.mark.parametrize("delta,extra", [
    (-4, ["--eval_batch_size=4"]),
    (5, ["--eval_batch_size=4", "--cpu_devices=2"]),
])
def test_evaluate_reads_every_record_whatever_the_manifest_says(
    model_dir, prepared, good_eval, tmp_path, faults, delta, extra):
  data_dir = _copy(prepared, tmp_path)
  name = _miscount(data_dir, "validation", delta)
  with faults.inject(f"validation count {delta:+d} in the manifest: "
                     f"evaluate {' '.join(extra)}") as fault:
    proc = _evaluate(model_dir, data_dir, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    fault.lost = max(0, VALIDATION - result["examples"])
    assert result["examples"] == VALIDATION
    for key in ("loss", "top1_error", "top5_error"):
      assert abs(result[key] - good_eval[key]) < 1e-4, (key, result)
    warning = _warnings(proc.stderr, "says split 'validation'")
    assert len(warning) == 1, proc.stderr[-3000:]
    for needle in (os.path.join(data_dir, "manifest.json"),
                   f"has {VALIDATION + delta} examples",
                   f"shards hold {VALIDATION}", name):
      assert needle in warning[0], warning[0]


@pytest.mark.parametrize("kind", ["corrupt", "truncated", "missing"])
def test_evaluate_stops_on_a_damaged_shard_naming_it(
    model_dir, prepared, tmp_path, faults, kind):
  data_dir = _copy(prepared, tmp_path)
  with faults.inject(f"{kind} validation shard: evaluate"):
    record = _damage(data_dir, VAL_SHARD, kind)
    proc = _evaluate(model_dir, data_dir)
    line = _one_line_error(proc, "pyramidnet_tf.evaluate",
                           os.path.join(data_dir, VAL_SHARD))
    if record is not None:
      assert f"record {record} " in line and "data_prep.verify" in line


@pytest.mark.parametrize("delta", [5, -4])
def test_train_stops_on_a_miscounted_train_split(prepared, tmp_path, faults,
                                                 delta):
  data_dir = _copy(prepared, tmp_path)
  name = _miscount(data_dir, "train", delta)
  with faults.inject(f"train count {delta:+d} in the manifest: train"):
    proc = _train(data_dir, str(tmp_path / "model"), "--train_steps=2")
    _one_line_error(proc, "pyramidnet_tf.train",
                    os.path.join(data_dir, "manifest.json"),
                    f"has {TRAIN + delta} examples", f"hold {TRAIN}", name,
                    "data_prep.verify")


def test_train_evaluates_every_record_of_a_miscounted_eval_split(
    prepared, tmp_path, faults):
  data_dir = _copy(prepared, tmp_path)
  _miscount(data_dir, "validation", -4)
  with faults.inject("validation count -4 in the manifest: train's eval"
                     ) as fault:
    proc = _train(data_dir, str(tmp_path / "model"), "--train_steps=2",
                  "--eval_batch_size=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    examples = fx.train_result(proc.stderr)["eval"]["examples"]
    fault.lost = max(0, VALIDATION - examples)
    assert examples == VALIDATION
    warning = _warnings(proc.stderr, "says split 'validation'")
    assert len(warning) == 1 and f"hold {VALIDATION}" in warning[0], (
        proc.stderr[-3000:])


@pytest.mark.parametrize("shard,kind", [
    (TRAIN_SHARD, "corrupt"), (TRAIN_SHARD, "truncated"),
    (TRAIN_SHARD, "missing"), (VAL_SHARD, "corrupt")])
def test_train_stops_on_a_damaged_shard_naming_it(prepared, tmp_path, faults,
                                                  shard, kind):
  data_dir = _copy(prepared, tmp_path)
  with faults.inject(f"{kind} {shard.split('-')[0]} shard: train"):
    record = _damage(data_dir, shard, kind)
    proc = _train(data_dir, str(tmp_path / "model"), "--train_steps=2")
    line = _one_line_error(proc, "pyramidnet_tf.train",
                           os.path.join(data_dir, shard))
    if record is not None:
      assert f"record {record} " in line and "data_prep.verify" in line


def test_corrupt_record_in_a_streamed_shuffle_stops_each_resume_until_fixed(
    source, prepared, reference, tmp_path, faults):
  """--shuffle_buffer=1 reads the records in file order, so the bad record
  is reached a few steps in, and again by every resume from the checkpoint
  before it: each run must stop with the same line, and re-running the
  conversion (which rewrites just that shard) must let the run finish."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data_dir = _copy(prepared, tmp_path)
  model = str(tmp_path / "model")
  # --deterministic: the read error surfaces at its place in the stream.
  flags = ["--train_steps=4", "--shuffle_buffer=1", "--deterministic",
           "--checkpoint_every_steps=1", "--noeval_at_end"]
  with faults.inject("corrupt record late in a streamed train shard: train, "
                     "resume, re-convert") as fault:
    record = _damage(data_dir, TRAIN_SHARD, "corrupt",
                     record=len(_frames(os.path.join(data_dir, TRAIN_SHARD)))
                     - 3)
    needles = (os.path.join(data_dir, TRAIN_SHARD), f"record {record} ")
    first = _one_line_error(_train(data_dir, model, *flags),
                            "pyramidnet_tf.train", *needles)
    saved = tf.train.latest_checkpoint(model)
    assert saved is not None  # the steps before the bad record were kept
    again = _one_line_error(_train(data_dir, model, *flags),
                            "pyramidnet_tf.train", *needles)
    assert again == first
    summary = _convert(source, data_dir)
    assert summary.kept_shards == 3
    assert dp.dir_bytes(data_dir) == reference
    proc = _train(data_dir, model, *flags)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fx.train_result(proc.stderr)["step"] == 4
    fault.lost = 0


def test_data_without_an_eval_split_trains_and_evaluate_says_so(
    source, model_dir, tmp_path, faults):
  data_dir = tmp_path / "train_only"
  assert _convert(source, data_dir, val_fraction=0).exit_code == 0
  with faults.inject("--val_fraction=0 data: train"):
    proc = _train(str(data_dir), str(tmp_path / "model"), "--train_steps=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert fx.train_result(proc.stderr)["eval"] is None
    lines = _warnings(proc.stderr, "has no evaluation split")
    assert len(lines) == 1 and "training without evaluation" in lines[0]
  with faults.inject("--val_fraction=0 data: evaluate"):
    proc = _evaluate(model_dir, str(data_dir))
    _one_line_error(proc, "pyramidnet_tf.evaluate",
                    os.path.join(str(data_dir), "manifest.json"),
                    "no evaluation split", "--split=train")


# ---------------------------------------------------------------------------
# data_prep: reused output folders, kills, full disks, bad inputs.


def test_reused_output_dir_with_user_files_is_refused(
    source, prepared, tmp_path, faults):
  users = {"backup-00000-of-00001.tfrecord": os.urandom(300),
           "train-00000-of-00002.tfrecord": os.urandom(200),
           "notes.txt": b"mine"}
  # A fresh folder, and one that an earlier conversion wrote.
  for case, start in (("new folder", None), ("earlier conversion", prepared)):
    out = tmp_path / case.replace(" ", "_")
    if start:
      shutil.copytree(start, out)
      mine = {"backup-00000-of-00001.tfrecord": users[
          "backup-00000-of-00001.tfrecord"]}
    else:
      out.mkdir()
      mine = users
    for name, data in mine.items():
      (out / name).write_bytes(data)
    before = fx.tree_bytes(str(out))
    with faults.inject(f"user shard-named files in a reused --output_dir "
                       f"({case}): data_prep.folder") as fault:
      proc = dp.run_cli("folder", *_folder_flags(source, out), "--workers=1")
      after = fx.tree_bytes(str(out))
      fault.lost = sum(after.get(name) != data for name, data in mine.items())
      line = _one_line_error(proc, "data_prep.folder", str(out),
                             "backup-00000-of-00001.tfrecord",
                             "--output_dir")
      if not start:
        assert "train-00000-of-00002.tfrecord" in line
      assert after == before  # nothing changed, theirs or ours
  # Moved away, the earlier conversion is resumed as usual.
  os.remove(tmp_path / "earlier_conversion" / "backup-00000-of-00001.tfrecord")
  summary = _convert(source, tmp_path / "earlier_conversion")
  assert summary.exit_code == 0 and summary.kept_shards == 4
  # A manifest.json that data_prep did not write is not replaced either.
  out = tmp_path / "foreign_manifest"
  out.mkdir()
  (out / "manifest.json").write_text('{"mine": true}')
  with faults.inject("someone else's manifest.json in --output_dir"):
    proc = dp.run_cli("folder", *_folder_flags(source, out), "--workers=1")
    _one_line_error(proc, "data_prep.folder", str(out / "manifest.json"),
                    "not a data_prep manifest")
    assert fx.tree_bytes(str(out)) == {"manifest.json": b'{"mine": true}'}


_KILL_SCRIPT = """
import os, signal, sys
from data_prep import folder, writer
kill_at, calls, first_record = int(sys.argv[1]), [0], []

def counted(function):
  def call(*args, **kwargs):
    calls[0] += 1
    if function is real_example and not first_record:
      first_record.append(calls[0])
    if calls[0] == kill_at:
      os.kill(os.getpid(), signal.SIGKILL)
    return function(*args, **kwargs)
  return call

real_example = writer._example

for name in ("_example", "_write_json_atomic", "sha256_file", "_fsync_dir"):
  setattr(writer, name, counted(getattr(writer, name)))
os.replace, os.remove = counted(os.replace), counted(os.remove)
summary = folder.convert(sys.argv[2], sys.argv[3], val_fraction=0.25,
                         train_shards=int(sys.argv[4]), val_shards=2)
print("events", calls[0], first_record[0])
"""


def _kill_script(point, source, out):
  return subprocess.run(
      [sys.executable, "-c", _KILL_SCRIPT, str(point), source, str(out), "2"],
      env=fx.cli_env(), capture_output=True, text=True, timeout=240,
      check=False)


def _events(source, out):
  """(events of a conversion into ``out``, the event of its first record),
  counted as _KILL_SCRIPT counts them."""
  proc = _kill_script(0, source, out)
  assert proc.returncode == 0, proc.stderr[-3000:]
  total, first = proc.stdout.split("events")[-1].split()
  return int(total), int(first)


def test_conversion_killed_at_seeded_points_resumes_byte_identically(
    source, reference, tmp_path, faults):
  rng = random.Random(20240611)
  total, _ = _events(source, tmp_path / "count")
  # A folder holding a 3-shard conversion, to be replaced by a 2-shard one:
  # killed while the stale shards are removed (before the first record).
  earlier = tmp_path / "earlier"
  _convert(source, earlier, train_shards=3)
  shutil.copytree(earlier, tmp_path / "count_earlier")
  _, first_record = _events(source, tmp_path / "count_earlier")
  cases = [("fresh", total)] * 3 + [("3 shards before", first_record - 1)]
  for case, events in cases:
    point = rng.randint(1, events)
    out = tmp_path / f"{case.replace(' ', '_')}_{point}"
    if case != "fresh":
      shutil.copytree(earlier, out)
    with faults.inject(f"SIGKILL of data_prep.folder ({case}) at event "
                       f"{point} of {events}, then resume") as fault:
      proc = _kill_script(point, source, out)
      assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
      for name, data in dp.dir_bytes(str(out)).items():
        if name in reference and name != "manifest.json":
          assert data == reference[name], name  # no half-written shard
      _convert(source, out)
      got = dp.dir_bytes(str(out))
      fault.lost = sum(got.get(name) != data for name, data in
                       reference.items())
      assert got == reference
      assert sorted(os.listdir(out)) == sorted(reference)  # no temp, state


def _mount_tmpfs(directory, size):
  os.makedirs(directory, exist_ok=True)
  if os.geteuid() != 0 or not shutil.which("mount"):
    return False
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                         "tmpfs", str(directory)], capture_output=True,
                        check=False)
  return proc.returncode == 0


def _file_size_limit(limit):
  def apply():
    import resource  # pylint: disable=g-import-not-at-top
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return apply


def _run_folder(source, out, *extra, preexec_fn=None):
  return subprocess.run(
      [sys.executable, "-m", "data_prep.folder", *_folder_flags(source, out),
       *extra], cwd=fx.REPO, env=fx.cli_env(), capture_output=True,
      text=True, timeout=240, check=False, preexec_fn=preexec_fn)


def _check_resumes(source, out, reference):
  """Nothing half-written kept; rerun with space completes identically."""
  for name, data in dp.dir_bytes(str(out)).items():
    assert name != "manifest.json" and data == reference[name], name
  assert not [n for n in os.listdir(out) if ".tmp-" in n]
  proc = _run_folder(source, out, "--workers=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert dp.dir_bytes(str(out)) == reference


def test_full_disk_during_conversion_is_one_line_and_resumable(
    source, reference, tmp_path, faults):
  disk = tmp_path / "disk"
  shards_size = sum(len(v) for k, v in reference.items()
                    if k.endswith(".tfrecord"))
  if _mount_tmpfs(disk, 4 << 20):
    try:
      out = disk / "out"
      stat = os.statvfs(disk)
      ballast = disk / "ballast"
      # Room for about half of the shards (tmpfs counts whole pages).
      ballast.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize
                                   - shards_size // 2))
      with faults.inject("disk full during data_prep.folder (2 workers), "
                         "then resume") as fault:
        proc = _run_folder(source, out, "--workers=2")
        _one_line_error(proc, "data_prep.folder", f"--output_dir={out}",
                        "disk is full", "rerun the same command")
        os.remove(ballast)
        _check_resumes(source, out, reference)
        fault.lost = 0
    finally:
      subprocess.run(["umount", str(disk)], check=False)
  else:  # no tmpfs here: a file-size limit refuses the writes instead
    out = disk / "out"
    largest = max(len(v) for k, v in reference.items()
                  if k.endswith(".tfrecord"))
    with faults.inject("file size limit during data_prep.folder, then "
                       "resume") as fault:
      proc = _run_folder(source, out, "--workers=1",
                         preexec_fn=_file_size_limit(largest // 2))
      _one_line_error(proc, "data_prep.folder", f"--output_dir={out}",
                      "file size limit", "rerun the same command")
      _check_resumes(source, out, reference)
      fault.lost = 0


@pytest.fixture(scope="module")
def bad_sources(root):
  """Damaged inputs for the converters."""
  folder = root / "bad_sources"
  folder.mkdir()
  garbage = folder / "garbage.tar.gz"
  garbage.write_bytes(np.random.default_rng(1).bytes(5000))
  arrays = dp.cifar_arrays("cifar10", per_batch=4, test=4, seed=2)
  cifar = dp.write_tar(str(folder / "cifar.tar.gz"),
                       dp.cifar_files("cifar10", arrays, "binary"), "w:gz")
  with open(cifar, "rb") as f:
    data = f.read()
  (folder / "cut.tar.gz").write_bytes(data[:len(data) * 2 // 3])
  train = dp.write_train_tar(str(folder / "train.tar"),
                             dp.ilsvrc_train(per_class=2, special=()))
  with open(train, "rb") as f:
    data = f.read()
  (folder / "train_cut.tar").write_bytes(data[:len(data) // 2 + 100])
  loose = folder / "loose"
  (loose / "cat").mkdir(parents=True)
  (loose / "readme.txt").write_text("not a class")
  (folder / "not_json").mkdir()
  (folder / "not_json" / "manifest.json").write_text("{oops")
  return folder


# (tool, flags, what its one error line says, exit code: 2 for a usage error
# (a flag or path refused before any work), 1 for a failure while working).
_BAD_INPUTS = [
    ("cifar", ["--dataset=cifar10", "--source={b}/none.tar.gz"],
     ["--source=", "does not exist"], 2),
    ("cifar", ["--dataset=cifar10", "--source={b}/garbage.tar.gz"],
     ["garbage.tar.gz", "nor a tar archive"], 1),
    ("cifar", ["--dataset=cifar10", "--source={b}/cut.tar.gz"],
     ["cut.tar.gz", "truncated", "download it again"], 1),
    ("cifar", ["--dataset=cifar7", "--source={b}/cifar.tar.gz"],
     ["--dataset"], 2),
    ("imagenet", ["--train={b}/train_cut.tar"],
     ["--train=", "train_cut.tar", "truncated"], 1),
    ("imagenet", ["--train={b}/garbage.tar.gz"],
     ["--train=", "not a tar archive"], 1),
    ("folder", ["--source={b}/loose"], ["readme.txt"], 1),
    ("folder", ["--source={b}/none"], ["--source=", "does not exist"], 2),
    ("folder", ["--source={b}/loose", "--val_fraction=1.5"],
     ["--val_fraction", "got 1.5"], 2),
    ("folder", ["--source={b}/loose", "--workers=0"], ["--workers"], 2),
    ("folder", ["--source={b}/loose", "stray"],
     ["unexpected arguments: stray (every input is a --flag"], 2),
    ("verify", ["--data_dir={b}/none"], ["--data_dir=", "does not exist"], 2),
    ("verify", ["--data_dir={b}/not_json"], ["manifest.json", "JSON"], 1),
]


@pytest.mark.parametrize("tool,args,needles,code", _BAD_INPUTS,
                         ids=[" ".join([t] + a).replace("{b}/", "")
                              for t, a, _, _ in _BAD_INPUTS])
def test_data_prep_bad_inputs_are_one_line_errors(bad_sources, tmp_path,
                                                  faults, tool, args,
                                                  needles, code):
  args = [a.format(b=bad_sources) for a in args]
  if tool != "verify":
    args.append(f"--output_dir={tmp_path / 'out'}")
  with faults.inject(f"data_prep.{tool} {' '.join(args)}"):
    proc = dp.run_cli(tool, *args)
    _one_line_error(proc, f"data_prep.{tool}", *needles, code=code)
    assert not os.path.exists(tmp_path / "out" / "manifest.json")

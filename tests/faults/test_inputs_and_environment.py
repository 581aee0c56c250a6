"""Fault injection: the environment, damaged records, and files removed while
a tool runs.

* A malformed TF_CONFIG or JOB_COMPLETION_INDEX: the trainer and evaluate
  stop with one line naming the variable and what it must be, while flags
  are checked (before TensorFlow is imported).
* Well-framed TFRecords whose content is wrong (an image that does not
  decode, a short RAW image, a record that is not an Example, a label
  outside the manifest's classes, a manifest whose num_classes or
  label_base lies): train and evaluate stop with one line naming the shard
  and the record.
* An evaluation shard deleted during training: one line naming it, after
  the run's state is checkpointed; a rerun with the shard back resumes.
* The model directory, or its model_config.json, deleted during training:
  the run never ends "done" without a model_config.json (the file is
  written again; a deleted directory stops the run with one line).
* A data_prep conversion into a folder holding another data_prep dataset:
  refused without --overwrite, naming what would be replaced; with it, the
  replaced dataset is named.
"""

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import types

import numpy as np
from PIL import Image
import pytest

from tests import data_prep_fixtures as dp
from tests import train_fixtures as fx

TINY = fx.TINY_MODEL + ["--nobottleneck"]


def _one_line_error(proc, prog, *needles, code=1):
  """The single '<prog>: error: ...' line a user-fixable failure ends with;
  exit ``code``: 2 for a usage error (the command line or the environment
  it was given), 1 for a failure while working."""
  assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines()
           if line.startswith(f"{prog}: error:")]
  assert len(lines) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


# ---------------------------------------------------------------------------
# The cluster environment.


def _run_without_tensorflow(no_tensorflow, module, args, **env):
  full = fx.cli_env(**env)
  full["PYTHONPATH"] = os.pathsep.join([no_tensorflow, fx.REPO])
  return subprocess.run([sys.executable, "-m", module, *args], cwd=fx.REPO,
                        env=full, capture_output=True, text=True,
                        timeout=120, check=False)


_WORKERS = ["localhost:2222", "localhost:2223"]
_BAD_TF_CONFIGS = [
    ("not JSON", "{cluster: workers}", ["not valid JSON", "expected an object"]),
    ("a list", json.dumps(_WORKERS), ["must be a JSON object", "got a list"]),
    ("a number as worker address",
     json.dumps({"cluster": {"worker": [2222, "localhost:2223"]},
                 "task": {"type": "worker", "index": 0}}),
     ["cluster['worker'][0]", '"host:port"', "got the number 2222"]),
    ("an address without port",
     json.dumps({"cluster": {"worker": ["localhost", "localhost:2223"]},
                 "task": {"type": "worker", "index": 0}}),
     ["cluster['worker'][0]", '"host:port"', "'localhost'"]),
    ("task index out of range",
     json.dumps({"cluster": {"worker": _WORKERS},
                 "task": {"type": "worker", "index": 2}}),
     ["task index", "2 'worker' task(s)", "0..1", "got the number 2"]),
    ("task index a string",
     json.dumps({"cluster": {"worker": _WORKERS},
                 "task": {"type": "worker", "index": "1"}}),
     ["task index", "0..1", "got the string '1'"]),
    ("no task", json.dumps({"cluster": {"worker": _WORKERS}}),
     ['no "task"', '"type": "worker", "index": I']),
    ("task type not in the cluster",
     json.dumps({"cluster": {"worker": _WORKERS},
                 "task": {"type": "chief", "index": 0}}),
     ["task type", "'worker'", "got the string 'chief'"]),
    ("a parameter-server job",
     json.dumps({"cluster": {"worker": _WORKERS, "ps": ["localhost:2224"]},
                 "task": {"type": "worker", "index": 0}}),
     ["job 'ps'", '"chief"', '"worker"']),
]


@pytest.mark.parametrize("case,value,needles", _BAD_TF_CONFIGS,
                         ids=[c[0] for c in _BAD_TF_CONFIGS])
def test_malformed_tf_config_is_one_line_before_tensorflow(
    faults, no_tensorflow, tmp_path, case, value, needles):
  model_dir = tmp_path / "model"
  with faults.inject(f"TF_CONFIG {case}: train"):
    proc = _run_without_tensorflow(
        no_tensorflow, "pyramidnet_tf.train",
        ["--dataset=synthetic", f"--model_dir={model_dir}"], TF_CONFIG=value)
    line = _one_line_error(proc, "pyramidnet_tf.train", "TF_CONFIG",
                           *needles, code=2)
    assert not model_dir.exists(), line
  with faults.inject(f"TF_CONFIG {case}: evaluate"):
    proc = _run_without_tensorflow(
        no_tensorflow, "pyramidnet_tf.evaluate",
        [f"--model_dir={model_dir}", f"--data_dir={tmp_path}"],
        TF_CONFIG=value)
    # Reported with the other problems of that command line (its model and
    # data dirs do not exist): one indented line among them.
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line.strip() for line in proc.stderr.splitlines()
             if line.strip().startswith("TF_CONFIG")]
    assert len(lines) == 1, proc.stderr[-3000:]
    for needle in needles:
      assert needle in lines[0], lines[0]


@pytest.mark.parametrize("index", ["\u0661", "\u00b2", "1x", "-1"],
                         ids=["arabic-indic one", "superscript two",
                              "trailing letter", "negative"])
def test_invalid_job_completion_index_is_one_line_before_tensorflow(
    faults, no_tensorflow, tmp_path, index):
  """'١' (an Arabic-Indic one) passes str.isdigit() and int() reads it as 1,
  '²' passes isdigit() but int() refuses it: neither is a Kubernetes
  completion index."""
  from pyramidnet_tf.runtime import cluster_env  # pylint: disable=g-import-not-at-top
  with faults.inject(f"JOB_COMPLETION_INDEX={index!r}: train"):
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX must be a "
                       "completion index"):
      cluster_env.k8s_indexed_tf_config(
          2, 2222, "workers", "job", environ={"JOB_COMPLETION_INDEX": index},
          hostname="job-1")
    proc = _run_without_tensorflow(
        no_tensorflow, "pyramidnet_tf.train",
        ["--dataset=synthetic", "--cluster_resolver=k8s_indexed",
         "--k8s_num_workers=2", "--k8s_service=workers",
         "--k8s_job_name=job", f"--model_dir={tmp_path / 'model'}"],
        JOB_COMPLETION_INDEX=index)
    _one_line_error(proc, "pyramidnet_tf.train",
                    "JOB_COMPLETION_INDEX must be a completion index",
                    "ASCII digits", repr(index), code=2)


# ---------------------------------------------------------------------------
# Intact records with wrong content.


def _parallel(calls, workers=2):
  """Runs ``fx.run_cli(*args)`` for each args at once."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
    return list(pool.map(lambda args: fx.run_cli(*args), calls))


@pytest.fixture(scope="module")
def record_data(tmp_path_factory):
  """Undamaged data (4 classes, 16x16, 2 shards per split; RAW and JPEG
  copies) and a model trained one step on it."""
  root = tmp_path_factory.mktemp("records")
  data = {encoding: fx.write_dataset(
      str(root / encoding), num_classes=4, train_per_class=4,
      eval_per_class=2, size=16, encoding=encoding, shards=2)
          for encoding in ("raw", "jpeg")}
  model_dir = str(root / "model")
  proc = fx.run_cli("pyramidnet_tf.train", TINY + [
      f"--data_dir={data['raw']}", f"--model_dir={model_dir}",
      "--batch_size=8", "--train_steps=1", "--noeval_at_end"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return data, model_dir


def _rewrite_record(path, index, change):
  """Rewrites record ``index`` of a TFRecord file with valid framing and
  checksums: ``change(features)`` edits its tf.train.Example in place, or
  returns bytes that replace the whole record."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
  example = tf.train.Example.FromString(records[index])
  replaced = change(example.features.feature)
  records[index] = (replaced if replaced is not None
                    else example.SerializeToString())
  with tf.io.TFRecordWriter(path) as writer:
    for record in records:
      writer.write(record)


def _set_bytes(name, make):
  def change(feature):
    value = feature[name].bytes_list.value
    value[0] = make(value[0])
  return change


def _set_label(label):
  def change(feature):
    feature["image/class/label"].int64_list.value[0] = label
  return change


def _set_manifest(data_dir, **fields):
  path = os.path.join(data_dir, "manifest.json")
  with open(path) as f:
    manifest = json.load(f)
  manifest.update(fields)
  if "num_classes" in fields:
    manifest["class_names"] = manifest["class_names"][:fields["num_classes"]]
  with open(path, "w") as f:
    json.dump(manifest, f)


_RECORD = 2   # the damaged record of shard 1 of its split
_BAD_RECORDS = {
    "undecodable JPEG": ("jpeg", _set_bytes("image/encoded",
                                            lambda _: b"not an image"),
                         ["cannot be read as an image record",
                          "Unknown image file format"]),
    "truncated JPEG": ("jpeg", _set_bytes("image/encoded",
                                          lambda data: data[:len(data) // 2]),
                       ["cannot be read as an image record",
                        "Invalid JPEG data"]),
    "short RAW image": ("raw", _set_bytes("image/encoded",
                                          lambda data: data[:100]),
                        ["RAW image of 100 bytes",
                         "16 x 16 x 3 = 768"]),
    "record not an Example": ("raw", lambda _: b"\x00\x01garbage" * 20,
                              ["cannot be read as an image record",
                               "not a serialized tf.train.Example"]),
    "label out of range": ("raw", _set_label(7),
                           ["has label 7", "outside the 4 classes",
                            "labels 0..3"]),
}
_TRAIN_CASES = ["undecodable JPEG", "short RAW image", "record not an Example",
                "label out of range"]
_EVAL_CASES = ["truncated JPEG", "short RAW image", "label out of range"]


def _damaged_copy(record_data, tmp_path, case, split):
  data, _ = record_data
  encoding, change, needles = _BAD_RECORDS[case]
  target = str(tmp_path / f"{case.replace(' ', '_')}_{split}")
  shutil.copytree(data[encoding], target)
  shard = os.path.join(target, f"{split}-00001-of-00002.tfrecord")
  _rewrite_record(shard, _RECORD, change)
  return target, [f"{shard}: record {_RECORD} ", "data_prep.verify", *needles]


def _train_args(data_dir, model_dir):
  # 16 records, batch 8: the first epoch reads every record in 2 steps.
  return TINY + [f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                 "--batch_size=8", "--train_steps=4", "--eval_every_epochs=0",
                 "--noeval_at_end"]


def test_wrong_records_stop_train_naming_shard_and_record(
    record_data, tmp_path, faults):
  runs = []
  for case in _TRAIN_CASES:
    data_dir, needles = _damaged_copy(record_data, tmp_path, case, "train")
    runs.append((f"{case} in a train shard: train", data_dir, needles))
  # A manifest that lies about the labels of undamaged shards.
  data_dir = str(tmp_path / "num_classes")
  shutil.copytree(record_data[0]["raw"], data_dir)
  _set_manifest(data_dir, num_classes=3)
  runs.append(("manifest with num_classes 3 for labels 0..3: train",
               data_dir, [os.path.join(data_dir, "train-"), " record ",
                          os.path.join(data_dir, "manifest.json"),
                          "has label 3", "outside the 3 classes",
                          "num_classes 3"]))
  procs = _parallel([("pyramidnet_tf.train", _train_args(
      data_dir, str(tmp_path / f"model_{i}")))
                     for i, (_, data_dir, _) in enumerate(runs)])
  for (name, _, needles), proc in zip(runs, procs):
    with faults.inject(name):
      _one_line_error(proc, "pyramidnet_tf.train", *needles)


def test_wrong_records_stop_evaluate_naming_shard_and_record(
    record_data, tmp_path, faults):
  _, model_dir = record_data
  runs = []
  for case in _EVAL_CASES:
    data_dir, needles = _damaged_copy(record_data, tmp_path, case, "test")
    runs.append((f"{case} in an eval shard: evaluate", data_dir, needles))
  data_dir = str(tmp_path / "label_base")
  shutil.copytree(record_data[0]["raw"], data_dir)
  _set_manifest(data_dir, label_base=1)
  runs.append(("manifest with label_base 1 for labels 0..3: evaluate",
               data_dir, [os.path.join(data_dir, "test-"), " record ",
                          "has label 0", "labels 1..4", "label_base 1"]))
  procs = _parallel([("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}"])
                     for _, data_dir, _ in runs])
  for (name, _, needles), proc in zip(runs, procs):
    with faults.inject(name):
      _one_line_error(proc, "pyramidnet_tf.evaluate", *needles)


# ---------------------------------------------------------------------------
# Files deleted while the trainer runs.


class _Trainer:
  """A trainer process in the background, its output in a log file."""

  def __init__(self, args, log_path):
    self.log_path = log_path
    with open(log_path, "w") as log:
      self.proc = subprocess.Popen(
          [sys.executable, "-m", "pyramidnet_tf.train", *args], cwd=fx.REPO,
          env=fx.cli_env(), stdout=log, stderr=subprocess.STDOUT)

  def log(self) -> str:
    with open(self.log_path) as f:
      return f.read()

  def wait_until(self, condition, timeout=900):
    """Polls ``condition()`` while the trainer runs (a hang guard only)."""
    deadline = time.monotonic() + timeout
    while not condition():
      assert self.proc.poll() is None, self.log()[-3000:]
      assert time.monotonic() < deadline, self.log()[-3000:]
      time.sleep(0.02)

  def finish(self, timeout=900):
    """(exit status, log) once the trainer ends."""
    try:
      self.proc.wait(timeout=timeout)
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait()
    return types.SimpleNamespace(returncode=self.proc.returncode,
                                 stderr=self.log())


def _steps_logged(log: str):
  return [int(line.split()[1].split("/")[0]) for line in log.splitlines()
          if line.startswith("step ")]


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
  """16 train records (2 steps of 8 per epoch), 8 test records, 2 shards."""
  return fx.write_dataset(str(tmp_path_factory.mktemp("small") / "data"),
                          num_classes=4, train_per_class=4, eval_per_class=2,
                          size=16, shards=2)


def _run_args(data_dir, model_dir, *extra):
  return TINY + [f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                 "--batch_size=8", "--train_steps=16", "--steps_per_loop=2",
                 "--log_every_steps=2", "--deterministic", "--seed=3",
                 *extra]


def test_eval_shard_deleted_during_training_is_named_after_saving_state(
    small_data, tmp_path, faults):
  """Evaluation every epoch (2 steps), checkpoints every 8 steps: the shard
  goes after the first evaluation, the next one stops the run at a step
  that was not checkpointed yet; the state of that step is saved, and with
  the shard back the same command resumes there and finishes."""
  data_dir = str(tmp_path / "data")
  shutil.copytree(small_data, data_dir)
  model_dir = str(tmp_path / "model")
  args = _run_args(data_dir, model_dir, "--checkpoint_every_steps=8",
                   "--eval_every_epochs=1")
  shard = os.path.join(data_dir, "test-00001-of-00002.tfrecord")
  aside = str(tmp_path / "aside.tfrecord")
  with faults.inject("eval shard deleted during training: train") as fault:
    trainer = _Trainer(args, tmp_path / "train.log")
    trainer.wait_until(lambda: "eval at step 2 " in trainer.log())
    os.rename(shard, aside)
    proc = trainer.finish()
    line = _one_line_error(proc, "pyramidnet_tf.train", shard,
                           "split 'test' is gone", "put it back",
                           "saved the run's state at step ")
    step = int(line.split("saved the run's state at step ")[1].split()[0])
    assert f"in {model_dir}/ckpt-{step} " in line, line
    assert "done:" not in proc.stderr
    # Every step trained is in the checkpoint.
    fault.lost = max(_steps_logged(proc.stderr)) - step
    assert fault.lost == 0, proc.stderr[-3000:]
    assert step % 8, line  # a step the run would not have checkpointed
  with faults.inject("eval shard put back: the same command resumes"):
    os.rename(aside, shard)
    proc = fx.run_cli("pyramidnet_tf.train", args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {model_dir}/ckpt-{step} at step {step}" in (
        proc.stderr), proc.stderr[-3000:]
    assert fx.train_result(proc.stderr)["step"] == 16


def test_model_dir_or_its_config_deleted_during_training(
    small_data, tmp_path, faults):
  """Checkpoints every 4 steps of 24; once ckpt-4 is written: the configs
  deleted (the run writes them again and finishes), the directory deleted,
  or moved away (the run stops at its next save with one line, writing
  nothing there)."""
  cases = ("configs deleted", "directory deleted", "directory moved")
  trainers, model_dirs = {}, {}
  for case in cases:
    model_dirs[case] = str(tmp_path / case.replace(" ", "_"))
    trainers[case] = _Trainer(
        _run_args(small_data, model_dirs[case], "--train_steps=24",
                  "--checkpoint_every_steps=4", "--eval_every_epochs=0",
                  "--noeval_at_end"),
        tmp_path / f"{case.replace(' ', '_')}.log")
  configs = ("model_config.json", "train_config.json")
  written = {}

  def inject(case):
    model_dir = model_dirs[case]
    if not all(os.path.exists(os.path.join(model_dir, name))
               for name in ("ckpt-4.index", *configs)):
      return False
    if case == "configs deleted":
      for name in configs:
        with open(os.path.join(model_dir, name), "rb") as f:
          written[name] = f.read()
        os.remove(os.path.join(model_dir, name))
    elif case == "directory deleted":
      while os.path.exists(model_dir):  # a save may be adding files
        shutil.rmtree(model_dir, ignore_errors=True)
    else:
      os.rename(model_dir, model_dir + "_moved")
    return True
  pending = list(cases)
  deadline = time.monotonic() + 900   # a hang guard only
  while pending:
    for case in list(pending):
      if inject(case):
        # Still running, so the fault came in the middle of the run.
        assert trainers[case].proc.poll() is None, trainers[case].log()
        pending.remove(case)
    for case in pending:
      assert trainers[case].proc.poll() is None, trainers[case].log()[-3000:]
    assert time.monotonic() < deadline
    time.sleep(0.02)
  results = {case: trainers[case].finish() for case in cases}

  with faults.inject("model_config.json and train_config.json deleted "
                     "during training: train") as fault:
    proc = results["configs deleted"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines()
                if "deleted from" in line]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert ("model_config.json and train_config.json deleted from "
            f"{model_dirs['configs deleted']} during the run: writing them "
            "again") in warnings[0]
    for name, data in written.items():
      path = os.path.join(model_dirs["configs deleted"], name)
      fault.lost += not os.path.exists(path)
      with open(path, "rb") as f:
        assert json.loads(f.read()) == json.loads(data), name
    assert fx.train_result(proc.stderr)["step"] == 24
  for case in ("directory deleted", "directory moved"):
    with faults.inject(f"model dir {case.split()[1]} during training: train"):
      proc = results[case]
      model_dir = model_dirs[case]
      _one_line_error(proc, "pyramidnet_tf.train", f"--model_dir={model_dir} "
                      "was deleted, moved or replaced during the run",
                      f"{model_dir}/.lock", "stopped at step ")
      assert "done:" not in proc.stderr and "result: {" not in proc.stderr
  # Moved away, it still holds its checkpoints, and nothing was written at
  # its old path.
  assert not os.path.exists(model_dirs["directory moved"])
  assert os.path.exists(os.path.join(model_dirs["directory moved"] + "_moved",
                                     "ckpt-4.index"))


# ---------------------------------------------------------------------------
# data_prep into a folder holding another dataset.


def _image_folder(root, classes=3, per_class=4, seed=0):
  rng = np.random.default_rng(seed)
  for label in range(classes):
    folder = root / f"class_{label}"
    folder.mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(fx.class_image(label, classes, 16, rng)).save(
          folder / f"{i}.jpg", quality=95)
  return str(root)


def _folder(source, out, *extra):
  return dp.run_cli("folder", f"--source={source}", f"--output_dir={out}",
                    "--workers=1", *extra, timeout=300)


def test_conversion_into_another_dataset_is_refused_without_overwrite(
    tmp_path, faults):
  pets = _image_folder(tmp_path / "pets", seed=1)
  birds = _image_folder(tmp_path / "birds", seed=2)
  out = tmp_path / "out"
  proc = _folder(pets, out, "--val_fraction=0.25")
  assert proc.returncode == 0, proc.stderr[-3000:]
  earlier = fx.tree_bytes(str(out))
  held = ("data_prep.folder's dataset 'pets' (train: 9 images in 1 shard; "
          "validation: 3 images in 1 shard)")

  arrays = dp.cifar_arrays("cifar10", per_batch=2, test=2, seed=3)
  cifar = dp.write_tar(str(tmp_path / "cifar-10-binary.tar.gz"),
                       dp.cifar_files("cifar10", arrays, "binary"), "w:gz")
  refused = [
      ("another folder dataset", "folder",
       lambda: _folder(birds, out, "--val_fraction=0"),
       ["this run writes data_prep.folder's dataset 'birds'",
        "split 'validation'"]),
      ("the same dataset without its validation split", "folder",
       lambda: _folder(pets, out, "--val_fraction=0"),
       ["split 'validation'", "does not write"]),
      ("a CIFAR-10 conversion", "cifar",
       lambda: dp.run_cli("cifar", "--dataset=cifar10", f"--source={cifar}",
                          "--train_shards=2", "--test_shards=1",
                          f"--output_dir={out}", timeout=300),
       ["this run writes data_prep.cifar's dataset 'cifar10'"]),
  ]
  for case, tool, run, needles in refused:
    with faults.inject(f"data_prep.{tool} into a folder holding another "
                       f"dataset ({case})") as fault:
      proc = run()
      after = fx.tree_bytes(str(out))
      fault.lost = sum(after.get(name) != data
                       for name, data in earlier.items())
      _one_line_error(proc, f"data_prep.{tool}", f"--output_dir={out}",
                      held, "--overwrite", *needles)
      assert after == earlier  # nothing replaced, nothing added

  with faults.inject("data_prep.folder --overwrite into a folder holding "
                     "another dataset"):
    proc = _folder(birds, out, "--val_fraction=0", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"--overwrite: replacing {held} in {out}" in proc.stderr, (
        proc.stderr[-3000:])
    with open(out / "manifest.json") as f:
      manifest = json.load(f)
    assert manifest["dataset"] == "birds"
    assert sorted(manifest["splits"]) == ["train"]
    assert sorted(os.listdir(out)) == ["manifest.json",
                                       "train-00000-of-00001.tfrecord"]
  # Rerunning the same conversion needs no --overwrite: the shard is kept.
  proc = _folder(birds, out, "--val_fraction=0")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "1 kept from an earlier run" in proc.stdout + proc.stderr

"""End-to-end tests of ``python -m pyramidnet_tf.train`` (tiny nets, CPU)."""

import csv
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import evaluator as evaluator_lib
from tests import train_fixtures as fx

TRAIN = "pyramidnet_tf.train"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=24,
                          eval_per_class=8, size=16, shards=2)


def _args(data_dir, model_dir, *extra):
  return fx.TINY_MODEL + [f"--data_dir={data_dir}", f"--model_dir={model_dir}",
                          "--batch_size=16", "--lr=0.05",
                          "--log_every_steps=3", "--steps_per_loop=3"
                          ] + list(extra)


_NO_KERAS_WRAPPER = r"""
import atexit, sys
def report():
  bad = sorted(m for m in sys.modules if m.split(".")[0] in ("keras", "tf_keras"))
  sys.stderr.write("KERAS_MODULES=" + ",".join(bad) + "\n")
atexit.register(report)
from pyramidnet_tf import train
sys.argv = ["train"] + sys.argv[1:]
train.run()
"""


def test_learns_writes_summaries_and_imports_no_keras(data_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  proc = subprocess.run(
      [sys.executable, "-c", _NO_KERAS_WRAPPER] + _args(
          data_dir, model_dir, "--epochs=5", "--lr_schedule=cosine",
          "--eval_every_epochs=5", "--histogram_every_steps=12"),
      cwd=fx.REPO, env=fx.cli_env(), capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "KERAS_MODULES=\n" in proc.stderr
  result = fx.train_result(proc.stderr)
  assert result["step"] == 5 * 96 // 16
  # 4 classes: chance is 75 % error.
  assert result["eval"]["examples"] == 32
  assert result["eval"]["top1_error"] < 30.0, result
  assert os.path.exists(os.path.join(model_dir, "model_config.json"))
  assert tf.train.latest_checkpoint(model_dir).endswith("ckpt-30")

  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  def tags_of(run):
    acc = event_accumulator.EventAccumulator(
        os.path.join(model_dir, "tensorboard", run), size_guidance={
        event_accumulator.TENSORS: 0, event_accumulator.IMAGES: 0})
    acc.Reload()
    return acc, set(acc.Tags()["tensors"]) | set(acc.Tags()["images"])
  acc, tags = tags_of("train")
  for tag in ("metrics/loss", "metrics/top1_error", "metrics/top5_error",
              "schedule/learning_rate", "speed/examples_per_sec",
              "speed/step_time", "training_images/augmented"):
    assert tag in tags, sorted(tags)
  assert any(t.startswith("weights/") for t in tags)
  assert any(t.startswith("batch_norm/") for t in tags)
  assert {"metrics/loss", "metrics/top1_error",
          "metrics/top5_error"} <= tags_of("eval")[1]
  assert "flags" in tags_of("")[1]
  lr = [tf.make_ndarray(e.tensor_proto) for e in
        acc.Tensors("schedule/learning_rate")]
  assert lr[0] > lr[-1]  # cosine decays


def _final_checkpoint(model_dir):
  return fx.checkpoint_values(tf.train.latest_checkpoint(model_dir))


def test_resume_equals_an_uninterrupted_run(data_dir, tmp_path):
  common = ["--deterministic", "--checkpoint_every_steps=4", "--seed=5",
            "--eval_every_epochs=0", "--noeval_at_end"]
  straight = str(tmp_path / "straight")
  proc = fx.run_cli(TRAIN, _args(data_dir, straight, "--train_steps=8",
                                 *common))
  assert proc.returncode == 0, proc.stderr[-3000:]
  split = str(tmp_path / "split")
  proc = fx.run_cli(TRAIN, _args(data_dir, split, "--train_steps=4", *common))
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = fx.run_cli(TRAIN, _args(data_dir, split, "--train_steps=8", *common))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "at step 4" in proc.stderr
  a, b = _final_checkpoint(straight), _final_checkpoint(split)
  assert sorted(a) == sorted(b)
  assert any("global_step" in name for name in a)
  assert any(name.startswith("optimizer/slots") for name in a)
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_resume_with_another_model_is_an_error_naming_it(data_dir, tmp_path):
  model_dir = str(tmp_path / "m")
  proc = fx.run_cli(TRAIN, _args(data_dir, model_dir, "--train_steps=1",
                                 "--noeval_at_end"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  args = _args(data_dir, model_dir, "--train_steps=2")
  args[args.index("--alpha=4")] = "--alpha=6"
  proc = fx.run_cli(TRAIN, args)
  assert proc.returncode != 0
  assert "alpha: 4.0 in" in proc.stderr and "6.0 from the flags" in (
      proc.stderr), proc.stderr[-2000:]


def test_nan_loss_stops_with_the_step_and_saves_no_nan(data_dir, tmp_path):
  model_dir = str(tmp_path / "m")
  proc = fx.run_cli(TRAIN, _args(data_dir, model_dir, "--train_steps=50",
                                 "--lr=1e12", "--steps_per_loop=1",
                                 "--checkpoint_every_steps=1",
                                 "--eval_every_epochs=0"))
  assert proc.returncode != 0
  assert "NaN/Inf at global step" in proc.stderr, proc.stderr[-3000:]
  step = int(proc.stderr.split("NaN/Inf at global step ")[1].split()[0])
  paths = glob.glob(os.path.join(model_dir, "ckpt-*.index"))
  assert paths
  for path in paths:
    values = fx.checkpoint_values(path[:-len(".index")])
    assert int(path.split("ckpt-")[1].split(".")[0]) <= step
    for name, value in values.items():
      if np.issubdtype(np.asarray(value).dtype, np.floating):
        assert np.isfinite(value).all(), (path, name)


def test_missing_data_dir_says_how_to_make_data(tmp_path):
  proc = fx.run_cli(TRAIN, fx.TINY_MODEL + [f"--model_dir={tmp_path}"])
  assert proc.returncode != 0
  assert "--data_dir is required" in proc.stderr
  assert "data_prep.cifar" in proc.stderr


def test_bad_batch_for_replicas_is_an_error(data_dir, tmp_path):
  proc = fx.run_cli(TRAIN, _args(data_dir, str(tmp_path), "--batch_size=15",
                                 "--cpu_devices=2", "--train_steps=1"))
  assert proc.returncode != 0
  assert "--batch_size=15 must be a multiple of the 2 replicas" in proc.stderr


def test_eval_batch_is_rounded_up_to_the_replicas_as_evaluate_does(
    data_dir, tmp_path):
  """One eval-batch rule: the trainer rounds --eval_batch_size up to a
  multiple of the replicas, as evaluate does, with the same log line (it
  used to refuse what evaluate accepts), and both count every example."""
  model_dir = str(tmp_path / "model")
  proc = fx.run_cli(TRAIN, _args(data_dir, model_dir, "--cpu_devices=2",
                                 "--eval_batch_size=5", "--train_steps=1"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = evaluator_lib.rounded_batch_text(5, 6, 2)
  assert line in proc.stderr
  assert fx.train_result(proc.stderr)["eval"]["examples"] == 32
  proc = fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}",
      "--cpu_devices=2", "--eval_batch_size=5"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert line in proc.stderr
  assert "global batch 6, 2 replica(s)" in proc.stderr
  assert json.loads(proc.stdout)["examples"] == 32


def test_jit_with_sync_bn_on_replicas_is_a_clear_error(tmp_path):
  proc = fx.run_cli(TRAIN, [
      "--dataset=synthetic", "--depth=8", "--alpha=4", "--image_size=16",
      f"--model_dir={tmp_path}", "--batch_size=8", "--train_steps=1",
      "--cpu_devices=2", "--sync_bn", "--jit_compile"])
  assert proc.returncode != 0
  assert "--jit_compile cannot be combined with --sync_bn" in proc.stderr


def test_synthetic_data_mirrored_sync_bn_bfloat16(tmp_path):
  proc = fx.run_cli(TRAIN, [
      "--dataset=synthetic", "--synthetic_like=cifar100", "--depth=8",
      "--alpha=4", "--image_size=16", f"--model_dir={tmp_path}",
      "--batch_size=8", "--train_steps=4", "--cpu_devices=2", "--sync_bn",
      "--dtype=bfloat16", "--log_every_steps=2", "--profile_steps=1,3"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "2 replicas" in proc.stderr
  traces = glob.glob(os.path.join(str(tmp_path), "tensorboard", "train",
                                  "plugins", "profile",
                                  "**", "*.xplane.pb"),
                     recursive=True)
  assert traces, os.listdir(str(tmp_path))
  result = fx.train_result(proc.stderr)
  assert result["step"] == 4 and result["eval"] is None
  assert np.isfinite(result["train"]["loss"])


def test_trains_on_a_folder_converted_by_data_prep(tmp_path):
  """data_prep.folder output (JPEG, 'validation' split, arbitrary size and
  class count) -> train with the manifest's class count -> evaluate."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  source = tmp_path / "pets"
  rng = np.random.default_rng(0)
  for label, name in enumerate(["cat", "dog", "emu"]):
    (source / name).mkdir(parents=True)
    for i in range(10):
      Image.fromarray(fx.class_image(label, 3, 20, rng)).save(
          source / name / f"{i}.png")
  out = str(tmp_path / "prepared")
  proc = fx.run_cli("data_prep.folder", [f"--source={source}",
                                         f"--output_dir={out}",
                                         "--val_fraction=0.2", "--workers=1"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  model_dir = str(tmp_path / "model")
  proc = fx.run_cli(TRAIN, [
      "--depth=8", "--alpha=4", "--image_size=16", f"--data_dir={out}",
      f"--model_dir={model_dir}", "--batch_size=8", "--train_steps=3",
      "--log_every_steps=3"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = fx.train_result(proc.stderr)
  assert result["eval"]["split"] == "validation"
  assert result["eval"]["examples"] == 6
  proc = fx.run_cli("pyramidnet_tf.evaluate", [f"--model_dir={model_dir}",
                                               f"--data_dir={out}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  import json  # pylint: disable=g-import-not-at-top
  assert json.loads(proc.stdout)["examples"] == 6
  config = json.load(open(os.path.join(model_dir, "model_config.json")))
  assert config["model"]["num_classes"] == 3
  assert config["metadata"]["class_names"] == ["cat", "dog", "emu"]
  assert config["metadata"]["preprocessing"]["kind"] == "imagenet"


def test_float16_from_the_command_line_scales_the_loss(data_dir, tmp_path):
  """--dtype=float16: dynamic loss scaling is created, checkpointed, used."""
  model_dir = str(tmp_path / "m")
  proc = fx.run_cli(TRAIN, _args(data_dir, model_dir, "--dtype=float16",
                                 "--train_steps=6", "--noeval_at_end"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = fx.train_result(proc.stderr)
  assert result["step"] == 6 and np.isfinite(result["train"]["loss"])
  values = fx.checkpoint_values(tf.train.latest_checkpoint(model_dir))
  scales = [v for k, v in values.items() if k.startswith("loss_scale/")]
  assert scales, sorted(values)[:30]
  # Variables stay float32 whatever the compute dtype.
  assert all(np.asarray(v).dtype != np.float16 for v in values.values())


def test_epochs_are_recorded_the_best_is_kept_and_a_rerun_does_not_redo(
    data_dir, tmp_path):
  model_dir = tmp_path / "m"
  args = _args(data_dir, str(model_dir), "--epochs=3", "--lr=0.5")
  proc = fx.run_cli(TRAIN, args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stderr.splitlines()
  # Parameters and MACs in the plan line; a line per epoch.
  assert "4 classes, 19.1k parameters, 1.91M MACs at 16 px): 18 steps" in (
      lines[0]), lines[0]
  epochs = [l for l in lines if l.startswith("epoch ")]
  assert [l.split(" in ")[0] for l in epochs] == [
      "epoch 1/3", "epoch 2/3", "epoch 3/3"], epochs
  assert all("; eval loss " in l for l in epochs), epochs
  rows = list(csv.DictReader(open(model_dir / "metrics.csv")))
  assert [r["step"] for r in rows] == ["6", "12", "18"]
  evals = [float(r["eval_top1_error"]) for r in rows]
  # The best evaluation's checkpoint, outside rotation, named in the summary.
  record = json.load(open(model_dir / "best" / "best.json"))
  best_step = 6 * (1 + evals.index(min(evals)))
  assert record["step"] == best_step and record["top1_error"] == min(evals)
  assert (model_dir / "best" / f"ckpt-{best_step}.index").exists()
  assert any(l.startswith(f"  best eval (step {best_step}): top-1 error ") and
             l.endswith(f"kept in {model_dir}/best/ckpt-{best_step} "
                        "(--checkpoint=best)") for l in lines), lines[-8:]
  assert re.search(r"^done: step 18/18 in \d:\d\d:\d\d \(18 steps, first step "
                   r"[\d.]+ s, [\d,.]+ img/s training\)$", proc.stderr,
                   re.M), lines[-8:]
  # The tools open it by name and score what the record says.
  scored = fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}",
      "--checkpoint=best"])
  assert scored.returncode == 0, scored.stderr[-3000:]
  evaluated = json.loads(scored.stdout)
  assert evaluated["checkpoint"] == f"{model_dir}/best/ckpt-{best_step}"
  assert evaluated["top1_error"] == record["top1_error"]
  first = fx.train_result(proc.stderr)
  # Run again: finished, nothing trained or evaluated again.
  again = fx.run_cli(TRAIN, args)
  assert again.returncode == 0, again.stderr[-3000:]
  assert ("already finished at step 18/18; its final evaluation is on record "
          "in metrics.csv") in again.stderr
  assert "eval at step" not in again.stderr
  result = fx.train_result(again.stderr)
  assert result["eval"]["top1_error"] == first["eval"]["top1_error"]
  assert len(list(csv.DictReader(open(model_dir / "metrics.csv")))) == 3


def test_a_run_refused_after_tensorflow_starts_leaves_no_model_dir(
    data_dir, tmp_path):
  """A refusal that needs the data (here: fewer examples than one batch)
  comes after TensorFlow starts and the model dir is claimed; the claim is
  undone: a new directory goes, an existing one keeps only what it had."""
  new = tmp_path / "parent" / "m"
  proc = fx.run_cli(TRAIN, _args(data_dir, str(new), "--batch_size=1000"))
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "fewer than one --batch_size=1000" in proc.stderr
  assert not (tmp_path / "parent").exists()
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "notes.txt").write_text("mine")
  proc = fx.run_cli(TRAIN, _args(data_dir, str(existing), "--batch_size=1000"))
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert sorted(os.listdir(existing)) == ["notes.txt"]

"""Config checks on resume, the NaN/Inf guard, resuming from damaged model
dirs, and the model-dir lock."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import checkpointing
from pyramidnet_tf.model_dir import ema as ema_lib
from pyramidnet_tf.training import loss_scale as loss_scale_lib
from pyramidnet_tf.model_dir import access as model_dir_lib
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.training import optim
from tests import train_fixtures as fx


def test_config_mismatch_names_every_difference(tiny_pyramidnet, tmp_path):
  model = tiny_pyramidnet()
  model_io.write_config(str(tmp_path), model)
  checkpointing.check_config(str(tmp_path), model)  # same: fine
  other = tiny_pyramidnet(8, 6, dataset="cifar100")
  with pytest.raises(checkpointing.ConfigMismatchError) as error:
    checkpointing.check_config(str(tmp_path), other)
  text = str(error.value)
  assert "alpha: 4.0" in text and "6.0 from the flags" in text
  assert "dataset: 'cifar10'" in text and "num_classes: 10" in text


def test_save_restore_and_refuse_nan(tmp_path):
  strategy = tf.distribute.get_strategy()
  step = tf.Variable(0, dtype=tf.int64, name="global_step")
  weight = tf.Variable([1.0, 2.0])
  ckpt = tf.train.Checkpoint(weight=weight, global_step=step)
  saver = checkpointing.Checkpointer(str(tmp_path), strategy, ckpt, step,
                                     keep=2, guarded_variables=[weight])
  step.assign(3)
  assert saver.save().endswith("ckpt-3")
  weight.assign([np.nan, 0.0])
  step.assign(4)
  with pytest.raises(checkpointing.NonFiniteWeightsError,
                     match="NaN/Inf at global step 4"):
    saver.save()
  assert saver.latest().endswith("ckpt-3")
  assert saver.restore().endswith("ckpt-3")
  assert int(step.numpy()) == 3
  np.testing.assert_array_equal(weight.numpy(), [1.0, 2.0])


@pytest.fixture
def training_checkpoint(tiny_pyramidnet):
  """Returns ``make(directory, keep=3)`` -> (Checkpointer, its objects).

  Each call builds a trainer-like checkpoint afresh: a tiny model (BN
  statistics), optimizer slots, EMA (with the BN statistics' averages), loss
  scale, global step. A fixture so that the model comes from the shared
  ``tiny_pyramidnet`` factory.
  """
  def make(directory, keep=3):
    model = tiny_pyramidnet()
    step = tf.Variable(0, dtype=tf.int64, name="global_step")
    objects = {
        "model": model, "global_step": step,
        "optimizer": optim.NesterovSGD(model.trainable_variables, 0.9, True,
                                       1e-4, name="optimizer"),
        "ema": ema_lib.Ema(ema_lib.averaged_variables(model), 0.9,
                           name="ema"),
        "loss_scale": loss_scale_lib.DynamicLossScale(name="loss_scale")}
    checkpoint = tf.train.Checkpoint(**objects)
    saver = checkpointing.Checkpointer(
        str(directory), tf.distribute.get_strategy(), checkpoint, step,
        keep=keep)
    return saver, objects
  return make


@pytest.mark.parametrize("text", ["moving_variance:", "moving_mean_ema",
                                  "loss_scale/", "kernel:"])
def test_every_float_variable_of_the_checkpoint_is_guarded(
    training_checkpoint, tmp_path, text):
  saver, objects = training_checkpoint(tmp_path)
  saver.restore()
  objects["global_step"].assign(2)
  assert saver.save().endswith("ckpt-2")
  every = [v for obj in objects.values() for v in (
      obj.variables if isinstance(obj, tf.Module) else [obj])]
  hit = [v for v in every if text in v.name and v.dtype.is_floating]
  assert hit, text
  hit[0].assign(tf.fill(tf.shape(hit[0]), np.inf))
  objects["global_step"].assign(3)
  with pytest.raises(checkpointing.NonFiniteWeightsError) as error:
    saver.save()
  assert "NaN/Inf at global step 3 in " + hit[0].name.split(":")[0] in str(
      error.value)
  assert f"last good checkpoint is {tmp_path}/ckpt-2 (step 2)" in str(
      error.value)
  assert not tf.io.gfile.glob(str(tmp_path / "ckpt-3*"))


def _saved_steps(directory):
  return sorted(int(p.split("ckpt-")[1].split(".")[0])
                for p in tf.io.gfile.glob(str(directory / "ckpt-*.index")))


@pytest.mark.parametrize("damage", ["missing latest", "missing state",
                                    "empty state", "truncated latest"])
def test_restore_takes_the_newest_intact_checkpoint_and_rotation_spares_it(
    training_checkpoint, tmp_path, damage):
  saver, objects = training_checkpoint(tmp_path)
  saver.restore()
  for step in (2, 4, 6):
    objects["global_step"].assign(step)
    saver.save()
  if damage == "missing latest":
    for path in tf.io.gfile.glob(str(tmp_path / "ckpt-6.*")):
      tf.io.gfile.remove(path)
  elif damage == "missing state":
    (tmp_path / "checkpoint").unlink()
  elif damage == "empty state":
    (tmp_path / "checkpoint").write_text("")
  else:
    data = tmp_path / "ckpt-6.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:100])
  resumed = 4 if damage in ("missing latest", "truncated latest") else 6
  saver, objects = training_checkpoint(tmp_path)
  assert saver.restore() == str(tmp_path / f"ckpt-{resumed}")
  assert int(objects["global_step"].numpy()) == resumed
  # The next saves rotate only what is older than the resumed checkpoint.
  for step in (resumed + 2, resumed + 4):
    objects["global_step"].assign(step)
    saver.save()
  assert _saved_steps(tmp_path) == [resumed, resumed + 2, resumed + 4]


def test_no_intact_checkpoint_after_a_finished_save_is_refused(
    training_checkpoint, tmp_path):
  saver, objects = training_checkpoint(tmp_path)
  saver.restore()
  objects["global_step"].assign(2)
  saver.save()
  for path in tf.io.gfile.glob(str(tmp_path / "ckpt-*")):
    tf.io.gfile.remove(path)
  saver, _ = training_checkpoint(tmp_path)
  with pytest.raises(checkpointing.NoUsableCheckpointError,
                     match="held checkpoints but has no intact one"):
    saver.restore()
  # Only an interrupted first save (no state file, no config): step 0.
  (tmp_path / "checkpoint").unlink()
  (tmp_path / "ckpt-2.index").write_bytes(b"partial")
  (tmp_path / "ckpt-2_temp").mkdir()
  saver, _ = training_checkpoint(tmp_path)
  assert saver.restore() is None
  assert not (tmp_path / "ckpt-2_temp").exists()


def test_checkpoint_of_another_model_is_a_mismatch_naming_shapes(
    tiny_pyramidnet, training_checkpoint, tmp_path):
  saver, objects = training_checkpoint(tmp_path)
  saver.restore()
  objects["global_step"].assign(1)
  saver.save()
  wider = tiny_pyramidnet(8, 6)
  step = tf.Variable(0, dtype=tf.int64)
  other = checkpointing.Checkpointer(
      str(tmp_path), tf.distribute.get_strategy(),
      tf.train.Checkpoint(model=wider, global_step=step), step)
  with pytest.raises(checkpointing.ConfigMismatchError) as error:
    other.restore()
  text = str(error.value)
  assert "model/bn_final/gamma: (20,) saved, (22,) from the flags" in text
  assert "no model_config.json" in text and "\n" not in text


def test_find_checkpoint_names_the_missing_one_and_lists_the_others(
    tiny_pyramidnet, tmp_path):
  model = tiny_pyramidnet()
  for step in (3, 7):
    model_io.save_model(model, str(tmp_path), step=step)
  assert model_io.find_checkpoint(str(tmp_path)).endswith("ckpt-7")
  assert model_io.find_checkpoint(str(tmp_path), "ckpt-3") == str(
      tmp_path / "ckpt-3")
  (tmp_path / "checkpoint").write_text("")
  assert model_io.find_checkpoint(str(tmp_path)).endswith("ckpt-7")
  with pytest.raises(FileNotFoundError) as error:
    model_io.find_checkpoint(str(tmp_path), str(tmp_path / "ckpt-5"))
  assert f"--checkpoint={tmp_path}/ckpt-5: no such checkpoint" in str(
      error.value)
  assert "has ckpt-7, ckpt-3" in str(error.value)


_HOLD_LOCK = """
import sys, time
from pyramidnet_tf.model_dir import access as model_dir
lock = model_dir.ModelDirLock(sys.argv[1])
print("locked", flush=True)
time.sleep(600)
"""


def test_model_dir_lock_names_its_holder_and_dies_with_it(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, "-c", _HOLD_LOCK, str(tmp_path)], cwd=fx.REPO,
      env=fx.cli_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(model_dir_lib.ModelDirLockedError) as error:
      model_dir_lib.ModelDirLock(str(tmp_path))
    assert f"--model_dir={tmp_path} is in use by another process (pid " \
        f"{holder.pid} on host " in str(error.value)
    holder.kill()   # SIGKILL: the kernel drops the flock
    holder.wait()
    lock = model_dir_lib.ModelDirLock(str(tmp_path))
    assert lock.held
    assert f"pid {os.getpid()} " in (tmp_path / ".lock").read_text()
    lock.release()
  finally:
    if holder.poll() is None:
      holder.kill()
      holder.wait()

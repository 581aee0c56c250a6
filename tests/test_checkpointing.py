"""Config checks on resume and the no-NaN-checkpoint guard."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf import checkpointing
from pyramidnet_tf import model as model_lib
from pyramidnet_tf import model_io


def test_config_mismatch_names_every_difference(tmp_path):
  model = model_lib.PyramidNet("cifar10", 8, 4, False)
  model_io.write_config(str(tmp_path), model)
  checkpointing.check_config(str(tmp_path), model)  # same: fine
  other = model_lib.PyramidNet("cifar100", 8, 6, False)
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

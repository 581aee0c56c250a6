"""Dynamic loss scaling: halve and skip on overflow, grow after N good steps."""

import numpy as np
import tensorflow as tf

from pyramidnet_tf.training import loss_scale


def test_halves_on_overflow_and_grows_after_interval():
  scaler = loss_scale.DynamicLossScale(initial_scale=8.0, growth_interval=3)
  scaler.update(tf.constant(False))
  assert scaler.scale.numpy() == 4.0
  assert scaler.good_steps.numpy() == 0
  for _ in range(2):
    scaler.update(tf.constant(True))
  assert scaler.scale.numpy() == 4.0
  scaler.update(tf.constant(True))
  assert scaler.scale.numpy() == 8.0
  assert scaler.good_steps.numpy() == 0


def test_never_below_one():
  scaler = loss_scale.DynamicLossScale(initial_scale=1.0)
  scaler.update(tf.constant(False))
  assert scaler.scale.numpy() == 1.0


def test_unscale_and_finite_check():
  scaler = loss_scale.DynamicLossScale(initial_scale=4.0)
  grads = scaler.unscale([tf.constant([4.0, 8.0], tf.float16)])
  np.testing.assert_array_equal(grads[0].numpy(), [1.0, 2.0])
  assert bool(scaler.all_finite(grads))
  assert not bool(scaler.all_finite([tf.constant([np.inf])]))
  assert not bool(scaler.all_finite([tf.constant([np.nan])]))

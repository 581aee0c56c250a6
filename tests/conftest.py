"""Test session set-up shared by every test file.

Two logical CPU devices let single-host tests run MirroredStrategy with two
replicas (sync BN, per-replica batches) on a CPU-only machine. This must
happen before TensorFlow initialises its devices, hence here.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pyramidnet_tf  # pylint: disable=g-import-not-at-top,wrong-import-position,unused-import  (TF without Keras)
import tensorflow as tf  # pylint: disable=g-import-not-at-top,wrong-import-position

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

"""Keras-free proof: a forward and backward pass imports no Keras at all."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROGRAM = r"""
import sys
from pyramidnet_tf import import_torch
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.model.network import PyramidNet
import tensorflow as tf

model = PyramidNet("cifar10", 20, 12, False)
images = tf.random.normal([2, 32, 32, 3])
with tf.GradientTape() as tape:
  loss = tf.reduce_mean(model(images, training=True) ** 2)
grads = tape.gradient(loss, model.trainable_variables)
assert all(g is not None for g in grads)
tf.function(lambda x: model(x, training=False))(images)
# TensorFlow's own internal helpers under tensorflow.python.keras load with
# `import tensorflow`; Keras itself (keras, tf_keras) must not, although the
# TensorFlow wheel installs it.
bad = sorted(m for m in sys.modules
             if m.split(".")[0] in ("keras", "tf_keras"))
print("KERAS_MODULES=" + ",".join(bad))
"""


def test_forward_and_backward_import_no_keras():
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run([sys.executable, "-c", _PROGRAM], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert "KERAS_MODULES=\n" in result.stdout, result.stdout


def test_the_check_would_see_keras():
  """Guards the guard: Keras is installed, importable after our import, and
  the same check would see it."""
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2")
  program = _PROGRAM.replace("bad = sorted", "import keras\nbad = sorted", 1)
  result = subprocess.run([sys.executable, "-c", program], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr
  assert "KERAS_MODULES=keras" in result.stdout

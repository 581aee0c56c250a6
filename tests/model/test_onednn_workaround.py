"""The TensorFlow behaviour ``layers.append_zero_channels`` steers around.

TensorFlow 2.21.0's oneDNN graph rewrite merges a ``Pad`` into the
convolution it feeds (``_MklNativePadWithFusedConv2D``). When a 1x1
convolution is fused with an inference batch norm whose scale, offset, mean
or variance comes from a ``Pad`` (a BN vector zero-padded to aligned
channels), the rewrite takes that ``Pad`` for the convolution's input
padding and aborts the process. The first test shows that TF still does
this (when it stops, the workaround may go); the second that the
concatenation ``layers`` uses instead runs and computes the same values.
Both run in subprocesses: the abort kills the process.

TensorFlow runs its oneDNN graph rewrites by default only on some CPUs (it
prints "oneDNN custom operations are on" when it does) and on every x86-64
CPU when TF_ENABLE_ONEDNN_OPTS=1, which these tests set: the rewrite is a
graph pass, the same whatever the instruction set. The workaround is also
checked with the rewrites off, as other CPUs run it.
"""

import subprocess
import sys

import pytest

from tests import train_fixtures as fx

_GRAPH = """
import sys
import tensorflow as tf
import pyramidnet_tf  # TF without Keras
from pyramidnet_tf.model import layers
tf.random.set_seed(0)
x = tf.random.normal([2, 8, 8, 16])
kernel = tf.random.normal([1, 1, 16, 16])
scale = tf.Variable(tf.random.uniform([12]) + 0.5)
pad = {pad!r}

def padded(vector):
  if pad == "tf.pad":
    return tf.pad(vector, [[0, 4]])
  return layers.append_zero_channels(vector, 4)

def block(images):
  y = tf.nn.conv2d(images, kernel, 1, "VALID")
  y, *_ = tf.raw_ops.FusedBatchNormV3(
      x=y, scale=padded(scale), offset=tf.zeros([16]), mean=tf.zeros([16]),
      variance=tf.ones([16]), epsilon=1e-5, is_training=False)
  return y

graph, eager = tf.function(block)(x), block(x)
print("MAX_DIFFERENCE", float(tf.reduce_max(tf.abs(graph - eager))))
print("PADDED_CHANNELS_MAX", float(tf.reduce_max(tf.abs(graph[..., 12:]))))
"""


def _run(pad: str, onednn_opts: str = "1"):
  return subprocess.run([sys.executable, "-c", _GRAPH.format(pad=pad)],
                        cwd=fx.REPO,
                        env=fx.cli_env(TF_ENABLE_ONEDNN_OPTS=onednn_opts),
                        capture_output=True, text=True, timeout=240,
                        check=False)


def _value(stdout: str, key: str) -> float:
  for line in stdout.splitlines():
    if line.startswith(key + " "):
      return float(line.split()[1])
  raise AssertionError(f"no {key} in:\n{stdout}")


def test_tensorflow_aborts_on_a_padded_bn_vector_after_a_1x1_conv():
  proc = _run("tf.pad")
  assert proc.returncode != 0, (
      "TensorFlow no longer aborts on a tf.pad-ed batch-norm vector fused "
      "into a 1x1 convolution: layers.append_zero_channels's workaround may "
      "be reconsidered")
  assert "_MklNativePadWithFusedConv2D" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("onednn_opts", ["1", "0"])
def test_the_concatenation_runs_and_matches_eager(onednn_opts):
  proc = _run("append_zero_channels", onednn_opts)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert _value(proc.stdout, "MAX_DIFFERENCE") < 1e-4
  assert _value(proc.stdout, "PADDED_CHANNELS_MAX") == 0.0

"""Zero-padded physical channels compute exactly the logical network.

``channel_alignment`` / ``layers``: with ``channel_multiple=m`` every
activation carries ``align(C, m)`` channels, the extra ones zero. These tests
pin that down layer by layer (outputs, zeros, gradients, BN statistics), for
whole networks (logits, gradients, moving statistics, checkpoints, ShakeDrop
draws) and through the trainer and evaluator CLIs.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.model import layers
from pyramidnet_tf.model import network as model_lib
from tests import train_fixtures as fx


def test_align_and_auto_choice():
  assert [channel_alignment.align(c, 8) for c in (1, 8, 17, 24, 25)] == [
      8, 8, 24, 24, 32]
  assert channel_alignment.align(17, 1) == 17
  assert channel_alignment.auto_multiple("float32", "CPU") == 8
  assert channel_alignment.auto_multiple("bfloat16", "CPU") == 16
  assert channel_alignment.auto_multiple("float16", "cpu") == 16
  assert channel_alignment.auto_multiple("bfloat16", "GPU") == 1
  assert channel_alignment.resolve(0, "float32", "CPU") == 8
  assert channel_alignment.resolve(3, "float32", "GPU") == 3
  with pytest.raises(ValueError, match="--channel_multiple must be 0"):
    channel_alignment.resolve(-1, "float32", "CPU")
  with pytest.raises(ValueError, match="must be >= 1"):
    channel_alignment.align(5, 0)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


@pytest.mark.parametrize("kernel_size,stride,padding",
                         [(3, 1, 1), (3, 2, 1), (1, 1, 0), (7, 2, 3)])
def test_conv_on_padded_channels_equals_the_logical_conv(kernel_size, stride,
                                                         padding):
  tf.random.set_seed(0)
  conv = layers.Conv2D(5, 7, kernel_size, stride, padding)
  x = tf.random.normal([2, 12, 12, 5])
  x_padded = tf.pad(x, [[0, 0], [0, 0], [0, 0], [0, 3]])
  dy = tf.random.normal([2, conv.output_size(12), conv.output_size(12), 7])
  results = {}
  for physical in (False, True):
    conv.set_physical_channels(8 if physical else 5, 8 if physical else 7)
    for graph in (False, True):
      def forward_backward(inputs):
        with tf.GradientTape() as tape:
          y = conv(inputs)
          loss = tf.reduce_sum(y[..., :7] * dy)
        return y, tape.gradient(loss, conv.kernel)
      if graph:
        forward_backward = tf.function(forward_backward)
      results[physical, graph] = forward_backward(
          x_padded if physical else x)
  reference, grad = results[False, False]
  for key, (y, g) in results.items():
    assert _rel(y[..., :7], reference) < 1e-6, key
    assert _rel(g, grad) < 1e-6, key
    if key[0]:
      assert y.shape[-1] == 8
      np.testing.assert_array_equal(y[..., 7:], 0.0)


def test_physical_channels_below_the_logical_ones_are_refused():
  conv = layers.Conv2D(5, 7, 3, 1, 1, name="c")
  with pytest.raises(ValueError, match="c input: physical channels must be"):
    conv.set_physical_channels(4, 7)
  bn = layers.BatchNorm(6, name="b")
  with pytest.raises(ValueError, match="b: physical channels must be"):
    bn.set_physical_channels(5)


def _reference_bn(x, gamma, beta, eps=1e-5):
  """Training-mode BN in float64 numpy: output, mean, unbiased variance."""
  x = np.asarray(x, np.float64)
  mean = x.mean(axis=(0, 1, 2))
  var = x.var(axis=(0, 1, 2))
  n = x.size // x.shape[-1]
  y = (x - mean) / np.sqrt(var + eps) * gamma + beta
  return y, mean, var * n / (n - 1)


@pytest.mark.parametrize("physical", [6, 8, 16])
def test_fused_training_bn_matches_pytorch_semantics(physical):
  rng = np.random.default_rng(0)
  bn = layers.BatchNorm(6)
  bn.set_physical_channels(physical)
  bn.gamma.assign(rng.uniform(0.5, 2, 6).astype(np.float32))
  bn.beta.assign(rng.normal(size=6).astype(np.float32))
  x = rng.normal(2.0, 3.0, (4, 5, 5, 6)).astype(np.float32)
  x_padded = np.pad(x, [(0, 0)] * 3 + [(0, physical - 6)])
  y = bn(tf.constant(x_padded), training=True).numpy()
  want, mean, unbiased = _reference_bn(x, bn.gamma.numpy(), bn.beta.numpy())
  assert _rel(y[..., :6], want) < 1e-5
  np.testing.assert_array_equal(y[..., 6:], 0.0)
  # moving <- 0.9 moving + 0.1 batch, with the unbiased batch variance.
  np.testing.assert_allclose(bn.moving_mean.numpy(), 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(bn.moving_variance.numpy(),
                             0.9 + 0.1 * unbiased, rtol=1e-5)
  eval_y = bn(tf.constant(x_padded), training=False).numpy()
  np.testing.assert_array_equal(eval_y[..., 6:], 0.0)
  expect = ((x - bn.moving_mean.numpy()) /
            np.sqrt(bn.moving_variance.numpy() + 1e-5) * bn.gamma.numpy() +
            bn.beta.numpy())
  assert _rel(eval_y[..., :6], expect) < 1e-5


def test_fused_bn_gradients_equal_the_autodiff_of_the_formula():
  rng = np.random.default_rng(1)
  x = tf.constant(rng.normal(1.0, 2.0, (4, 6, 6, 5)).astype(np.float32))
  dy = tf.constant(rng.normal(size=(4, 6, 6, 5)).astype(np.float32))
  fused = layers.BatchNorm(5)
  fused.gamma.assign(rng.uniform(0.5, 2, 5).astype(np.float32))
  fused.beta.assign(rng.normal(size=5).astype(np.float32))
  with tf.GradientTape() as tape:
    tape.watch(x)
    loss = tf.reduce_sum(fused(x, training=True) * dy)
  got = tape.gradient(loss, [x, fused.gamma, fused.beta])
  with tf.GradientTape() as tape:
    tape.watch(x)
    mean, var = tf.nn.moments(x, [0, 1, 2])
    y = (x - mean) * tf.math.rsqrt(var + 1e-5) * fused.gamma + fused.beta
    loss = tf.reduce_sum(y * dy)
  want = tape.gradient(loss, [x, fused.gamma, fused.beta])
  for g, w in zip(got, want):
    assert _rel(g, w) < 1e-5


def _pair(multiple, **kwargs):
  """The same network twice (same weights): logical and padded widths."""
  tf.random.set_seed(3)
  plain = model_lib.PyramidNet(**kwargs)
  padded = model_lib.PyramidNet(**kwargs, channel_multiple=multiple)
  for a, b in zip(plain.variables, padded.variables):
    b.assign(a)
  return plain, padded


_NETS = {
    "cifar_basic": dict(dataset="cifar10", depth=20, alpha=24,
                        bottleneck=False),
    "cifar_bottleneck_shakedrop_pixel": dict(
        dataset="cifar100", depth=20, alpha=30, bottleneck=True,
        # p_L 0.1: most gates drop, so the pixel-level noise shows.
        shakedrop=True, shakedrop_pl=0.1, shakedrop_level="pixel"),
    "imagenet": dict(dataset="imagenet", depth=18, alpha=50),
}


@pytest.mark.parametrize("name", list(_NETS))
def test_padded_network_equals_the_logical_one(name):
  kwargs = _NETS[name]
  plain, padded = _pair(8, **kwargs)
  assert [(v.name, v.shape) for v in plain.variables] == [
      (v.name, v.shape) for v in padded.variables]
  size = 64 if kwargs["dataset"] == "imagenet" else 32
  x = tf.random.stateless_normal([4, size, size, 3], [1, 2])
  labels = tf.range(4) % 3
  seed = tf.constant([5, 6])
  for training in (True, False):
    grads, logits = [], []
    for net in (plain, padded):
      with tf.GradientTape() as tape:
        out = net(x, training, seed)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels, out))
      logits.append(out)
      grads.append(tape.gradient(loss, net.trainable_variables))
    assert _rel(logits[1], logits[0]) < 1e-5, training
    scale = max(float(tf.reduce_max(tf.abs(g))) for g in grads[0])
    worst = max(float(tf.reduce_max(tf.abs(a - b)))
                for a, b in zip(*grads))
    assert worst / scale < 1e-4, (training, worst, scale)
  # The training calls updated the BN statistics identically.
  for a, b in zip(plain.variables, padded.variables):
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6,
                               err_msg=a.name)


def test_bfloat16_padded_network_equals_the_logical_one():
  plain, padded = _pair(16, **_NETS["cifar_basic"])
  x = tf.cast(tf.random.stateless_normal([4, 32, 32, 3], [3, 4]),
              tf.bfloat16)
  for training in (True, False):
    a, b = plain(x, training), padded(x, training)
    assert _rel(a, b) < 5e-2, training  # bfloat16 rounding, not padding


def test_checkpoints_move_between_channel_multiples(tmp_path):
  plain, padded = _pair(8, **_NETS["cifar_basic"])
  x = tf.random.stateless_normal([2, 32, 32, 3], [7, 8])
  padded(x, training=True)  # changes the BN statistics
  path = tf.train.Checkpoint(model=padded).write(str(tmp_path / "ckpt"))
  tf.train.Checkpoint(model=plain).read(path).assert_consumed()
  assert _rel(plain(x, False), padded(x, False)) < 1e-5


def test_set_channel_multiple_rejects_non_positive(tiny_pyramidnet):
  net = tiny_pyramidnet()
  for bad in (0, -8, 2.5, True):
    with pytest.raises(ValueError, match="channel_multiple must be a positive"):
      net.set_channel_multiple(bad)




@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=8, eval_per_class=4,
                          size=16)


def test_trainer_with_and_without_padding_reaches_the_same_weights(
    data_dir, tmp_path):
  values = {}
  for multiple in (1, 8):
    model_dir = str(tmp_path / f"m{multiple}")
    proc = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
        f"--data_dir={data_dir}", f"--model_dir={model_dir}",
        "--batch_size=8", "--train_steps=4", "--steps_per_loop=2",
        "--log_every_steps=2", "--deterministic", "--noeval_at_end",
        f"--channel_multiple={multiple}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"channel multiple {multiple}" in proc.stderr
    values[multiple] = fx.checkpoint_values(
        tf.train.latest_checkpoint(model_dir))
  assert values[1].keys() == values[8].keys()
  for name, want in values[1].items():
    if want.dtype.kind == "f":
      np.testing.assert_allclose(values[8][name], want, rtol=1e-3, atol=1e-5,
                                 err_msg=name)
  # evaluate pads by default (auto) and agrees with an unpadded evaluation.
  results = []
  for flag in ("0", "1"):
    proc = fx.run_cli("pyramidnet_tf.evaluate", [
        f"--model_dir={tmp_path / 'm8'}", f"--data_dir={data_dir}",
        f"--channel_multiple={flag}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results.append(proc.stdout)
  import json  # pylint: disable=g-import-not-at-top
  auto, plain = (json.loads(r) for r in results)
  assert auto["examples"] == plain["examples"] == 16
  assert auto["top1_error"] == plain["top1_error"]
  assert abs(auto["loss"] - plain["loss"]) < 1e-4 * max(1.0, plain["loss"])


def test_trainer_refuses_a_negative_channel_multiple(data_dir, tmp_path):
  proc = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={tmp_path}",
      "--channel_multiple=-4"])
  assert proc.returncode != 0
  assert ("--channel_multiple must be an integer >= 0 (0 = auto, 1 = no "
          "padding); got -4") in proc.stderr
  assert os.listdir(str(tmp_path)) == []

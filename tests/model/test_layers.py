"""Layers against PyTorch semantics, and sync BN across replicas."""

import numpy as np
import pytest
import tensorflow as tf
import torch

from pyramidnet_tf.model import layers


def test_batch_norm_matches_torch_in_train_and_eval():
  rng = np.random.RandomState(0)
  x = (rng.randn(4, 5, 5, 6) * 3 + 1).astype(np.float32)
  bn = layers.BatchNorm(6)
  bn.gamma.assign(rng.rand(6).astype(np.float32) + 0.5)
  bn.beta.assign(rng.randn(6).astype(np.float32))
  ref = torch.nn.BatchNorm2d(6)  # eps 1e-5, momentum 0.1
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(bn.gamma.numpy()))
    ref.bias.copy_(torch.from_numpy(bn.beta.numpy()))
  ref.train()
  for _ in range(3):  # several updates of the moving statistics
    out = bn(tf.constant(x), training=True).numpy()
    expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach()
    np.testing.assert_allclose(out, expected.numpy().transpose(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bn.moving_mean.numpy(), ref.running_mean.numpy(),
                             rtol=1e-5, atol=1e-6)
  # Unbiased (m/(m-1)) variance in the moving average, as PyTorch.
  np.testing.assert_allclose(bn.moving_variance.numpy(),
                             ref.running_var.numpy(), rtol=1e-5)
  ref.eval()
  out = bn(tf.constant(x), training=False).numpy()
  expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach().numpy()
  np.testing.assert_allclose(out, expected.transpose(0, 2, 3, 1), rtol=1e-5,
                             atol=1e-5)


def test_batch_norm_gradients_flow_through_batch_moments():
  x = tf.random.normal([8, 3, 3, 4], seed=1)
  bn = layers.BatchNorm(4)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = bn(x, training=True)
    loss = tf.reduce_sum(y * tf.range(4, dtype=tf.float32))
  grad = tape.gradient(loss, x)
  # A per-channel linear loss of normalised values has zero gradient w.r.t.
  # x only when the mean/variance are differentiated (not stop-gradient'ed).
  np.testing.assert_allclose(grad.numpy(), 0.0, atol=1e-5)


def test_conv_matches_torch_including_symmetric_stride_two_padding():
  rng = np.random.RandomState(1)
  for k, stride, pad, size in [(3, 2, 1, 8), (3, 1, 1, 7), (7, 2, 3, 16),
                               (1, 1, 0, 5), (3, 2, 1, 7)]:
    conv = layers.Conv2D(4, 5, k, stride, pad)
    x = rng.randn(2, size, size, 4).astype(np.float32)
    ref = torch.nn.functional.conv2d(
        torch.from_numpy(x.transpose(0, 3, 1, 2)),
        torch.from_numpy(conv.kernel.numpy().transpose(3, 2, 0, 1)),
        stride=stride, padding=pad).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(conv(tf.constant(x)).numpy(), ref, rtol=1e-5,
                               atol=1e-5)
    assert conv.output_size(size) == ref.shape[1]


@pytest.mark.parametrize("size", [8, 7])
def test_pools_match_torch(size):
  x = np.abs(np.random.RandomState(2).randn(2, size, size, 3)).astype(
      np.float32)
  xt = torch.from_numpy(x.transpose(0, 3, 1, 2))
  avg = torch.nn.functional.avg_pool2d(xt, 2, 2, ceil_mode=True)
  np.testing.assert_allclose(layers.avg_pool_2x2_s2(tf.constant(x)).numpy(),
                             avg.numpy().transpose(0, 2, 3, 1), rtol=1e-6)
  mx = torch.nn.functional.max_pool2d(xt, 3, 2, 1)
  np.testing.assert_allclose(layers.max_pool_3x3_s2_p1(tf.constant(x)).numpy(),
                             mx.numpy().transpose(0, 2, 3, 1), rtol=1e-6)


def test_dense_matches_torch_linear():
  dense = layers.Dense(6, 3)
  x = np.random.RandomState(3).randn(4, 6).astype(np.float32)
  ref = torch.nn.functional.linear(
      torch.from_numpy(x), torch.from_numpy(dense.kernel.numpy().T),
      torch.from_numpy(dense.bias.numpy())).numpy()
  # The weights are random per run; summation order differs between the two
  # libraries, so a few float32 ulps of the largest term are allowed.
  np.testing.assert_allclose(dense(tf.constant(x)).numpy(), ref, rtol=1e-6,
                             atol=1e-6)


def test_sync_batch_norm_equals_batch_norm_of_the_joined_batch(
    two_replica_strategy):
  strategy = two_replica_strategy
  rng = np.random.RandomState(4)
  # Replicas with different distributions: local BN would differ clearly.
  x = np.concatenate([rng.randn(3, 4, 4, 5), 5 + 2 * rng.randn(3, 4, 4, 5)])
  x = x.astype(np.float32)
  with strategy.scope():
    synced = layers.BatchNorm(5, cross_replica=True)
    local = layers.BatchNorm(5)
  joined = layers.BatchNorm(5)
  expected = joined(tf.constant(x), training=True).numpy()

  dataset = tf.data.Dataset.from_tensor_slices(x).batch(6)
  batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

  @tf.function
  def step(images):
    return synced(images, training=True), local(images, training=True)

  out_sync, out_local = strategy.run(step, args=(batch,))
  got = np.concatenate([t.numpy() for t in strategy.experimental_local_results(
      out_sync)])
  np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  got_local = np.concatenate([t.numpy() for t in
                              strategy.experimental_local_results(out_local)])
  assert np.abs(got_local - expected).max() > 0.1
  # The moving statistics are those of the joined batch too.
  np.testing.assert_allclose(synced.moving_mean.numpy(),
                             joined.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(synced.moving_variance.numpy(),
                             joined.moving_variance.numpy(), rtol=1e-4)

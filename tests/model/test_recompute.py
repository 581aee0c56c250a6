"""Recomputed units (``set_recompute("unit")``) train exactly like kept ones.

Each test runs one training forward/backward with the same initial weights,
images and ShakeDrop seed, with and without recomputation, and compares the
loss, every gradient and every BN moving statistic. A recomputation that
updated the moving statistics a second time, drew other ShakeDrop factors or
normalised with other moments would differ by O(1) of the compared values.
"""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.model import layers
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.runtime import compile_units

# (depth, bottleneck): one unit per stage, both unit types.
_NETS = [(8, False), (11, True)]


def _build(tiny_pyramidnet, depth, bottleneck, **kwargs):
  return tiny_pyramidnet(depth, 6, bottleneck, seed=5, shakedrop=True,
                         shakedrop_level="pixel", **kwargs)


def _moving(model):
  return [v.numpy() for bn in model.batch_norms()
          for v in (bn.moving_mean, bn.moving_variance)]


def _step(model, images, labels, dtype=tf.float32):
  with tf.GradientTape() as tape:
    logits = model(tf.cast(images, dtype), training=True,
                   seed=tf.constant([11, 12]))
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  return loss, tape.gradient(loss, model.trainable_variables)


def _run(model, recompute, wrap=None, dtype=tf.float32):
  """(loss, gradients, moving statistics after the step) as NumPy."""
  model.set_recompute(recompute)
  images = tf.random.stateless_normal([4, 16, 16, 3], seed=[1, 2])
  labels = tf.constant([0, 3, 7, 9])
  def step():
    return _step(model, images, labels, dtype)
  if wrap is not None:
    step = wrap(step)
  loss, grads = step()
  assert all(g is not None for g in grads)
  return (float(loss), [tf.cast(g, tf.float32).numpy() for g in grads],
          _moving(model))


def _assert_same(expected, actual, rtol):
  """Loss, gradients (relative to the group's largest) and BN statistics."""
  np.testing.assert_allclose(actual[0], expected[0], rtol=rtol)
  scale = max(float(np.abs(g).max()) for g in expected[1])
  for e, a in zip(expected[1], actual[1]):
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)
  for e, a in zip(expected[2], actual[2]):
    np.testing.assert_allclose(a, e, rtol=rtol, atol=1e-7)


def _compare(tiny_pyramidnet, depth, bottleneck, wrap=None, rtol=1e-6,
             dtype=tf.float32, prepare=None):
  results = []
  for recompute in ("none", "unit"):
    model = _build(tiny_pyramidnet, depth, bottleneck)
    before = _moving(model)
    if prepare is not None:
      prepare(model)
    results.append(_run(model, recompute, wrap, dtype))
    # The step did move the statistics (so comparing them means something).
    assert any(not np.array_equal(a, b) for a, b in zip(before,
                                                         results[-1][2]))
  _assert_same(results[0], results[1], rtol)


@pytest.mark.parametrize("depth,bottleneck", _NETS)
def test_eager_same_loss_gradients_and_bn_statistics(tiny_pyramidnet, depth,
                                                      bottleneck):
  # Eagerly the two runs execute the same kernels on the same inputs: equal
  # up to float32 round-off (1e-6 relative).
  _compare(tiny_pyramidnet, depth, bottleneck)


@pytest.mark.parametrize("depth,bottleneck", _NETS)
def test_graph_same_loss_gradients_and_bn_statistics(tiny_pyramidnet, depth,
                                                      bottleneck):
  _compare(tiny_pyramidnet, depth, bottleneck, wrap=tf.function)


def test_bfloat16_same_loss_gradients_and_bn_statistics(tiny_pyramidnet):
  # Same bfloat16 kernels in both runs, so no bfloat16 round-off tolerance.
  _compare(tiny_pyramidnet, 11, True, wrap=tf.function, dtype=tf.bfloat16,
           prepare=lambda m: m.set_channel_multiple(16))


def test_whole_step_xla_same_loss_gradients_and_bn_statistics(
    tiny_pyramidnet):
  # XLA may fuse the recomputed forward differently from the first one:
  # 1e-4 of the largest gradient (a wrong recomputation differs by O(1)).
  _compare(tiny_pyramidnet, 8, False,
           wrap=lambda f: tf.function(f, jit_compile=True), rtol=1e-4)


def test_per_unit_xla_same_loss_gradients_and_bn_statistics(tiny_pyramidnet):
  _compare(tiny_pyramidnet, 8, False, wrap=tf.function, rtol=1e-4,
           prepare=compile_units.jit_units)


def test_sync_bn_two_replicas_same_gradients_and_bn_statistics(
    tiny_pyramidnet, two_replica_strategy):
  strategy = two_replica_strategy
  images = tf.random.stateless_normal([8, 16, 16, 3], seed=[3, 4])
  labels = tf.constant([0, 1, 2, 3, 4, 5, 6, 7])
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((images, labels)).repeat())
  batch = next(iter(dataset))
  results = []
  for recompute in ("none", "unit"):
    with strategy.scope():
      model = _build(tiny_pyramidnet, 8, False)
    model.set_sync_batch_norm(True)
    model.set_recompute(recompute)

    @tf.function
    def step(batch, model=model):
      def replica(images, labels):
        loss, grads = _step(model, images, labels)
        grads = tf.distribute.get_replica_context().all_reduce(
            tf.distribute.ReduceOp.SUM, grads)
        return loss, grads
      return strategy.run(replica, args=batch)

    loss, grads = step(batch)
    loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
    grads = [strategy.experimental_local_results(g)[0].numpy() for g in grads]
    results.append((float(loss), grads, _moving(model)))
  _assert_same(results[0], results[1], rtol=1e-5)


def test_recomputation_reruns_unit_forwards_in_the_backward_pass(
    tiny_pyramidnet):
  """The backward graph holds a second forward per unit (its BN ops)."""
  counts = {}
  for recompute in ("none", "unit"):
    model = _build(tiny_pyramidnet, 8, False)
    model.set_recompute(recompute)
    images = tf.zeros([2, 16, 16, 3])
    labels = tf.constant([0, 1])
    graph = tf.function(lambda: _step(model, images, labels)
                        ).get_concrete_function().graph
    ops = [op.type for op in graph.get_operations()]
    counts[recompute] = ops.count("FusedBatchNormV3")
  # 3 units x 3 BNs recomputed on top of 2 + 9 forward BNs.
  assert counts["unit"] - counts["none"] == 9, counts


def test_suspended_batch_norm_leaves_moving_statistics_alone():
  bn = layers.BatchNorm(3)
  x = tf.random.stateless_normal([4, 2, 2, 3], seed=[0, 1]) + 5.0
  with layers.moving_updates_suspended():
    bn(x, training=True)
  np.testing.assert_array_equal(bn.moving_mean.numpy(), np.zeros(3))
  bn(x, training=True)
  assert np.all(bn.moving_mean.numpy() > 0.4)


def test_eval_and_invalid_choice(tiny_pyramidnet):
  model = tiny_pyramidnet()
  images = tf.random.stateless_normal([2, 16, 16, 3], seed=[0, 1])
  plain = model(images, training=False).numpy()
  model.set_recompute("unit")
  assert model.recompute == "unit"
  np.testing.assert_array_equal(model(images, training=False).numpy(), plain)
  with pytest.raises(ValueError, match="recompute must be one of none, unit"):
    model.set_recompute("all")
  assert model_lib.RECOMPUTE == ("none", "unit")

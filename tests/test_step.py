"""The inner step: global-batch loss, sync BN, dtypes, non-finite detection.

conftest.py splits the CPU into two logical devices, so MirroredStrategy runs
two real replicas here.
"""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf import layers
from pyramidnet_tf import loss_scale
from pyramidnet_tf import model as model_lib
from pyramidnet_tf import optim
from pyramidnet_tf import schedules
from pyramidnet_tf import step as step_lib

BATCH = 8


def _data(seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(BATCH, 16, 16, 3)).astype(np.float32)
  labels = rng.integers(0, 10, BATCH).astype(np.int32)
  return images, labels


def _two_replicas():
  return tf.distribute.MirroredStrategy(
      ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


def _train(strategy, sync_bn, steps=2, dtype="float32", source=None,
           images_labels=None, jit=False):
  """Builds a tiny model under ``strategy``, runs ``steps`` train steps."""
  images, labels = images_labels or _data()
  replicas = strategy.num_replicas_in_sync
  with strategy.scope():
    model = model_lib.PyramidNet("cifar10", 8, 4, False)
    if source is not None:
      for mine, theirs in zip(model.variables, source.variables):
        mine.assign(theirs.read_value())
    model.set_sync_batch_norm(sync_bn)
    global_step = tf.Variable(0, dtype=tf.int64, name="global_step")
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
    scaler = (loss_scale.DynamicLossScale() if dtype == "float16" else None)
  schedule = schedules.Schedule("step", 0.1, 10, 100)
  train_step = step_lib.TrainStep(strategy, model, opt, schedule, global_step,
                                  BATCH, dtype, jit_compile=jit,
                                  loss_scale=scaler)

  def input_fn(context):
    del context
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        BATCH // replicas).repeat()
  iterator = iter(strategy.distribute_datasets_from_function(input_fn))
  totals, bad = train_step.loop(iterator, tf.constant(steps))
  return model, totals.numpy(), int(bad), global_step


def _values(model):
  out = [v.numpy() for v in model.trainable_variables]
  for bn in model.batch_norms():
    out += [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
  return out


@pytest.fixture(scope="module")
def reference():
  tf.random.set_seed(1)
  source = model_lib.PyramidNet("cifar10", 8, 4, False)
  single, totals, bad, _ = _train(tf.distribute.get_strategy(), False,
                                  source=source)
  return source, single, totals, bad


def test_sync_bn_over_two_replicas_equals_bn_over_the_joined_batch(reference):
  source, single, single_totals, _ = reference
  synced, totals, bad, step = _train(_two_replicas(), True, source=source)
  assert bad == -1 and int(step.numpy()) == 2
  np.testing.assert_allclose(totals, single_totals, rtol=1e-5)
  for a, b in zip(_values(synced), _values(single)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_local_bn_over_two_replicas_differs(reference):
  """Guards the test above: without sync BN the result must differ."""
  source, single, _, _ = reference
  local, _, _, _ = _train(_two_replicas(), False, source=source)
  diffs = [np.abs(a - b).max() for a, b in zip(_values(local),
                                               _values(single))]
  assert max(diffs) > 1e-3


def test_sync_batch_norm_layer_forward():
  x = np.random.default_rng(3).normal(size=(6, 4, 4, 5)).astype(np.float32)
  joined = layers.BatchNorm(5)
  expected = joined(tf.constant(x), training=True).numpy()
  strategy = _two_replicas()
  with strategy.scope():
    bn = layers.BatchNorm(5, cross_replica=True)

  @tf.function
  def run(batch):
    return strategy.run(lambda b: bn(b, training=True), args=(batch,))
  dist = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors(x))
  out = run(next(iter(dist)))
  got = np.concatenate([t.numpy() for t in
                        strategy.experimental_local_results(out)])
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bn.moving_variance.numpy(),
                             joined.moving_variance.numpy(), rtol=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_trains_with_float32_variables(reference, dtype):
  source = reference[0]
  model, totals, bad, _ = _train(tf.distribute.get_strategy(), False,
                                 dtype=dtype, source=source, steps=3)
  assert bad == -1
  assert np.isfinite(totals).all()
  assert all(v.dtype == tf.float32 for v in model.variables)
  _, fp32_totals, _, _ = _train(tf.distribute.get_strategy(), False,
                                source=source, steps=3)
  # Same losses as float32 up to low-precision rounding.
  np.testing.assert_allclose(totals[0], fp32_totals[0], rtol=0.05)


def test_jit_compile_matches_eager_graph(reference):
  source, single, _, _ = reference
  jitted, _, _, _ = _train(tf.distribute.get_strategy(), False, source=source,
                           jit=True)
  for a, b in zip(_values(jitted), _values(single)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_non_finite_loss_stops_the_loop_and_names_the_step(reference):
  images, labels = _data()
  images[3, 0, 0, 0] = np.nan
  _, _, bad, step = _train(tf.distribute.get_strategy(), False,
                           source=reference[0], steps=5,
                           images_labels=(images, labels))
  assert bad == 0
  assert int(step.numpy()) == 0


def test_loss_is_averaged_over_the_global_batch():
  logits = tf.constant([[2.0, 0.0], [0.0, 2.0]])
  labels = tf.constant([0, 0])
  ce = step_lib.cross_entropy(logits, labels, 2).numpy()
  np.testing.assert_allclose(ce, [np.log1p(np.exp(-2.0)),
                                  np.log1p(np.exp(2.0))], rtol=1e-6)
  smooth = step_lib.cross_entropy(logits, labels, 2, 0.2).numpy()
  assert smooth[0] > ce[0] and smooth[1] < ce[1]
  metrics = step_lib.metrics_from_totals([3.0, 1.0, 2.0, 2.0])
  assert metrics == {"loss": 1.5, "top1_error": 50.0, "top5_error": 0.0,
                     "examples": 2}

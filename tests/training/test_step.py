"""The inner step: global-batch loss, sync BN, dtypes, non-finite detection.

conftest.py splits the CPU into two logical devices, so its
``two_replica_strategy`` runs two real replicas here.
"""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.model import layers
from pyramidnet_tf.training import loss_scale
from pyramidnet_tf.training import mixing
from pyramidnet_tf.training import optim
from pyramidnet_tf.training import schedules
from pyramidnet_tf.training import step as step_lib

BATCH = 8


def _data(seed=0):
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(BATCH, 16, 16, 3)).astype(np.float32)
  labels = rng.integers(0, 10, BATCH).astype(np.int32)
  return images, labels


@pytest.fixture(scope="module")
def train(tiny_pyramidnet):
  """Returns ``run``, which trains a tiny model for a few steps.

  A fixture rather than a plain helper so that the model comes from the
  shared ``tiny_pyramidnet`` factory; module-scoped so that ``reference``
  can use it.
  """
  def run(strategy, sync_bn, steps=2, dtype="float32", source=None,
          images_labels=None, jit=False):
    """Builds a tiny model under ``strategy``, runs ``steps`` train steps.

    ``source``'s weights, when given, replace the random initialisation.
    Returns (model, summed metrics, bad step or -1, global step).
    """
    images, labels = images_labels or _data()
    replicas = strategy.num_replicas_in_sync
    with strategy.scope():
      model = tiny_pyramidnet()
      if source is not None:
        for mine, theirs in zip(model.variables, source.variables):
          mine.assign(theirs.read_value())
      model.set_sync_batch_norm(sync_bn)
      global_step = tf.Variable(0, dtype=tf.int64, name="global_step")
      opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
      scaler = (loss_scale.DynamicLossScale() if dtype == "float16"
                else None)
    schedule = schedules.Schedule("step", 0.1, 10, 100)
    train_step = step_lib.TrainStep(strategy=strategy, model=model,
                                    optimizer=opt, schedule=schedule,
                                    global_step=global_step,
                                    global_batch=BATCH, dtype=dtype,
                                    jit_compile=jit, loss_scale=scaler)

    def input_fn(context):
      del context
      return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
          BATCH // replicas).repeat()
    iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    totals, bad, _ = train_step.loop(iterator, tf.constant(steps))
    return model, totals.numpy(), int(bad), global_step
  return run


def _values(model):
  out = [v.numpy() for v in model.trainable_variables]
  for bn in model.batch_norms():
    out += [bn.moving_mean.numpy(), bn.moving_variance.numpy()]
  return out


@pytest.fixture(scope="module")
def reference(tiny_pyramidnet, train):
  source = tiny_pyramidnet(seed=1)
  single, totals, bad, _ = train(tf.distribute.get_strategy(), False,
                                 source=source)
  return source, single, totals, bad


def test_sync_bn_over_two_replicas_equals_bn_over_the_joined_batch(
    reference, train, two_replica_strategy):
  source, single, single_totals, _ = reference
  synced, totals, bad, step = train(two_replica_strategy, True, source=source)
  assert bad == -1 and int(step.numpy()) == 2
  np.testing.assert_allclose(totals, single_totals, rtol=1e-5)
  for a, b in zip(_values(synced), _values(single)):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_local_bn_over_two_replicas_differs(reference, train,
                                            two_replica_strategy):
  """Guards the test above: without sync BN the result must differ."""
  source, single, _, _ = reference
  local, _, _, _ = train(two_replica_strategy, False, source=source)
  diffs = [np.abs(a - b).max() for a, b in zip(_values(local),
                                               _values(single))]
  assert max(diffs) > 1e-3


def test_sync_batch_norm_layer_forward(two_replica_strategy):
  x = np.random.default_rng(3).normal(size=(6, 4, 4, 5)).astype(np.float32)
  joined = layers.BatchNorm(5)
  expected = joined(tf.constant(x), training=True).numpy()
  strategy = two_replica_strategy
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
def test_low_precision_trains_with_float32_variables(reference, train,
                                                     dtype):
  source = reference[0]
  model, totals, bad, _ = train(tf.distribute.get_strategy(), False,
                                dtype=dtype, source=source, steps=3)
  assert bad == -1
  assert np.isfinite(totals).all()
  assert all(v.dtype == tf.float32 for v in model.variables)
  _, fp32_totals, _, _ = train(tf.distribute.get_strategy(), False,
                               source=source, steps=3)
  # Same losses as float32 up to low-precision rounding.
  np.testing.assert_allclose(totals[0], fp32_totals[0], rtol=0.05)


def test_jit_compile_matches_eager_graph(reference, train):
  source, single, _, _ = reference
  jitted, _, _, _ = train(tf.distribute.get_strategy(), False, source=source,
                          jit=True)
  for a, b in zip(_values(jitted), _values(single)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_non_finite_loss_stops_the_loop_and_names_the_step(reference, train):
  images, labels = _data()
  images[3, 0, 0, 0] = np.nan
  _, _, bad, step = train(tf.distribute.get_strategy(), False,
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


def _log_softmax(logits):
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixed_cross_entropy_is_the_lambda_weighted_sum(smoothing):
  rng = np.random.default_rng(5)
  logits = rng.normal(size=(6, 7)).astype(np.float32)
  a, b = rng.integers(0, 7, 6), rng.integers(0, 7, 6)
  lam = 0.3
  got = step_lib.mixed_cross_entropy(tf.constant(logits), tf.constant(a),
                                     tf.constant(b), tf.constant(lam), 7,
                                     smoothing).numpy()
  logp = _log_softmax(logits.astype(np.float64))

  def ce(labels):
    target = np.eye(7)[labels] * (1 - smoothing) + smoothing / 7
    return -(target * logp).sum(-1)
  np.testing.assert_allclose(got, lam * ce(a) + (1 - lam) * ce(b),
                             rtol=1e-5)
  # lam = 1 is the ordinary (smoothed) cross entropy
  np.testing.assert_allclose(
      step_lib.mixed_cross_entropy(logits, a, b, 1.0, 7, smoothing).numpy(),
      step_lib.cross_entropy(logits, a, 7, smoothing).numpy(), rtol=1e-5)


def _single_step(model, regularization, images, labels, step=0, ema=None):
  """One TrainStep on the default strategy, starting at global ``step``."""
  strategy = tf.distribute.get_strategy()
  global_step = tf.Variable(step, dtype=tf.int64)
  opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 0.0)
  schedule = schedules.Schedule("step", 0.1, 10, 100)
  train_step = step_lib.TrainStep(strategy=strategy, model=model, optimizer=opt,
                                  schedule=schedule, global_step=global_step,
                                  global_batch=len(labels),
                                  regularization=regularization,
                                  ema=ema)
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  totals, _, _ = train_step.loop(iter(dataset), tf.constant(1))
  return totals.numpy()


def test_cutmix_step_loss_is_the_hand_computed_mixed_loss(reference,
                                                           tiny_pyramidnet):
  """The step mixes with the seed of (--seed, global step, replica 0)."""
  source = reference[0]
  images, labels = _data(seed=2)
  reg = step_lib.Regularization(cutmix_prob=1.0, cutout_size=6, seed=9)
  for step in (0, 17):
    model = tiny_pyramidnet()
    probe = tiny_pyramidnet()
    for mine, probe_v, theirs in zip(model.variables, probe.variables,
                                     source.variables):
      mine.assign(theirs)
      probe_v.assign(theirs)
    totals = _single_step(model, reg, images, labels, step=step)
    # By hand: the same seed derivation, cutout, then CutMix.
    fold = tf.random.experimental.stateless_fold_in
    seed = fold(mixing.replica_step_seed(9, step, 0), step_lib._MIXING_STREAM)  # pylint: disable=protected-access
    cut = mixing.cutout(tf.constant(images), fold(seed, 0), 6)
    mixed = mixing.cutmix(cut, tf.constant(labels), fold(fold(seed, 1), 1),
                          1.0)
    assert float(mixed.lam) < 1.0
    logits = probe(mixed.images, training=True).numpy().astype(np.float64)
    logp = _log_softmax(logits)
    rows = np.arange(BATCH)
    lam = float(mixed.lam)
    expected = -(lam * logp[rows, labels] +
                 (1 - lam) * logp[rows, mixed.labels_b.numpy()])
    np.testing.assert_allclose(totals[0], expected.sum(), rtol=1e-4)
    # top-1 against the unmixed labels
    assert totals[1] == (logits.argmax(-1) == labels).sum()
    assert totals[3] == BATCH


class _Linear(tf.Module):
  """A toy classifier with the interface TrainStep needs."""
  num_classes = 3

  def __init__(self, seed=0):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.w = tf.Variable(rng.normal(size=(4, 3)).astype(np.float32) * 3,
                         name="kernel")
    self.b = tf.Variable(np.zeros(3, np.float32), name="bias")

  def __call__(self, x, training=False, seed=None):
    del training, seed
    return tf.reshape(x, [-1, 4]) @ self.w + self.b


def _toy_data():
  rng = np.random.default_rng(1)
  return (rng.normal(size=(8, 2, 2, 1)).astype(np.float32) * 5,
          rng.integers(0, 3, 8).astype(np.int32))


@pytest.mark.parametrize("clip", [0.5, 1e6])
def test_clip_grad_norm_clips_the_all_reduced_gradient(two_replica_strategy,
                                                        clip):
  images, labels = _toy_data()
  strategy = two_replica_strategy
  with strategy.scope():
    model = _Linear()
    global_step = tf.Variable(0, dtype=tf.int64)
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 0.0)
  train_step = step_lib.TrainStep(
      strategy=strategy, model=model, optimizer=opt,
      schedule=schedules.Schedule("step", 0.1, 10, 100),
      global_step=global_step, global_batch=8,
      regularization=step_lib.Regularization(clip_grad_norm=clip))
  dataset = strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensors((images, labels)).unbatch().batch(
          8).repeat())
  train_step.loop(iter(dataset), tf.constant(1))
  # By hand: gradient of the mean loss over all 8 examples, clipped.
  toy = _Linear()
  with tf.GradientTape() as tape:
    loss = tf.reduce_mean(step_lib.cross_entropy(toy(images), labels, 3))
  grads = tape.gradient(loss, [toy.w, toy.b])
  clipped, norm = tf.clip_by_global_norm(grads, clip)
  if clip < 1:
    assert float(norm) > 2 * clip   # the clip is active
  # first Nesterov step from zero momentum: p - lr * (1 + mu) * g
  for var, start, grad in zip([model.w, model.b], [toy.w, toy.b], clipped):
    np.testing.assert_allclose(var.numpy(), start.numpy() - 0.1 * 1.9 *
                               grad.numpy(), rtol=1e-5, atol=1e-6)


def test_ema_in_the_step_averages_weights_and_bn_statistics(
    tiny_pyramidnet, two_replica_strategy):
  """Two replicas, local BN: the average of the means of ON_READ stats."""
  from pyramidnet_tf.model_dir import ema as ema_lib  # pylint: disable=g-import-not-at-top
  images, labels = _data(seed=4)
  strategy = two_replica_strategy
  with strategy.scope():
    model = tiny_pyramidnet()
    global_step = tf.Variable(0, dtype=tf.int64)
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
    averages = ema_lib.Ema(ema_lib.averaged_variables(model), 0.7)
  train_step = step_lib.TrainStep(
      strategy=strategy, model=model, optimizer=opt,
      schedule=schedules.Schedule("step", 0.1, 10, 100),
      global_step=global_step, global_batch=BATCH, ema=averages)

  def input_fn(context):
    del context
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(
        BATCH // 2).repeat()
  iterator = iter(strategy.distribute_datasets_from_function(input_fn))
  variables = ema_lib.averaged_variables(model)
  expected = [v.numpy().astype(np.float64) for v in variables]
  for _ in range(3):
    train_step.loop(iterator, tf.constant(1))
    expected = [0.7 * e + 0.3 * v.numpy() for e, v in zip(expected,
                                                           variables)]
  for e, a, v in zip(expected, averages.averages, variables):
    np.testing.assert_allclose(a.numpy(), e, rtol=1e-5, atol=1e-7,
                               err_msg=v.name)
  assert any(not np.allclose(a.numpy(), v.numpy())
             for a, v in zip(averages.averages, variables))
  moving = [a for a in averages.averages if "moving_mean" in a.name]
  assert moving and isinstance(
      moving[0], tf.distribute.DistributedValues)

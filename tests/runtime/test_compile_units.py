"""compile_units: per-unit XLA gives the plain model's outputs and gradients."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.runtime import compile_units
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model import units


def _snapshot(model):
  return [v.numpy() for v in model.variables]


def _restore(model, values):
  for variable, value in zip(model.variables, values):
    variable.assign(value)


def _forward_backward(model, images, labels, training):
  with tf.GradientTape() as tape:
    logits = model(images, training=training)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels, logits))
  grads = tape.gradient(loss, model.trainable_variables)
  assert all(g is not None for g in grads)
  return (logits.numpy(), [g.numpy() for g in grads], _snapshot(model))


def _assert_close(expected, actual, rtol=1e-5):
  """Elementwise, relative to the largest magnitude of the whole group."""
  scale = max(float(np.abs(e).max()) for e in expected)
  for e, a in zip(expected, actual):
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("depth,bottleneck", [(14, False), (11, True)])
@pytest.mark.parametrize("training", [False, True])
def test_same_outputs_gradients_and_bn_updates(tiny_pyramidnet, depth,
                                               bottleneck, training):
  model = tiny_pyramidnet(depth, 24, bottleneck, seed=3)
  initial = _snapshot(model)
  images = tf.random.stateless_normal([4, 32, 32, 3], seed=[1, 2])
  labels = tf.constant([0, 3, 7, 9])
  if not training:  # non-trivial moving statistics for inference mode
    _forward_backward(model, images, labels, True)
    initial = _snapshot(model)
  plain = _forward_backward(model, images, labels, training)
  _restore(model, initial)

  names = [v.name for v in model.variables]
  compile_units.jit_units(model)
  assert compile_units.is_jit(model)
  assert [v.name for v in model.variables] == names  # nothing new tracked
  compiled = _forward_backward(model, images, labels, training)

  _assert_close([plain[0]], [compiled[0]])
  # Training-mode BN removes each channel's mean, so the gradients of the
  # biases and kernels before it are small differences of large terms: XLA's
  # reordered sums change them by up to ~3e-3 of the group's largest gradient
  # on some CPUs (AMD EPYC, TF 2.21; the biases' true gradient is 0). A wrong
  # compiled unit differs by O(1).
  _assert_close(plain[1], compiled[1], rtol=5e-3 if training else 1e-5)
  _assert_close(plain[2], compiled[2])  # BN moving statistics (training)
  if training:  # the training call did update them, in both runs
    assert any(not np.array_equal(a, b) for a, b in zip(initial, plain[2]))


def test_each_unit_is_its_own_xla_function(tiny_pyramidnet):
  model = tiny_pyramidnet(8, 12)
  compile_units.jit_units(model)
  images = tf.random.stateless_normal([2, 32, 32, 3], seed=[0, 1])
  model(images, training=False)
  forwards = [unit._xla_forward for stage in model.stages for unit in stage]  # pylint: disable=protected-access
  assert len({id(f) for f in forwards}) == len(forwards) == 3
  for forward in forwards:
    assert forward._jit_compile  # pylint: disable=protected-access
    assert forward.experimental_get_tracing_count() == 1


def test_checkpoint_keys_unchanged_and_undo(tiny_pyramidnet, tmp_path):
  model = tiny_pyramidnet(8, 12)
  plain_keys = sorted(k for k, _ in tf.train.list_variables(
      tf.train.Checkpoint(model=model).write(str(tmp_path / "plain"))))
  compile_units.jit_units(model)
  compile_units.jit_units(model)  # idempotent
  jit_keys = sorted(k for k, _ in tf.train.list_variables(
      tf.train.Checkpoint(model=model).write(str(tmp_path / "jit"))))
  assert jit_keys == plain_keys
  assert isinstance(model.layer1[0], units.BasicUnit)
  compile_units.unjit_units(model)
  assert type(model.layer1[0]) is units.BasicUnit  # pylint: disable=unidiomatic-typecheck
  assert not compile_units.is_jit(model)
  assert not hasattr(model.layer1[0], "_xla_forward")


def test_sync_batch_norm_is_refused(tiny_pyramidnet):
  model = tiny_pyramidnet(8, 12)
  model.set_sync_batch_norm(True)
  with pytest.raises(ValueError, match="--sync_bn"):
    compile_units.jit_units(model)
  with pytest.raises(ValueError, match="--sync_bn"):
    compile_units.jit_units(model, num_replicas=2)
  assert not compile_units.is_jit(model)
  # One replica: sync BN does no all-reduce, so units can be compiled.
  assert compile_units.is_jit(compile_units.jit_units(model, num_replicas=1))


def test_distinct_unit_signatures(tiny_pyramidnet):
  # Additive widening: every unit has its own width, so nothing is shared.
  model = model_lib.PyramidNet("cifar10", 110, 48, False)
  assert compile_units.distinct_unit_signatures(model, 32) == 54
  # alpha=0 keeps the width (16): one shape per (stride, input size), i.e.
  # 32x32 s1, 32x32 s2, 16x16 s1, 16x16 s2, 8x8 s1.
  flat = tiny_pyramidnet(20, 0)
  assert compile_units.distinct_unit_signatures(flat, 32) == 5


def test_trainer_jit_scope_unit_compiles_each_unit(tmp_path):
  """--jit_compile --jit_scope=unit through the CLI: one cache entry per
  unit forward and backward (so several), and training runs."""
  from pyramidnet_tf.runtime import compile_cache  # pylint: disable=g-import-not-at-top
  from tests import train_fixtures as fx  # pylint: disable=g-import-not-at-top
  model_dir = str(tmp_path / "model")

  def entries(scope):
    cache = str(tmp_path / f"cache_{scope}")
    out = fx.run_cli("pyramidnet_tf.train", [
        "--dataset=synthetic", "--depth=8", "--alpha=4", "--nobottleneck",
        "--image_size=16", f"--model_dir={model_dir}_{scope}",
        "--batch_size=8", "--train_steps=2", "--steps_per_loop=2",
        "--jit_compile", f"--jit_scope={scope}",
        f"--compile_cache_dir={cache}"])
    assert out.returncode == 0, out.stderr[-3000:]
    return compile_cache.stats(cache)["tf_entries"]

  # depth 8: one basic unit per stage, 3 units -> 3 forwards + 3 backwards.
  assert entries("unit") == 6
  assert entries("step") == 1

"""ShakeDrop: factors, gradient, levels, p_l schedule, config and execution."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from tests import REPO_ROOT
from pyramidnet_tf.training import checkpointing
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.model import shakedrop

FLAGS = flags.FLAGS


def _factors_of(x, keep, level, seed, dtype=tf.float32):
  """(forward factor, backward factor) seen through the op itself.

  With x = 1 the output is the forward factor; with dy = 1 the input
  gradient is the backward factor.
  """
  x = tf.ones(x, dtype)
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = shakedrop.shake_drop(x, keep, level, True, tf.constant(seed))
  g = tape.gradient(y, x, output_gradients=tf.ones_like(y))
  return y.numpy().astype(np.float64), g.numpy().astype(np.float64)


def _draw_reference(shape, keep, level, seed):
  """b, a, c recomputed from the documented seed salts and level shapes."""
  n = shape[0]
  gate_shape = [n, 1, 1, 1] if level == "sample" else [1, 1, 1, 1]
  noise_shape = list(shape) if level == "pixel" else [n, 1, 1, 1]
  fold = tf.random.experimental.stateless_fold_in
  seed = tf.constant(seed)
  b = tf.cast(tf.random.stateless_uniform(gate_shape, fold(seed, 0)) < keep,
              tf.float32).numpy()
  a = tf.random.stateless_uniform(noise_shape, fold(seed, 1), -1.0,
                                  1.0).numpy()
  c = tf.random.stateless_uniform(noise_shape, fold(seed, 2)).numpy()
  return b, a, c


@pytest.mark.parametrize("level", shakedrop.LEVELS)
def test_forward_and_gradient_follow_the_formulas(level):
  shape = (6, 3, 4, 5)
  keep = 0.6
  x = tf.random.stateless_normal(shape, [4, 4])
  dy = tf.random.stateless_normal(shape, [5, 5])
  for s in range(6):
    seed = [s, 11]
    b, a, c = _draw_reference(shape, keep, level, seed)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = shakedrop.shake_drop(x, keep, level, True, tf.constant(seed))
    grad = tape.gradient(y, x, output_gradients=dy)
    np.testing.assert_allclose(y.numpy(), x.numpy() * (b + a - b * a),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad.numpy(), dy.numpy() * (b + c - b * c),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("level", shakedrop.LEVELS)
def test_defining_properties_and_sharing_per_level(level):
  shape = (16, 3, 3, 4)
  gates = []
  for s in range(30):
    f, g = _factors_of(shape, 0.5, level, [s, 3])
    kept = np.all((f == 1.0) & (g == 1.0), axis=(1, 2, 3))  # b = 1
    gates.append(kept)
    # b = 1: identity both ways; b = 0: forward a in [-1, 1], backward c in
    # [0, 1], unrelated to each other.
    dropped_f, dropped_g = f[~kept], g[~kept]
    assert np.all(np.abs(dropped_f) <= 1.0)
    assert np.all((dropped_g >= 0.0) & (dropped_g <= 1.0))
    if dropped_f.size:
      assert np.any(dropped_f < 0.0) or dropped_f.size < 8
      assert not np.allclose(dropped_f, dropped_g)
    per_sample_f = f.reshape(shape[0], -1)
    if level == "pixel":
      # a and c vary over the elements of one sample.
      if dropped_f.size:
        assert per_sample_f[~kept].std(axis=1).min() > 0.05
    else:
      # a and c are constant over C, H, W of one sample ...
      assert np.all(per_sample_f.std(axis=1) == 0.0)
      assert np.all(g.reshape(shape[0], -1).std(axis=1) == 0.0)
      # ... and differ between samples.
      if np.sum(~kept) > 1:
        assert np.unique(per_sample_f[~kept, 0]).size == np.sum(~kept)
  gates = np.array(gates)
  assert gates.any() and not gates.all()  # both gate values occur
  if level == "sample":
    # The gate is per sample: some mini-batch mixes kept and dropped.
    assert np.any(gates.any(axis=1) & ~gates.all(axis=1))
  else:
    # One gate per mini-batch.
    assert np.all(gates.all(axis=1) | ~gates.any(axis=1))


@pytest.mark.parametrize("level", shakedrop.LEVELS)
def test_expected_factors_match_keep_probability(level):
  keep = 0.7
  if level == "sample":
    f, g = _factors_of((20000, 1, 1, 1), keep, level, [1, 2])
    f, g = f.ravel(), g.ravel()
  else:
    draw = tf.function(lambda seed: shakedrop.factors(
        tf.zeros([2, 2, 2, 2]), keep, level, seed)[:2])
    pairs = [draw(tf.constant([s, 9])) for s in range(1500)]
    f = np.concatenate([np.broadcast_to(p[0].numpy(), (2, 2, 2, 2)).ravel()
                        for p in pairs])
    g = np.concatenate([np.broadcast_to(p[1].numpy(), (2, 2, 2, 2)).ravel()
                        for p in pairs])
  # E[b + a - ba] = p (E[a] = 0); E[b + c - bc] = p + (1 - p) / 2.
  assert abs(f.mean() - keep) < 0.05, f.mean()
  assert abs(g.mean() - (keep + (1 - keep) / 2)) < 0.03, g.mean()
  assert abs(np.mean(f == 1.0) - keep) < 0.05


@pytest.mark.parametrize("dtype", [tf.float32, tf.bfloat16, tf.float16])
def test_eval_scales_by_exactly_keep(dtype):
  x = tf.cast(tf.random.stateless_normal([3, 4, 4, 2], [1, 1]), dtype)
  y = shakedrop.shake_drop(x, 0.8125, "batch", False)
  assert y.dtype == dtype
  np.testing.assert_array_equal(y.numpy(), (x * tf.cast(0.8125, dtype)).numpy())
  f, g = _factors_of((4, 2, 2, 2), 0.5, "pixel", [7, 7], dtype)
  assert np.all(np.abs(f) <= 1.0) and np.all((g >= 0) & (g <= 1))


def test_keep_probability_decays_linearly_over_all_units(tiny_pyramidnet):
  model = tiny_pyramidnet(20, 8, shakedrop=True, shakedrop_pl=0.5)
  found = [unit.shakedrop for stage in model.stages for unit in stage]
  count = model.num_units
  assert count == 9 and len(found) == count
  assert [sd.index for sd in found] == list(range(1, count + 1))
  keeps = np.array([sd.keep for sd in found])
  assert keeps[0] == pytest.approx(1 - 0.5 / count)
  assert keeps[-1] == pytest.approx(0.5)
  np.testing.assert_allclose(np.diff(keeps), -0.5 / count)
  assert shakedrop.keep_prob(3, 10, 0.2) == pytest.approx(1 - 0.3 * 0.8)
  assert shakedrop.keep_prob(10, 10, 1.0) == 1.0
  with pytest.raises(ValueError, match="unit index must be in 1..10"):
    shakedrop.keep_prob(0, 10, 0.5)
  bottleneck = tiny_pyramidnet(29, 8, True, shakedrop=True, shakedrop_pl=0.3)
  last = bottleneck.stages[-1][-1].shakedrop
  assert last.index == bottleneck.num_units == 9
  assert last.keep == pytest.approx(0.3)


def test_unit_applies_shakedrop_to_the_branch_only(tiny_pyramidnet):
  model = tiny_pyramidnet(8, 6, shakedrop=True, shakedrop_pl=0.25)
  unit = model.stages[1][0]  # a strided unit with zero-padded shortcut
  keep = unit.shakedrop.keep
  x = tf.random.stateless_normal([2, 16, 16, unit.in_channels], [3, 1])
  expected = unit.shortcut(x) + unit.residual(x, False) * keep
  np.testing.assert_allclose(unit(x, False).numpy(), expected.numpy(),
                             rtol=1e-6, atol=1e-6)
  # Training: the branch (BN in batch mode) scaled by the forward factor.
  seed = tf.constant([5, 6])
  branch = unit.residual(x, True)
  forward = shakedrop.factors(branch, keep, "batch",
                              unit.shakedrop.unit_seed(seed))[0]
  np.testing.assert_allclose(unit(x, True, seed).numpy(),
                             (unit.shortcut(x) + branch * forward).numpy(),
                             rtol=1e-5, atol=1e-5)


def test_no_variables_added_and_checkpoints_interchange(tiny_pyramidnet,
                                                         tmp_path):
  plain = tiny_pyramidnet(20, 12)
  shaken = tiny_pyramidnet(20, 12, shakedrop=True, shakedrop_level="pixel")
  assert [(v.name, v.shape) for v in plain.variables] == [
      (v.name, v.shape) for v in shaken.variables]
  assert model_lib.count_params(plain) == model_lib.count_params(shaken)
  assert list(plain.torch_variables()) == list(shaken.torch_variables())
  path = tf.train.Checkpoint(model=plain).write(str(tmp_path / "plain"))
  tf.train.Checkpoint(model=shaken).read(path).assert_consumed()
  for a, b in zip(plain.variables, shaken.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  # Same weights: eval differs only by the p_l scaling of the branches.
  x = tf.random.stateless_normal([2, 32, 32, 3], [2, 2])
  assert np.abs(plain(x).numpy() - shaken(x).numpy()).max() > 1e-4


def test_seed_reproducibility_and_seed_is_ignored_without_shakedrop(
    tiny_pyramidnet):
  model = tiny_pyramidnet(8, 6, shakedrop=True, shakedrop_pl=0.2,
                          shakedrop_level="sample")
  x = tf.random.stateless_normal([8, 32, 32, 3], [9, 9])
  one = model(x, training=True, seed=tf.constant([1, 2]))
  np.testing.assert_array_equal(
      one.numpy(), model(x, training=True, seed=tf.constant([1, 2])).numpy())
  two = model(x, training=True, seed=tf.constant([1, 3], tf.int64))
  assert np.abs(one.numpy() - two.numpy()).max() > 1e-4
  unseeded = [model(x, training=True).numpy() for _ in range(2)]
  assert np.abs(unseeded[0] - unseeded[1]).max() > 1e-4
  np.testing.assert_array_equal(model(x, seed=tf.constant([1, 2])).numpy(),
                                model(x).numpy())  # eval: no randomness
  with pytest.raises(ValueError, match="seed must be an int32/int64 tensor "
                     "of shape \\[2\\]"):
    model(x, training=True, seed=tf.constant([1, 2, 3]))
  plain = tiny_pyramidnet(8, 6)
  np.testing.assert_array_equal(
      plain(x, training=True, seed=tf.constant([4, 4])).numpy(),
      plain(x, training=True).numpy())


def _train_step(model, dtype):
  def step(images, labels, seed):
    with tf.GradientTape() as tape:
      logits = model(tf.cast(images, dtype), training=True, seed=seed)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    return loss, tape.gradient(loss, model.trainable_variables)
  return step


@pytest.mark.parametrize("dtype,jit", [(tf.bfloat16, True),
                                       (tf.float32, True),
                                       (tf.float16, False)])
def test_training_step_compiles_and_is_reproducible(tiny_pyramidnet, dtype,
                                                     jit):
  model = tiny_pyramidnet(8, 6, shakedrop=True, shakedrop_level="pixel")
  step = tf.function(_train_step(model, dtype), jit_compile=jit)
  images = tf.random.stateless_normal([4, 32, 32, 3], [1, 5])
  labels = tf.constant([0, 1, 2, 3])
  loss, grads = step(images, labels, tf.constant([3, 4]))
  assert np.isfinite(loss.numpy())
  assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
  again, grads_again = step(images, labels, tf.constant([3, 4]))
  assert again.numpy() == loss.numpy()
  for g, h in zip(grads, grads_again):
    np.testing.assert_array_equal(g.numpy(), h.numpy())
  other, _ = step(images, labels, tf.constant([3, 5]))
  assert other.numpy() != loss.numpy()


def test_replicas_draw_their_own_gates(tiny_pyramidnet,
                                       two_replica_strategy):
  strategy = two_replica_strategy
  images = tf.random.stateless_normal([4, 32, 32, 3], [8, 8])

  def per_replica_outputs(shake):
    with strategy.scope():
      model = tiny_pyramidnet(8, 6, shakedrop=shake, shakedrop_level="batch")

    @tf.function
    def run():
      return strategy.run(
          lambda: model(images, training=True, seed=tf.constant([1, 1])))
    return [t.numpy() for t in strategy.experimental_local_results(run())]

  # Same images and seed on both replicas: identical without ShakeDrop ...
  plain = per_replica_outputs(False)
  np.testing.assert_allclose(plain[0], plain[1], rtol=1e-6, atol=1e-6)
  # ... but each replica folds in its id, so ShakeDrop's draws differ.
  shaken = per_replica_outputs(True)
  assert np.abs(shaken[0] - shaken[1]).max() > 1e-4


def test_config_round_trip_and_older_configs(tiny_pyramidnet, tmp_path):
  model = tiny_pyramidnet(8, 6, shakedrop=True, shakedrop_pl=0.3,
                          shakedrop_level="pixel")
  model_io.save_model(model, str(tmp_path / "sd"))
  loaded, _ = model_io.load_model(str(tmp_path / "sd"))
  config = model_lib.config_of(loaded)
  assert config == model_lib.config_of(model)
  assert (config["shakedrop"], config["shakedrop_pl"],
          config["shakedrop_level"]) == (True, 0.3, "pixel")
  assert [u.shakedrop for s in loaded.stages for u in s] == [
      u.shakedrop for s in model.stages for u in s]
  x = tf.random.stateless_normal([2, 32, 32, 3], [6, 6])
  np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())

  # A model_config.json written before ShakeDrop existed: loads, off.
  old_dir = str(tmp_path / "old")
  plain = tiny_pyramidnet(8, 6)
  model_io.save_model(plain, old_dir)
  path = os.path.join(old_dir, model_io.CONFIG_FILE)
  payload = json.load(open(path))
  for key in ("shakedrop", "shakedrop_pl", "shakedrop_level"):
    del payload["model"][key]
  with open(path, "w") as f:
    json.dump(payload, f)
  old, _ = model_io.load_model(old_dir)
  assert not old.shakedrop and old.stages[0][0].shakedrop is None

  # Resume checks: the old config matches a model without ShakeDrop (p_L
  # and level are irrelevant then) and names the difference otherwise.
  checkpointing.check_config(old_dir, plain)
  checkpointing.check_config(old_dir, tiny_pyramidnet(
      8, 6, shakedrop_pl=0.9, shakedrop_level="sample"))
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match="shakedrop: False in .*True from the flags"):
    checkpointing.check_config(old_dir, model)
  other_level = tiny_pyramidnet(8, 6, shakedrop=True, shakedrop_pl=0.3)
  with pytest.raises(checkpointing.ConfigMismatchError,
                     match="shakedrop_level: 'pixel'.*'batch' from"):
    checkpointing.check_config(str(tmp_path / "sd"), other_level)


@pytest.mark.parametrize("kwargs,message", [
    (dict(shakedrop_level="element"),
     "shakedrop_level must be one of batch, sample, pixel; got 'element'"),
    (dict(shakedrop_pl=1.5), "shakedrop_pl must be in \\[0, 1\\]"),
    (dict(shakedrop_pl="half"), "shakedrop_pl must be a number"),
    (dict(shakedrop="yes"), "shakedrop must be True or False"),
])
def test_bad_arguments_name_the_argument(tiny_pyramidnet, kwargs, message):
  with pytest.raises(ValueError, match=message):
    tiny_pyramidnet(8, 6, **kwargs)


def test_flags_reach_the_model():
  assert model_flags.SHAKEDROP_LEVELS == shakedrop.LEVELS
  for name in ("shakedrop", "shakedrop_pl", "shakedrop_level"):
    assert name in model_flags.MODEL_FLAG_NAMES
  assert (FLAGS["shakedrop"].default, FLAGS["shakedrop_pl"].default,
          FLAGS["shakedrop_level"].default) == (False, 0.5, "batch")
  was_parsed = FLAGS.is_parsed()
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(["test", "--depth=8", "--alpha=6", "--nobottleneck", "--shakedrop",
           "--shakedrop_pl=0.25", "--shakedrop_level=sample"])
    kwargs = model_flags.model_kwargs()
    assert (kwargs["shakedrop"], kwargs["shakedrop_pl"],
            kwargs["shakedrop_level"]) == (True, 0.25, "sample")
    model = model_lib.PyramidNet(**kwargs)
    assert model.stages[-1][-1].shakedrop.keep == pytest.approx(0.25)
    assert model.stages[0][0].shakedrop.level == "sample"
    FLAGS.unparse_flags()
    with pytest.raises(flags.IllegalFlagValueError):
      FLAGS(["test", "--shakedrop_pl=1.5"])
  finally:
    FLAGS.unparse_flags()
    if was_parsed:
      FLAGS(["test", *[l for l in saved.splitlines() if l]])


def test_describe_reports_shakedrop_only_when_on():
  repo = REPO_ROOT
  args = [sys.executable, "-m", "pyramidnet_tf.describe", "--depth=20",
          "--alpha=12", "--nobottleneck"]
  env = dict(os.environ, PYTHONPATH=repo)

  def describe(*extra):
    result = subprocess.run(args + list(extra), cwd=repo, env=env,
                            capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout
  assert "ShakeDrop" not in describe()
  text = describe("--shakedrop", "--shakedrop_level=pixel")
  assert ("ShakeDrop: level=pixel, keep probability 0.9444 (unit 1) -> 0.5 "
          "(unit 9)") in text
  payload = json.loads(describe("--shakedrop", "--shakedrop_pl=0.2",
                                "--json"))
  assert payload["shakedrop"]["p_L"] == 0.2
  assert payload["shakedrop"]["p_first"] == pytest.approx(1 - 0.8 / 9)
  assert "shakedrop" not in json.loads(describe("--json"))


def test_saved_model_keeps_the_eval_scaling(tiny_pyramidnet, tmp_path):
  model = tiny_pyramidnet(8, 6, shakedrop=True, shakedrop_pl=0.1)

  class Serving(tf.Module):

    def __init__(self):
      super().__init__()
      self.model = model

    @tf.function(input_signature=[tf.TensorSpec([None, 32, 32, 3])])
    def logits(self, images):
      return self.model(images, training=False)

  tf.saved_model.save(Serving(), str(tmp_path / "sm"))
  loaded = tf.saved_model.load(str(tmp_path / "sm"))
  x = tf.random.stateless_normal([2, 32, 32, 3], [4, 2])
  np.testing.assert_allclose(loaded.logits(x).numpy(), model(x).numpy(),
                             rtol=1e-5, atol=1e-5)

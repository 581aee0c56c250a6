"""Fine-tuning's parts: --freeze, per-variable learning rates, weight copy."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import finetune
from pyramidnet_tf.training import finetune_rules
from pyramidnet_tf.training import optim
from pyramidnet_tf.training import schedules
from pyramidnet_tf.training import step as step_lib

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("value,expected", [
    ("none", ("none", 0)), ("stem", ("stem", 0)), ("stages:2", ("stages", 2)),
    ("backbone", ("backbone", 0))])
def test_parse_freeze(value, expected):
  assert finetune_rules.parse_freeze(value) == expected


@pytest.mark.parametrize("value", ["all", "stages:0", "stages:", "stage:1",
                                   "stages:x", ""])
def test_bad_freeze_lists_the_choices(value):
  with pytest.raises(finetune_rules.FinetuneError,
                     match=r"--freeze must be one of none, stem, stages:N, "
                     r"backbone"):
    finetune_rules.parse_freeze(value)


def test_more_stages_than_the_network_has_is_an_error():
  finetune_rules.check_freeze_fits("stages:4", "imagenet")
  with pytest.raises(finetune_rules.FinetuneError, match="has 3 stages"):
    finetune_rules.check_freeze_fits("stages:4", "cifar10")


def test_lr_scales_match_torch_param_groups_and_frozen_never_moves():
  """Scale 0.5 is torch's param group at lr/2; scale 0 (frozen) gets neither
  the gradient step nor weight decay nor momentum."""
  rng = np.random.default_rng(0)
  w0, b0, f0 = (rng.normal(size=s).astype(np.float32)
                for s in ((3, 4), (4,), (5,)))
  grads = [[rng.normal(size=s).astype(np.float32) for s in ((3, 4), (4,))]
           for _ in range(3)]
  tw, tb = torch.nn.Parameter(torch.tensor(w0)), torch.nn.Parameter(
      torch.tensor(b0))
  topt = torch.optim.SGD([{"params": [tw], "lr": 0.05},
                          {"params": [tb], "lr": 0.1}], lr=0.1, momentum=0.9,
                         nesterov=True, weight_decay=0.1)
  w, b, frozen = (tf.Variable(w0, name="kernel"), tf.Variable(b0, name="bias"),
                  tf.Variable(f0, name="gamma"))
  scales = {id(w): 0.5, id(b): 1.0, id(frozen): 0.0}
  opt = optim.NesterovSGD([w, frozen, b], 0.9, True, 0.1,
                          lr_scale=lambda v: scales[id(v)])
  assert [v.name for v in opt.trained_variables] == [w.name, b.name]
  for gw, gb in grads:
    tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
    topt.step()
    opt.apply([tf.constant(gw), tf.constant(gb)], tf.constant(0.1))
  np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(b.numpy(), tb.detach().numpy(), rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_array_equal(frozen.numpy(), f0)
  np.testing.assert_array_equal(opt.slots[1].numpy(), np.zeros(5))
  with pytest.raises(ValueError, match="3 gradients for 2 variables"):
    opt.apply([tf.constant(gw), tf.constant(gb), tf.constant(gb)], 0.1)


def _values(variables):
  return [v.numpy().copy() for v in variables]


def _one_step(model, freeze_value, backbone_lr_scale=1.0):
  frozen = finetune.freeze(model, freeze_value)
  scales = finetune.lr_scales(model, frozen, backbone_lr_scale)
  opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-2,
                          lr_scale=lambda v: scales[id(v)])
  train_step = step_lib.TrainStep(
      strategy=tf.distribute.get_strategy(), model=model, optimizer=opt,
      schedule=schedules.Schedule("step", 0.1, 10, 100),
      global_step=tf.Variable(0, dtype=tf.int64), global_batch=8)
  rng = np.random.default_rng(3)
  images = tf.constant(rng.normal(size=(8, 16, 16, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, 10, 8).astype(np.int32))
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  train_step.loop(iter(dataset), tf.constant(2))
  return frozen


@pytest.mark.parametrize("freeze_value", ["stem", "stages:1", "backbone"])
def test_frozen_parts_and_their_bn_statistics_stay_bit_for_bit(
    tiny_pyramidnet, freeze_value):
  model = tiny_pyramidnet(seed=1)
  parts = finetune.frozen_modules(model, freeze_value)
  frozen_vars = [v for m in parts for v in m.variables]   # moving stats too
  frozen_ids = {id(v) for v in frozen_vars}
  others = [v for v in model.variables if id(v) not in frozen_ids]
  before_frozen, before_others = _values(frozen_vars), _values(others)
  frozen = _one_step(model, freeze_value)
  assert {id(v) for v in frozen} == {
      id(v) for m in parts for v in m.trainable_variables}
  for v, old in zip(frozen_vars, before_frozen):
    np.testing.assert_array_equal(v.numpy(), old, err_msg=v.name)
  moved = [v.name for v, old in zip(others, before_others)
           if not np.array_equal(v.numpy(), old)]
  # Every unfrozen variable moved: weights, and BN statistics in train mode.
  assert len(moved) == len(others), sorted(
      set(v.name for v in others) - set(moved))
  if freeze_value == "backbone":
    assert sorted(moved) == sorted([model.fc.kernel.name, model.fc.bias.name])


def test_backbone_lr_scale_scales_the_first_step_of_the_backbone_only(
    tiny_pyramidnet):
  """From equal starts and data, the first update of a backbone weight at
  scale 0.25 is a quarter of the one at scale 1; the head's is equal."""
  deltas = {}
  for scale in (1.0, 0.25):
    model = tiny_pyramidnet(seed=2)
    probes = [model.layer2[0].conv1.kernel, model.fc.kernel]
    start = _values(probes)
    frozen = finetune.freeze(model, "none")
    scales = finetune.lr_scales(model, frozen, scale)
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-2,
                            lr_scale=lambda v, s=scales: s[id(v)])
    train_step = step_lib.TrainStep(
        strategy=tf.distribute.get_strategy(), model=model, optimizer=opt,
        schedule=schedules.Schedule("step", 0.1, 10, 100),
        global_step=tf.Variable(0, dtype=tf.int64), global_batch=8)
    rng = np.random.default_rng(4)
    images = tf.constant(rng.normal(size=(8, 16, 16, 3)).astype(np.float32))
    labels = tf.constant(rng.integers(0, 10, 8).astype(np.int32))
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    train_step.loop(iter(dataset), tf.constant(1))
    deltas[scale] = [v.numpy() - s for v, s in zip(probes, start)]
  np.testing.assert_allclose(deltas[0.25][0], 0.25 * deltas[1.0][0],
                             rtol=1e-3, atol=1e-7)
  np.testing.assert_allclose(deltas[0.25][1], deltas[1.0][1], rtol=1e-3,
                             atol=1e-7)
  assert np.abs(deltas[1.0][0]).max() > 0


def test_copy_weights_keeps_or_replaces_the_head(tiny_pyramidnet):
  source = tiny_pyramidnet(seed=5)
  same = tiny_pyramidnet(seed=6)
  count = finetune.copy_weights(source, same, False, "src")
  assert count == len(source.variables)
  for a, b in zip(source.variables, same.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  other = tiny_pyramidnet(seed=7, num_classes=3)
  head = other.fc.kernel.numpy().copy()
  finetune.copy_weights(source, other, True, "src")
  np.testing.assert_array_equal(other.fc.kernel.numpy(), head)
  np.testing.assert_array_equal(other.conv1.kernel.numpy(),
                                source.conv1.kernel.numpy())


def test_copy_weights_names_the_variable_that_does_not_fit(tiny_pyramidnet):
  source = tiny_pyramidnet(seed=5)
  wider = tiny_pyramidnet(alpha=8, seed=5)
  with pytest.raises(finetune_rules.FinetuneError,
                     match=r"--init_from=src does not fit the model: "
                     r"layer1\.0\.\S+: \(\d+.*\) in src, \(\d+.*\) here"):
    finetune.copy_weights(source, wider, True, "src")
  deeper = tiny_pyramidnet(depth=14, seed=5)
  with pytest.raises(finetune_rules.FinetuneError,
                     match=r"only in the flags model"):
    finetune.copy_weights(source, deeper, True, "src")


def test_new_head_when_classes_differ():
  assert finetune_rules.needs_new_head(10, None, 3, ["a", "b", "c"])
  assert not finetune_rules.needs_new_head(3, None, 3, ["a", "b", "c"])
  new_head = finetune_rules.needs_new_head
  assert not new_head(3, ["a", "b", "c"], 3, ("a", "b", "c"))
  assert new_head(3, ["a", "b", "x"], 3, ("a", "b", "c"))


def test_resolve_architecture_takes_unset_flags_and_checks_set_ones():
  source = {"dataset": "cifar100", "depth": 20, "alpha": 12.0,
            "bottleneck": False, "mode": "add", "rounding": "py3"}
  assert finetune_rules.resolve_architecture("src", source, {}) == source
  got = finetune_rules.resolve_architecture("src", source,
                                      {"dataset": "cifar10", "alpha": 12})
  assert got == dict(source, dataset="cifar10", alpha=12)
  with pytest.raises(finetune_rules.FinetuneError,
                     match=r"--depth=110 but src holds depth 20.*drop these "
                     r"flags"):
    finetune_rules.resolve_architecture("src", source, {"depth": 110})
  with pytest.raises(finetune_rules.FinetuneError, match="--dataset=imagenet"):
    finetune_rules.resolve_architecture("src", source, {"dataset": "imagenet"})


def test_ema_of_frozen_parts_stays_exact(tiny_pyramidnet):
  """Blending a frozen weight with itself could round; its average is not
  blended, so an EMA export keeps the frozen weights bit for bit."""
  from pyramidnet_tf.model_dir import ema as ema_lib  # pylint: disable=g-import-not-at-top
  model = tiny_pyramidnet(seed=8)
  parts = finetune.frozen_modules(model, "stages:1")
  fixed = [v for m in parts for v in m.variables]
  frozen = finetune.freeze(model, "stages:1")
  scales = finetune.lr_scales(model, frozen, 1.0)
  averages = ema_lib.Ema(ema_lib.averaged_variables(model), 0.7, fixed=fixed)
  opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-2,
                          lr_scale=lambda v: scales[id(v)])
  train_step = step_lib.TrainStep(
      strategy=tf.distribute.get_strategy(), model=model, optimizer=opt,
      schedule=schedules.Schedule("step", 0.1, 10, 100),
      global_step=tf.Variable(0, dtype=tf.int64), global_batch=8,
      ema=averages)
  rng = np.random.default_rng(5)
  images = tf.constant(rng.normal(size=(8, 16, 16, 3)).astype(np.float32))
  labels = tf.constant(rng.integers(0, 10, 8).astype(np.int32))
  train_step.loop(iter(tf.data.Dataset.from_tensors((images, labels))
                       .repeat()), tf.constant(3))
  fixed_ids = {id(v) for v in fixed}
  pairs = list(zip(ema_lib.averaged_variables(model), averages.averages))
  for v, average in pairs:
    if id(v) in fixed_ids:
      np.testing.assert_array_equal(average.numpy(), v.numpy(), err_msg=v.name)
  moved = [v for v, average in pairs if id(v) not in fixed_ids and
           not np.array_equal(average.numpy(), v.numpy())]
  assert moved   # the others are averaged


@pytest.mark.parametrize("ema_decay", [0.5, 0.0])
def test_the_source_gives_its_ema_weights_when_it_kept_an_ema(
    tiny_pyramidnet, tmp_path, ema_decay):
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import ema as ema_lib  # pylint: disable=g-import-not-at-top
  model = tiny_pyramidnet(seed=9)
  averages = ema_lib.Ema(ema_lib.averaged_variables(model), 0.5, name="ema")
  expected_ema = _values(averages.averages)
  for v in model.trainable_variables:
    v.assign(v + 1.0)   # raw weights != averages
  raw = _values(ema_lib.averaged_variables(model))
  directory = str(tmp_path / "trained")
  tf.train.Checkpoint(model=model, **{ema_lib.CHECKPOINT_KEY: averages}).write(
      directory + "/ckpt-3")
  store.write_config(directory, model, {"ema_decay": ema_decay})
  source, _, path, used_ema = finetune.load_source(directory)
  assert path.endswith("ckpt-3") and used_ema == (ema_decay > 0)
  want = expected_ema if ema_decay > 0 else raw
  for v, value in zip(ema_lib.averaged_variables(source), want):
    np.testing.assert_array_equal(v.numpy(), value, err_msg=v.name)

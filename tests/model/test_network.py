"""PyramidNet model: exact parameter counts, output dims, structure, padding."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.model import complexity
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model import widths

# Spec section 3.1: (depth, alpha, mode, bottleneck, output dim) ->
# (CIFAR-10 total, CIFAR-100 total).
CIFAR_COUNTS = {
    (110, 4.75, "mul", False, 76): (1_762_206, 1_769_136),
    (110, 48, "add", False, 64): (1_772_706, 1_778_556),
    (110, 8, "mul", False, 128): (3_876_547, 3_888_157),
    (110, 84, "add", False, 100): (3_904_446, 3_913_536),
    (110, 27, "mul", False, 432): (28_361_693, 28_400_663),
    (110, 270, "add", False, 286): (28_485_477, 28_511_307),
    (164, 48, "add", True, 256): (1_715_442, 1_738_572),
    (164, 84, "add", True, 400): (3_757_494, 3_793_584),
    (164, 270, "add", True, 1144): (27_216_021, 27_319_071),
    (200, 240, "add", True, 1024): (26_752_702, 26_844_952),
    (236, 220, "add", True, 944): (26_969_046, 27_054_096),
    (272, 200, "add", True, 864): (26_210_842, 26_288_692),
}
# (depth, alpha, drop_rate, output dim) -> (total, without BN).
IMAGENET_COUNTS = {
    (200, 300, 0.0, 1456): (62_368_168, 62_082_432),
    (200, 450, 0.5, 2056): (116_775_213, 116_388_977),
    (101, 360, 0.0, 1696): (42_455_070, 42_290_174),
}
# Spec section 2: number of state_dict entries.
STATE_DICT_ENTRIES = {("cifar10", 110, 48): 931, ("cifar10", 164, 48): 1255,
                      ("cifar10", 200, 240): 1531, ("cifar10", 236, 220): 1807,
                      ("cifar10", 272, 200): 2083,
                      ("imagenet", 200, 300): 1531,
                      ("imagenet", 101, 360): 772}


def _bn_params(model):
  return sum(int(bn.gamma.shape[0]) * 2 for bn in model.batch_norms())


@pytest.mark.parametrize("row", sorted(CIFAR_COUNTS, key=str))
def test_cifar_parameter_counts_are_exact(row):
  depth, alpha, mode, bottleneck, dim = row
  for dataset, expected in zip(("cifar10", "cifar100"), CIFAR_COUNTS[row]):
    model = model_lib.PyramidNet(dataset, depth, alpha, bottleneck, mode=mode)
    assert model.arch.bottleneck == bottleneck
    assert model_lib.count_params(model) == expected, dataset
    assert model.num_features == dim
    assert model.num_classes == (10 if dataset == "cifar10" else 100)
    # The shape-only report that `describe` prints agrees with the variables.
    parts = complexity.report(model.arch, model.num_classes, 32)
    assert complexity.total_params(parts) == expected
    assert complexity.total_bn_params(parts) == _bn_params(model)
    key = (dataset, depth, alpha)
    if key in STATE_DICT_ENTRIES:
      assert len(model.torch_variables()) == STATE_DICT_ENTRIES[key]
    del model


@pytest.mark.parametrize("row", sorted(IMAGENET_COUNTS, key=str))
def test_imagenet_parameter_counts_are_exact(row):
  depth, alpha, drop_rate, dim = row
  total, without_bn = IMAGENET_COUNTS[row]
  model = model_lib.PyramidNet("imagenet", depth, alpha, drop_rate=drop_rate)
  assert model_lib.count_params(model) == total
  assert model_lib.count_params(model) - _bn_params(model) == without_bn
  assert model.num_features == dim
  assert model.num_classes == 1000
  parts = complexity.report(model.arch, 1000, 224)
  assert complexity.total_params(parts) == total
  key = ("imagenet", depth, alpha)
  if key in STATE_DICT_ENTRIES:
    assert len(model.torch_variables()) == STATE_DICT_ENTRIES[key]


def test_widths_attributes():
  model = model_lib.PyramidNet("cifar10", 110, 48, False)
  assert model.widths[:3] == [17, 18, 19] and model.widths[-1] == 64
  assert len(model.widths) == 54
  assert [len(s) for s in model.stage_widths] == [18, 18, 18]
  assert model.stage_widths[1][0] == 33
  assert [u.planes for s in model.stages for u in s] == model.widths


def test_forward_shapes_and_dtypes(tiny_pyramidnet):
  model = tiny_pyramidnet(20, 12, dataset="cifar100", num_classes=7)
  images = tf.random.normal([3, 32, 32, 3])
  assert model(images, training=False).shape == (3, 7)
  assert model(images, training=True).dtype == tf.float32
  logits = model(tf.cast(images, tf.bfloat16), training=True)
  assert logits.dtype == tf.float32 and logits.shape == (3, 7)
  assert all(v.dtype == tf.float32 for v in model.variables)
  # Any resolution: the head is a global mean.
  assert model(tf.zeros([1, 40, 24, 3])).shape == (1, 7)
  imagenet = model_lib.PyramidNet("imagenet", 26, 8, True)
  assert imagenet(tf.zeros([2, 64, 64, 3])).shape == (2, 1000)


def test_initialisation_follows_the_spec():
  tf.random.set_seed(1)
  model = model_lib.PyramidNet("cifar10", 272, 200, True)
  kernels = [c.kernel.numpy() for c in model.convs()]
  weights = np.concatenate([k.ravel() for k in kernels if k.shape[-1] == 864])
  # He normal, fan_out = 1 * 1 * 864 for the last unit's 1x1 expansion.
  assert abs(weights.std() - np.sqrt(2.0 / 864)) / np.sqrt(2.0 / 864) < 0.02
  last = model.stages[-1][-1].conv2.kernel.numpy()
  assert abs(last.std() - np.sqrt(2.0 / (9 * 216))) < 0.02 * np.sqrt(2 / 1944)
  for bn in model.batch_norms():
    np.testing.assert_array_equal(bn.gamma.numpy(), 1.0)
    np.testing.assert_array_equal(bn.beta.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), 1.0)
  bound = 1.0 / np.sqrt(864)
  assert np.abs(model.fc.kernel.numpy()).max() <= bound
  assert np.abs(model.fc.bias.numpy()).max() <= bound
  assert model.fc.kernel.numpy().std() > 0.9 * bound / np.sqrt(3)


def test_shortcut_pads_zero_channels_at_the_end_and_pools(tiny_pyramidnet):
  model = tiny_pyramidnet(20, 12)
  unit = model.stages[1][0]
  assert unit.stride == 2 and unit.out_channels > unit.in_channels
  x = tf.random.normal([2, 8, 8, unit.in_channels])
  shortcut = unit.shortcut(x).numpy()
  assert shortcut.shape == (2, 4, 4, unit.out_channels)
  pooled = x.numpy().reshape(2, 4, 2, 4, 2, -1).mean(axis=(2, 4))
  np.testing.assert_allclose(shortcut[..., :unit.in_channels], pooled,
                             rtol=1e-6)
  np.testing.assert_array_equal(shortcut[..., unit.in_channels:], 0.0)


def test_first_unit_of_mul_4_75_keeps_16_channels():
  model = model_lib.PyramidNet("cifar10", 110, 4.75, False, mode="mul")
  assert model.stages[0][0].in_channels == model.stages[0][0].out_channels == 16


def test_stride_two_convolutions_pad_symmetrically(tiny_pyramidnet):
  """TF's 'SAME' would pad only bottom/right; PyTorch pads both sides."""
  model = tiny_pyramidnet(20, 12)
  conv = model.stages[1][0].conv1
  assert conv.stride == 2
  x = tf.random.normal([1, 8, 8, conv.in_channels])
  ours = conv(x).numpy()
  padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  symmetric = tf.nn.conv2d(padded, conv.kernel, 2, "VALID").numpy()
  same = tf.nn.conv2d(x, conv.kernel, 2, "SAME").numpy()
  np.testing.assert_allclose(ours, symmetric, rtol=1e-5, atol=1e-6)
  assert np.abs(ours - same).max() > 1e-3


def test_sync_batch_norm_toggle(tiny_pyramidnet):
  model = tiny_pyramidnet(20, 12)
  assert not any(bn.cross_replica for bn in model.batch_norms())
  model.set_sync_batch_norm(True)
  assert all(bn.cross_replica for bn in model.batch_norms())
  assert len(model.batch_norms()) == 2 + 3 * 9


def test_dropout_only_in_training(tiny_pyramidnet):
  model = tiny_pyramidnet(20, 12, seed=0, drop_rate=0.5)
  x = tf.random.normal([4, 32, 32, 3])
  np.testing.assert_allclose(model(x).numpy(), model(x).numpy())
  # Training-mode BN uses the batch's own moments, so two calls on the same
  # batch differ only through dropout.
  logits = [model(x, training=True).numpy() for _ in range(2)]
  assert np.abs(logits[0] - logits[1]).max() > 1e-4
  assert model.features(x, training=False).shape == (4, model.num_features)
  assert model.trainable_variables  # dropout adds none
  assert model_lib.count_params(model) == model_lib.count_params(
      tiny_pyramidnet(20, 12))


@pytest.mark.parametrize("kwargs,message", [
    (dict(num_classes=0), "num_classes must be a positive integer"),
    (dict(drop_rate=1.0), "drop_rate must be in \\[0, 1\\)"),
    (dict(depth=111, bottleneck=False),
     "depth must be 6n\\+2 for basic units; nearest valid: 110, 116"),
    (dict(dataset="mnist"), "dataset must be one of"),
])
def test_bad_model_arguments(kwargs, message):
  args = dict(dataset="cifar10", depth=20, alpha=12, bottleneck=False)
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    model_lib.PyramidNet(**args)


def test_config_round_trip():
  model = model_lib.PyramidNet("cifar100", 29, 24, None, num_classes=5,
                               drop_rate=0.1, rounding="half_up")
  config = model_lib.config_of(model)
  again = model_lib.PyramidNet(**config)
  assert again.widths == model.widths
  assert model_lib.config_of(again) == config
  assert widths.architecture(**{k: config[k] for k in (
      "dataset", "depth", "alpha", "bottleneck", "mode", "rounding")}) == (
          model.arch)

"""Architecture inference: every format imports without model flags."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.convert import importer
from pyramidnet_tf.convert import infer
from pyramidnet_tf.model import widths
from pyramidnet_tf.model_dir import store as model_io
from tests import caffe_writer
from tests import torch7_writer
from tests import torch_pyramidnet

# The paper's rows, the authors' released ImageNet models and small ones.
ROWS = [
    ("cifar10", 110, 4.75, "mul"), ("cifar100", 110, 8, "mul"),
    ("cifar10", 110, 27, "mul"), ("cifar10", 110, 48, "add"),
    ("cifar10", 110, 84, "add"), ("cifar100", 110, 270, "add"),
    ("cifar10", 164, 48, "add"), ("cifar100", 164, 270, "add"),
    ("cifar10", 200, 240, "add"), ("cifar10", 236, 220, "add"),
    ("cifar100", 272, 200, "add"), ("imagenet", 200, 300, "add"),
    ("imagenet", 200, 450, "add"), ("imagenet", 101, 360, "add"),
    ("imagenet", 101, 250, "add"), ("imagenet", 152, 200, "add"),
    ("imagenet", 34, 100, "add"), ("cifar10", 20, 4, "add"),
    ("cifar100", 29, 24, "add"), ("imagenet", 26, 20, "add"),
]


def _observed(arch, num_classes=None, drop_rate=None):
  return infer.Observed(
      stem_kernel=7 if arch.dataset == "imagenet" else 3,
      stem_width=arch.stem_width, stage_units=arch.stage_units,
      bottleneck=arch.bottleneck, planes=tuple(arch.flat_planes),
      num_classes=num_classes or widths.NUM_CLASSES[arch.dataset],
      drop_rate=drop_rate)


@pytest.mark.parametrize("rounding", widths.ROUNDINGS)
def test_paper_networks_are_recognised_from_their_widths(rounding):
  for dataset, depth, alpha, mode in ROWS:
    bottleneck = {20: False, 26: True, 29: True}.get(depth)  # ambiguous
    arch = widths.architecture(dataset, depth, alpha, bottleneck, mode,
                               rounding)
    kwargs, conflicts = infer.infer(_observed(arch), {})
    assert not conflicts
    assert (kwargs["dataset"], kwargs["depth"], kwargs["alpha"],
            kwargs["bottleneck"], kwargs["mode"]) == (
                dataset, depth, alpha, arch.bottleneck, mode)


def test_rounding_is_inferred_where_it_matters():
  # 64 + 2 * 100/16 = 76.5: py3 rounds it to 76, half up to 77.
  half_up = widths.architecture("imagenet", 34, 100, None, "add", "half_up")
  assert half_up.flat_planes != widths.architecture(
      "imagenet", 34, 100).flat_planes
  kwargs, conflicts = infer.infer(_observed(half_up), {})
  assert not conflicts
  assert (kwargs["alpha"], kwargs["rounding"]) == (100, "half_up")
  # Told py3, it finds the py3 network with the same widths...
  kwargs, conflicts = infer.infer(_observed(half_up), {"rounding": "py3"})
  assert not conflicts and kwargs["alpha"] != 100
  assert widths.architecture("imagenet", 34, kwargs["alpha"]).flat_planes == (
      half_up.flat_planes)
  # ... but alpha 100 with py3 is not this file's network.
  _, conflicts = infer.infer(_observed(half_up),
                             {"rounding": "py3", "alpha": 100})
  assert conflicts == ["--alpha=100 --rounding=py3 (the file's widths "
                       "70,77,83,89,...,158,164 fit --alpha=100 --mode=add "
                       "--rounding=half_up)"]
  # Where both rules give the same widths, the format's own comes first.
  same = widths.architecture("cifar10", 20, 12, False)
  kwargs, _ = infer.infer(_observed(same), {}, ("half_up", "py3"))
  assert kwargs["rounding"] == "half_up"


def test_conflicting_and_unreadable_architectures():
  arch = widths.architecture("cifar100", 29, 24, True)
  kwargs, conflicts = infer.infer(
      _observed(arch), {"dataset": "imagenet", "depth": 38,
                        "bottleneck": False, "num_classes": 10})
  assert conflicts == [
      "--dataset=imagenet (the file has a 3x3 stem: cifar100)",
      "--nobottleneck (the file has bottleneck units)",
      "--depth=38 (the file has depth 29: 3/3/3 bottleneck units)",
      "--num_classes=10 (the file's classifier has 100 outputs)"]
  assert infer.flags_line(kwargs) == (
      "--dataset=cifar100 --depth=29 --alpha=24 --bottleneck --mode=add "
      "--rounding=py3 --drop_rate=0")
  # Given flags that agree are no conflict; dropout is compared when known.
  _, conflicts = infer.infer(_observed(arch, drop_rate=0.5),
                             {"depth": 29, "alpha": 24.0, "drop_rate": 0.25})
  assert conflicts == ["--drop_rate=0.25 (the file has dropout 0.5)"]
  odd = infer.Observed(3, 16, (1, 1, 1), False, (17, 40, 18), 10, None)
  with pytest.raises(infer.InferenceError,
                     match="the unit widths 17,40,18 follow neither"):
    infer.infer(odd, {})
  with pytest.raises(infer.InferenceError, match="the stem has 24 channels"):
    infer.infer(infer.Observed(3, 24, (1, 1, 1), False, (25, 26, 27), 10,
                               None), {})


def _import_and_compare(net, path, size, out, **given):
  _, metadata = importer.import_checkpoint(str(path), str(out), **given)
  model, _ = model_io.load_model(str(out))
  x = np.random.RandomState(1).randn(2, size, size, 3).astype(np.float32)
  got = model(tf.constant(x), training=False).numpy()
  error = torch_pyramidnet.max_relative_error(
      got, torch_pyramidnet.logits(net, x))
  return metadata, error


def test_pytorch_checkpoint_without_model_flags(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar100", 29, 24, True, seed=1)
  path = tmp_path / "model_best.pth.tar"
  torch_pyramidnet.save_like_authors(net, str(path))
  metadata, error = _import_and_compare(net, path, 32, tmp_path / "m")
  assert error <= 1e-5
  assert metadata["model_flags"] == (
      "--dataset=cifar100 --depth=29 --alpha=24 --bottleneck --mode=add "
      "--rounding=py3 --drop_rate=0")
  assert metadata["inferred_from"] == "the file's structure"


def test_npz_of_a_multiplicative_network_without_model_flags(tmp_path):
  net = torch_pyramidnet.randomize(torch_pyramidnet.TorchPyramidNet(
      "cifar10", 20, 3, False, mode="mul"), seed=2).eval()
  path = tmp_path / "weights.npz"
  np.savez(str(path), **{k: v.numpy() for k, v in net.state_dict().items()})
  metadata, error = _import_and_compare(net, path, 32, tmp_path / "m")
  assert error <= 1e-5
  assert metadata["model_flags"].startswith(
      "--dataset=cifar10 --depth=20 --alpha=3 --nobottleneck --mode=mul")


def test_torch7_model_without_model_flags_reads_its_dropout(tmp_path):
  net = torch_pyramidnet.random_eval_net("imagenet", 26, 20, True, seed=3)
  path = tmp_path / "model.t7"
  torch7_writer.save_fb_resnet_model(str(path), net, dropout=0.5)
  metadata, error = _import_and_compare(net, path, 64, tmp_path / "m")
  assert error <= 1e-5
  # Torch7 code rounds half up, but this file's first width is py3's
  # round(66.5) = 66, and the inference sees it.
  assert metadata["model_flags"] == (
      "--dataset=imagenet --depth=26 --alpha=20 --bottleneck --mode=add "
      "--rounding=py3 --drop_rate=0.5")
  with pytest.raises(importer.ArchitectureConflict,
                     match="--drop_rate=0.2 \\(the file has dropout 0.5\\)"):
    importer.import_checkpoint(str(path), str(tmp_path / "x"), drop_rate=0.2)
  assert not (tmp_path / "x").exists()


def test_caffe_model_without_model_flags(tmp_path):
  net = torch_pyramidnet.random_eval_net("cifar10", 20, 4, False, seed=4)
  path = tmp_path / "model.caffemodel"
  caffe_writer.save(str(path), net)
  metadata, error = _import_and_compare(net, path, 32, tmp_path / "m",
                                        depth=20)  # agreeing flags are fine
  assert error <= 1e-5
  assert metadata["model_flags"].startswith(
      "--dataset=cifar10 --depth=20 --alpha=4 --nobottleneck")
  with pytest.raises(importer.ArchitectureConflict) as error:
    importer.import_checkpoint(str(path), str(tmp_path / "x"), depth=20,
                               alpha=5)
  message = str(error.value)
  # The loader's unit-level report comes first, then the flags at fault.
  assert "unit 1 of 9" in message
  assert ("the model flags disagree with the file: --alpha=5 (the file's "
          "widths 16,17,17,18,...,20,20 fit --alpha=4 --mode=add "
          "--rounding=py3). Without them it imports as --dataset=cifar10 "
          "--depth=20 --alpha=4") in message
  assert not (tmp_path / "x").exists()

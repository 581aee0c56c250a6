"""imgclsmob / pytorchcv releases: pytorchcv's own networks, saved as released.

The networks are built by pytorchcv itself (random weights, non-trivial BN
statistics; nothing is downloaded), saved as a bare state_dict under the
release file name ``<model_name>-<error*100>-<sha1 prefix>.pth``, imported
without model flags and compared logit by logit in eval mode.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import torch
from pytorchcv.models import pyramidnet as pcv_imagenet
from pytorchcv.models import pyramidnet_cifar as pcv_cifar
from pytorchcv.models.common import model_store

from pyramidnet_tf.convert import imgclsmob
from pyramidnet_tf.convert import importer
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import access
from pyramidnet_tf.model_dir import store as model_io
from tests import REPO_ROOT
from tests import torch_pyramidnet

# The smallest PyramidNet pytorchcv defines for each dataset.
CIFAR_RELEASES = ("pyramidnet110_a48_cifar10", "pyramidnet110_a48_cifar100",
                  "pyramidnet110_a48_svhn")


def _release_path(directory, model_name):
  """Where a release of ``model_name`` is saved, named as imgclsmob names it."""
  _, error, sha1, _ = model_store.get_model_metainfo_dict()[model_name]
  return os.path.join(str(directory), f"{model_name}-{error}-{sha1[:8]}.pth")


def _save_release(net, directory, model_name):
  path = _release_path(directory, model_name)
  torch.save(net.state_dict(), path)
  return path


def _logits_match(net, out, size, seed=1):
  model, _ = model_io.load_model(out)
  x = np.random.RandomState(seed).randn(2, size, size, 3).astype(np.float32)
  ref = torch_pyramidnet.logits(net.eval(), x)
  got = model(tf.constant(x), training=False).numpy()
  return torch_pyramidnet.max_relative_error(got, ref)


@pytest.mark.parametrize("model_name", CIFAR_RELEASES)
def test_cifar_and_svhn_releases_import_without_model_flags(model_name,
                                                             tmp_path):
  net = torch_pyramidnet.randomize(getattr(pcv_cifar, model_name)(), seed=4)
  path = _save_release(net, tmp_path, model_name)
  out = str(tmp_path / "model")
  _, metadata = importer.import_checkpoint(path, out)
  dataset = "cifar100" if model_name.endswith("cifar100") else "cifar10"
  assert metadata["model_flags"] == (
      f"--dataset={dataset} --depth=110 --alpha=48 --nobottleneck --mode=add "
      "--rounding=py3 --drop_rate=0")
  assert metadata["inferred_from"].endswith(
      f"matching the release name {model_name}")
  assert metadata["parameters"] == (1778556 if dataset == "cifar100" else
                                    1772706)
  assert metadata["source"] == "imgclsmob" and metadata["format"] == "pytorch"
  assert metadata["published_error"] == {
      "pyramidnet110_a48_cifar10": 3.72, "pyramidnet110_a48_cifar100": 20.95,
      "pyramidnet110_a48_svhn": 2.47}[model_name]
  assert _logits_match(net, out, 32) <= 1e-5
  # evaluate / export / predict feed it as imgclsmob did.
  config = model_io.read_config(out)
  preprocessing = access.preprocessing_of(config["metadata"], config["model"])
  np.testing.assert_allclose(preprocessing.mean,
                             [0.4914 * 255, 0.4822 * 255, 0.4465 * 255])
  np.testing.assert_allclose(preprocessing.std,
                             [0.2023 * 255, 0.1994 * 255, 0.2010 * 255])
  names = access.class_names_of(config["metadata"], 10)
  if model_name.endswith("svhn"):
    assert names == [str(d) for d in range(10)]


def test_bottleneck_cifar_release_naming(tmp_path):
  """A 9n+2 bottleneck network (pytorchcv's ``_bn`` models), kept small."""
  net = torch_pyramidnet.randomize(pcv_cifar.get_pyramidnet_cifar(
      num_classes=100, blocks=20, alpha=24, bottleneck=True), seed=2)
  path = str(tmp_path / "pyramidnet20_a24_bn_cifar100-2000-0123abcd.pth")
  torch.save(net.state_dict(), path)
  out = str(tmp_path / "model")
  _, metadata = importer.import_checkpoint(path, out)
  assert metadata["model_flags"].startswith(
      "--dataset=cifar100 --depth=20 --alpha=24 --bottleneck")
  assert _logits_match(net, out, 32) <= 1e-5


def test_imagenet_release(tmp_path):
  """pytorchcv's ImageNet PyramidNet builder at depth 50 (its 101 is 42M
  parameters; its structure is checked in the next test), at 64x64."""
  net = torch_pyramidnet.randomize(pcv_imagenet.get_pyramidnet(
      blocks=50, alpha=48), seed=3)
  net.features.final_pool = torch.nn.AdaptiveAvgPool2d(1)  # 64x64 input
  path = str(tmp_path / "pyramidnet50_a48-2500-0123abcd.pth")
  torch.save(net.state_dict(), path)
  out = str(tmp_path / "model")
  _, metadata = importer.import_checkpoint(path, out)
  assert metadata["model_flags"] == (
      "--dataset=imagenet --depth=50 --alpha=48 --bottleneck --mode=add "
      "--rounding=py3 --drop_rate=0")
  config = model_io.read_config(out)
  preprocessing = access.preprocessing_of(config["metadata"], config["model"])
  np.testing.assert_allclose(preprocessing.mean, [123.675, 116.28, 103.53])
  assert _logits_match(net, out, 64) <= 1e-5


def test_imagenet_101_a360_structure_and_parameters():
  net = pcv_imagenet.pyramidnet101_a360()
  state = imgclsmob.to_author_names(
      {k: v.numpy() for k, v in net.state_dict().items()})
  release = imgclsmob.parse_release_name(
      "pyramidnet101_a360-0543-7f1747f8.pth")
  kwargs, how, conflicts = importer.resolve_architecture(
      lambda: importer.infer.observe_state_dict(state), {}, "pytorch",
      release)
  assert not conflicts and how.endswith("release name pyramidnet101_a360")
  assert (kwargs["dataset"], kwargs["depth"], kwargs["alpha"],
          kwargs["bottleneck"]) == ("imagenet", 101, 360, True)
  model = model_lib.PyramidNet(**kwargs)
  assert model_lib.count_params(model) == 42455070
  # Every key and shape matches (the name-by-name check of the loader).
  assert len(importer.pytorch.check_state_dict(model, state)) == len(
      [k for k in state if not k.endswith("num_batches_tracked")])


def test_release_names():
  name = imgclsmob.parse_release_name(
      "/m/pyramidnet272_a200_bn_cifar100-1619-98bc2f48.pth")
  assert (name.model_name, name.depth, name.alpha, name.bottleneck,
          name.dataset, name.error) == (
              "pyramidnet272_a200_bn_cifar100", 272, 200.0, True, "cifar100",
              16.19)
  svhn = imgclsmob.parse_release_name("pyramidnet110_a84_svhn-0243-971576c6.pth")
  assert svhn.model_kwargs()["dataset"] == "cifar10" and not svhn.bottleneck
  assert imgclsmob.parse_release_name("model_best.pth.tar") is None


def test_name_that_disagrees_with_the_shapes_is_refused(tmp_path):
  net = pcv_cifar.get_pyramidnet_cifar(num_classes=10, blocks=20, alpha=12,
                                       bottleneck=False)
  path = str(tmp_path / "pyramidnet110_a48_cifar10-0372-eb185645.pth")
  torch.save(net.state_dict(), path)
  out = tmp_path / "model"
  with pytest.raises(importer.ArchitectureConflict,
                     match="the file name says pyramidnet110_a48_cifar10, "
                     "but its shapes hold --dataset=cifar10 --depth=20 "
                     "--alpha=12 .*depth 110 \\(shapes: 20\\)"):
    importer.import_checkpoint(path, str(out))
  assert not out.exists()
  # Model flags that fit the shapes override the name.
  _, metadata = importer.import_checkpoint(path, str(out), depth=20)
  assert metadata["model_flags"].startswith("--dataset=cifar10 --depth=20")


def test_cli_imports_a_release_without_model_flags(tmp_path):
  net = torch_pyramidnet.randomize(pcv_cifar.get_pyramidnet_cifar(
      num_classes=10, blocks=14, alpha=12, bottleneck=False), seed=6)
  path = str(tmp_path / "pyramidnet14_a12_svhn-0300-0123abcd.pth")
  torch.save(net.state_dict(), path)
  out = str(tmp_path / "model")
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL="2")
  result = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.import_torch",
       f"--checkpoint={path}", f"--output_dir={out}"], cwd=REPO_ROOT, env=env,
      capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  assert ("architecture: --dataset=cifar10 --depth=14 --alpha=12 "
          "--nobottleneck --mode=add --rounding=py3 --drop_rate=0 (from the "
          "file's structure, matching the release name pyramidnet14_a12_svhn)"
          ) in result.stdout
  assert "format: pytorch" in result.stdout
  assert _logits_match(net, out, 32) <= 1e-5
  result = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.import_torch",
       f"--checkpoint={path}", f"--output_dir={out}2", "--alpha=16"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
      check=False)
  assert result.returncode == 2  # a model flag the file contradicts: usage
  assert ("the model flags disagree with the file: --alpha=16 (the file's "
          "widths 18,20,22,24,26,28 fit --alpha=12 --mode=add "
          "--rounding=py3)") in result.stderr
  assert "Traceback" not in result.stderr
  assert not os.path.exists(f"{out}2")

"""Every flagfile parses, states its row, error and run command, and builds
the paper's architecture (output dim as the paper's table)."""

import glob
import os
import re

import pytest
from absl import flags

from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.cli import train_flags  # pylint: disable=unused-import # noqa: F401
from tests import train_fixtures as fx

FLAGS = flags.FLAGS
FILES = sorted(glob.glob(os.path.join(fx.REPO, "flags", "**", "*.flags"),
                         recursive=True))


def test_all_rows_are_there():
  names = [os.path.relpath(p, fx.REPO) for p in FILES]
  assert len([n for n in names if n.startswith("flags/cifar10/")]) == 12
  assert len([n for n in names if n.startswith("flags/cifar100/")]) == 12
  assert len([n for n in names if n.startswith("flags/imagenet/")]) == 3
  assert "flags/smoke.flags" in names
  assert sorted(n for n in names if n.startswith("flags/recipes/")) == sorted(
      f"flags/recipes/{name}.flags" for name in RECIPES)


# What each recipe's source states (spec 4.4, 4.5; AutoAugment's
# PyramidNet+ShakeDrop hyper-parameters; ShakeDrop authors' README).
_AUTOAUGMENT_NET = dict(depth=272, alpha=200.0, bottleneck=True,
                        shakedrop=True, shakedrop_pl=0.5,
                        shakedrop_level="sample", batch_size=64,
                        epochs=1800.0, lr=0.05, lr_schedule="cosine",
                        warmup_epochs=0.0, weight_decay=5e-5,
                        decay_bn_and_bias=True, clip_grad_norm=5.0,
                        cifar_convention="fb", cutmix_prob=0.0,
                        mixup_alpha=0.0)
RECIPES = {
    "cifar100_pyramidnet200_a240_cutmix": dict(
        dataset="cifar100", depth=200, alpha=240.0, bottleneck=True,
        batch_size=64, lr=0.25, epochs=300.0, lr_schedule="step",
        lr_decay_epochs=["150", "225"], weight_decay=1e-4, cutmix_beta=1.0,
        cutmix_prob=0.5, shakedrop=False, autoaugment="none",
        cutout_size=0, cifar_convention="pt"),
    "cifar10_pyramidnet272_a200_shakedrop": dict(
        _AUTOAUGMENT_NET, dataset="cifar10", autoaugment="none",
        cutout_size=0),
    "cifar100_pyramidnet272_a200_shakedrop": dict(
        _AUTOAUGMENT_NET, dataset="cifar100", autoaugment="none",
        cutout_size=0),
    "cifar10_pyramidnet272_a200_shakedrop_autoaugment": dict(
        _AUTOAUGMENT_NET, dataset="cifar10", autoaugment="cifar10",
        cutout_size=16),
    "cifar100_pyramidnet272_a200_shakedrop_autoaugment": dict(
        _AUTOAUGMENT_NET, dataset="cifar100", autoaugment="cifar10",
        cutout_size=16),
    "cifar100_pyramidnet110_a270_shakedrop": dict(
        dataset="cifar100", depth=110, alpha=270.0, bottleneck=False,
        shakedrop=True, shakedrop_pl=0.5, shakedrop_level="pixel",
        batch_size=128, lr=0.5, epochs=300.0, lr_schedule="step",
        lr_decay_epochs=["150", "225"], weight_decay=1e-4,
        cifar_convention="fb", autoaugment="none", cutmix_prob=0.0),
}


@pytest.mark.parametrize("path", FILES, ids=lambda p: os.path.relpath(
    p, fx.REPO))
def test_flagfile(path):
  rel = os.path.relpath(path, fx.REPO)
  text = open(path).read()
  header = [l for l in text.splitlines() if l.startswith("#")]
  assert text.startswith("#")
  assert any(f"--flagfile={rel}" in l and "python -m pyramidnet_tf.train" in l
             for l in header), header
  if rel != "flags/smoke.flags":
    assert any(re.search(r"error.*\d+\.\d+ %", l) for l in header), header
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(["train", f"--flagfile={path}"])
    if FLAGS.dataset == "synthetic":
      return
    arch = model_flags.architecture()
    dim = re.search(r"output dim (\d+)", header[0])
    assert dim, header[0]
    assert arch.num_features == int(dim.group(1))
    if rel.startswith("flags/recipes/"):
      name = os.path.basename(rel)[:-len(".flags")]
      got = {key: FLAGS[key].value for key in RECIPES[name]}
      assert got == RECIPES[name]
      assert FLAGS.nesterov and FLAGS.momentum == 0.9
      return
    lr = 0.5 if FLAGS.dataset == "cifar100" else (
        0.1 if FLAGS.dataset == "cifar10" else 0.05)
    assert FLAGS.lr == lr and FLAGS.nesterov and FLAGS.weight_decay == 1e-4
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])

"""Every flagfile parses, states its row, error and run command, and builds
the paper's architecture (output dim as the paper's table)."""

import glob
import os
import re

import pytest
from absl import flags

from pyramidnet_tf import model_flags
from pyramidnet_tf import train_flags  # pylint: disable=unused-import
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
    lr = 0.5 if FLAGS.dataset == "cifar100" else (
        0.1 if FLAGS.dataset == "cifar10" else 0.05)
    assert FLAGS.lr == lr and FLAGS.nesterov and FLAGS.weight_decay == 1e-4
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])

"""Golden checkpoint layout: catches variable-name or shape drift.

Checkpoints written today must load tomorrow. The golden files list every
variable of a saved model (name and shape) for one basic and one bottleneck
ImageNet-style configuration; any rename, reorder of modules or shape change
fails here. Regenerate deliberately with:

    PYRAMIDNET_REGENERATE_GOLDEN=1 python -m pytest tests/training/test_checkpoint_golden.py
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests import REPO_ROOT
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io

GOLDEN = os.path.join(REPO_ROOT, "tests", "golden")
CONFIGS = {
    "cifar10_depth20_alpha12_basic.txt": ("cifar10", 20, 12, False),
    "imagenet_depth26_alpha20_bottleneck.txt": ("imagenet", 26, 20, True),
}


def _layout(directory):
  path = tf.train.latest_checkpoint(directory)
  return [f"{name} {list(shape)}"
          for name, shape in tf.train.list_variables(path)
          if not name.startswith("_CHECKPOINTABLE_OBJECT_GRAPH")]


@pytest.mark.parametrize("golden", sorted(CONFIGS))
def test_checkpoint_layout_matches_golden(golden, tmp_path):
  model = model_lib.PyramidNet(*CONFIGS[golden])
  model_io.save_model(model, str(tmp_path), {"purpose": "golden"})
  layout = _layout(str(tmp_path))
  path = os.path.join(GOLDEN, golden)
  if os.environ.get("PYRAMIDNET_REGENERATE_GOLDEN") == "1":
    with open(path, "w") as f:
      f.write("\n".join(layout) + "\n")
  with open(path) as f:
    assert layout == f.read().splitlines()


def test_save_and_load_round_trip(tiny_pyramidnet, tmp_path):
  model = tiny_pyramidnet(29, 24, None, dataset="cifar100", num_classes=5)
  model.bn1.moving_mean.assign(np.arange(16, dtype=np.float32))
  model_io.save_model(model, str(tmp_path), {"note": "x"}, step=7)
  loaded, metadata = model_io.load_model(str(tmp_path))
  assert metadata == {"note": "x"}
  assert loaded.num_classes == 5 and loaded.widths == model.widths
  for a, b in zip(model.variables, loaded.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-7")


def test_load_errors_are_clear(tiny_pyramidnet, tmp_path):
  with pytest.raises(FileNotFoundError, match="not a pyramidnet-tf model"):
    model_io.load_model(str(tmp_path))
  model = tiny_pyramidnet(20, 12)
  model_io.write_config(str(tmp_path), model)
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    model_io.load_model(str(tmp_path))

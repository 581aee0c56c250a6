"""``training.evaluation``: a model directory evaluated in-process, as the
evaluate tool runs it, without its command line."""

import pytest

from pyramidnet_tf import errors
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import evaluation
from tests import eval_reference
from tests import train_fixtures as fx

ONE_DEVICE = config_lib.RuntimeConfig(distribution="one_device")


def test_every_example_counted_once_with_the_newest_checkpoint(
    tiny_pyramidnet, tmp_path):
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=10,
                              train_per_class=1, eval_per_class=3, size=16,
                              shards=2)
  model_dir = str(tmp_path / "model")
  model_io.save_model(tiny_pyramidnet(seed=1), model_dir, step=3)
  model = tiny_pyramidnet(seed=2)
  model_io.save_model(model, model_dir, step=9)
  result = evaluation.evaluate_model_dir(
      model_dir=model_dir, runtime=ONE_DEVICE, eval_batch=8,
      data=config_lib.DataConfig(data_dir=data_dir, image_size=16))
  rows = eval_reference.logits_by_hand(
      model, manifest_lib.read_manifest(data_dir), result["split"], 16, 16)
  assert result["examples"] == len(rows) == 30   # 3 full batches + 6
  assert result["top1_error"] == pytest.approx(
      eval_reference.top1_error(rows), abs=1e-6)
  assert result["checkpoint"].endswith("ckpt-9") and result["ema"] is False


def test_scores_that_would_be_wrong_are_refused(tiny_pyramidnet, tmp_path):
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=3,
                              train_per_class=1, eval_per_class=1, size=16)
  model_dir = str(tmp_path / "model")
  model_io.save_model(tiny_pyramidnet(), model_dir)
  with pytest.raises(errors.FlagError, match=r"has 10 classes but .*lists 3"):
    evaluation.evaluate_model_dir(
        model_dir=model_dir, runtime=ONE_DEVICE, eval_batch=8,
        data=config_lib.DataConfig(data_dir=data_dir, image_size=16))

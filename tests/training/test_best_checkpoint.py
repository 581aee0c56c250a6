"""The best evaluation's checkpoint is kept outside rotation, by name."""

import json
import os

import tensorflow as tf

from pyramidnet_tf.model_dir import best as best_lib
from pyramidnet_tf.training import best_checkpoint


def _metrics(step, top1):
  return {"step": step, "split": "validation", "top1_error": top1,
          "top5_error": top1 / 4, "loss": top1 / 10, "examples": 100}


def test_only_a_better_evaluation_replaces_the_kept_checkpoint(tmp_path):
  model_dir = str(tmp_path)
  strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
  weight = tf.Variable(1.0)
  checkpoint = tf.train.Checkpoint(weight=weight)
  best = best_checkpoint.BestCheckpoint(model_dir=model_dir,
                                        strategy=strategy,
                                        checkpoint=checkpoint, uses_ema=True)
  assert best.best is None and best_lib.checkpoint_prefix(model_dir) is None
  assert best.offer(_metrics(10, 40.0))
  weight.assign(2.0)
  assert not best.offer(_metrics(20, 45.0))      # worse: kept as it was
  assert not best.offer(_metrics(30, 40.0))      # a tie keeps the earlier
  prefix = best_lib.checkpoint_prefix(model_dir)
  assert prefix == os.path.join(model_dir, "best", "ckpt-10")
  assert tf.train.load_checkpoint(prefix).get_tensor(
      "weight/.ATTRIBUTES/VARIABLE_VALUE") == 1.0
  weight.assign(3.0)
  assert best.offer(_metrics(40, 30.0))
  files = sorted(os.listdir(os.path.join(model_dir, "best")))
  assert files == ["best.json", "ckpt-40.data-00000-of-00001",
                   "ckpt-40.index"]
  record = json.load(open(best_lib.record_path(model_dir)))
  assert record == {"checkpoint": "ckpt-40", "ema": True, "examples": 100,
                    "loss": 3.0, "split": "validation", "step": 40,
                    "top1_error": 30.0, "top5_error": 7.5}
  # A resumed run starts from the record.
  again = best_checkpoint.BestCheckpoint(model_dir=model_dir,
                                         strategy=strategy,
                                         checkpoint=checkpoint,
                                         uses_ema=True)
  assert again.best["step"] == 40 and again.best["top1_error"] == 30.0
  assert not again.offer(_metrics(50, 35.0))


def test_a_record_naming_missing_files_names_nothing(tmp_path):
  model_dir = str(tmp_path)
  os.makedirs(best_lib.directory_of(model_dir))
  best_lib.write_record(model_dir, {"checkpoint": "ckpt-7", "step": 7})
  assert best_lib.read(model_dir) is None
  with open(best_lib.record_path(model_dir), "w") as f:
    f.write("{not json")
  assert best_lib.read(model_dir) is None

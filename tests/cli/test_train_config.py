"""The trainer CLI writes the whole config next to its checkpoints, and
model_config.json's flags record is derived from it."""

import json
import os

from pyramidnet_tf.training import config as config_lib
from tests import train_fixtures as fx


def test_a_run_writes_train_config_and_derives_model_config(tmp_path):
  data = fx.write_dataset(str(tmp_path / "data"), train_per_class=2,
                          eval_per_class=1)
  model_dir = str(tmp_path / "model")
  proc = fx.run_cli("pyramidnet_tf.train", [
      *fx.TINY_MODEL, f"--data_dir={data}", f"--model_dir={model_dir}",
      "--batch_size=8", "--train_steps=2", "--lr_decay_epochs=1",
      "--log_every_steps=1", "--steps_per_loop=1", "--seed=3"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  config = config_lib.read(model_dir)
  assert config.model.depth == 8 and config.model.alpha == 4
  assert config.schedule.train_steps == 2
  assert config.schedule.lr_decay_epochs == (1,)
  assert config.runtime.seed == 3
  assert config.output.model_dir == model_dir
  assert config.data.data_dir == data
  with open(os.path.join(model_dir, "model_config.json")) as f:
    saved = json.load(f)
  assert saved["metadata"]["flags"] == config.flat()

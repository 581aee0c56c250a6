"""Saving and loading a PyramidNet together with what rebuilds it.

A model directory holds TF checkpoints (``ckpt-N``, found through the
``checkpoint`` state file) whose object graph has the network under ``model``,
plus ``model_config.json``: the constructor arguments and metadata such as
where the weights came from. Any tool (evaluate, export, fine-tuning) can then
rebuild the network without being told its depth and alpha again.
"""

import json
import os
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf import model as model_lib

CONFIG_FILE = "model_config.json"


def write_config(directory: str, model: model_lib.PyramidNet,
                 metadata: Optional[Dict[str, Any]] = None) -> str:
  """Writes ``model_config.json`` (atomically) and returns its path."""
  tf.io.gfile.makedirs(directory)
  path = os.path.join(directory, CONFIG_FILE)
  payload = {"model": model_lib.config_of(model), "metadata": metadata or {}}
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "w") as f:
    f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
  tf.io.gfile.rename(tmp, path, overwrite=True)
  return path


def read_config(directory: str) -> Dict[str, Any]:
  path = os.path.join(directory, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {directory} is not a pyramidnet-tf model "
        "directory (expected one written by pyramidnet_tf.train or "
        "pyramidnet_tf.import_torch)")
  with tf.io.gfile.GFile(path) as f:
    return json.load(f)


def save_model(model: model_lib.PyramidNet, directory: str,
               metadata: Optional[Dict[str, Any]] = None,
               step: int = 0) -> str:
  """Writes the weights as checkpoint ``ckpt-<step>`` and the config."""
  write_config(directory, model, metadata)
  checkpoint = tf.train.Checkpoint(model=model)
  manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=None)
  return manager.save(checkpoint_number=step)


def load_model(directory: str, checkpoint_path: Optional[str] = None
               ) -> Tuple[model_lib.PyramidNet, Dict[str, Any]]:
  """Rebuilds the model of ``directory`` and restores its latest weights.

  Returns:
    (model, metadata). Every model variable must be present in the
    checkpoint; optimizer slots and counters of training checkpoints are
    allowed and ignored. Constructor args absent from an older
    ``model_config.json`` (e.g. ``shakedrop*``) take their defaults, which
    rebuild the network that config was written for.
  """
  config = read_config(directory)
  model = model_lib.PyramidNet(**config["model"])
  path = checkpoint_path or tf.train.latest_checkpoint(directory)
  if path is None:
    raise FileNotFoundError(f"no checkpoint in {directory} (it has "
                            f"{CONFIG_FILE} but no 'checkpoint' state file)")
  status = tf.train.Checkpoint(model=model).read(path)
  status.expect_partial()
  status.assert_existing_objects_matched()
  return model, config.get("metadata", {})

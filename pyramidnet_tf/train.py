"""Trains a PyramidNet: ``python -m pyramidnet_tf.train --flagfile=flags/...``.

The command line only: flags are parsed (the XLA compile cache is set up
while they are, see ``cli.compile_cache_flags``), turned into one validated
``TrainConfig`` (``cli.train_config``) before TensorFlow does any work, and
handed to ``training.trainer.train``. Expected failures end with one line
naming the flag or file; rerunning with the same --model_dir resumes.
"""

import logging as std_logging
import sys

from absl import app

from pyramidnet_tf.cli import compile_cache_flags
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import train_config
from pyramidnet_tf.cli import train_flags  # pylint: disable=unused-import # noqa: F401
from pyramidnet_tf.training import trainer


def train() -> dict:
  """Trains from the parsed flags; returns the trainer's result dict."""
  return trainer.train(train_config.from_flags())


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  std_logging.getLogger().setLevel(std_logging.INFO)
  from pyramidnet_tf.model_dir import access as model_dir  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loop  # pylint: disable=g-import-not-at-top
  try:
    train()
  except (train_config.ConfigError, trainer.TrainError,
          checkpointing.ConfigMismatchError, loop.NonFiniteLossError,
          checkpointing.CheckpointError, model_dir.ModelDirError) as e:
    sys.exit(f"pyramidnet_tf.train: error: {e}")


def run():
  # The compile cache is set up while flags are parsed: TF reads TF_XLA_FLAGS
  # once, from an absl after-init callback that runs before main.
  app.run(cli.guard("pyramidnet_tf.train", main),
          flags_parser=compile_cache_flags.parse_flags_and_configure)


if __name__ == "__main__":
  run()

"""Trains a PyramidNet on data prepared by data_prep.

  python -m pyramidnet_tf.train --recipe=cifar10/pyramidnet110_a48
      --data_dir=data/cifar10 --model_dir=runs/c110
  python -m pyramidnet_tf.train --alpha=48 --depth=164
      --data_dir=data/cifar10 --model_dir=runs/c164

A recipe is one of the shipped flagfiles, one per row of the paper's tables
and per published training recipe (--recipes lists them);
--flagfile=flags/cifar10/pyramidnet110_a48.flags names the same file.

Checkpoints, model_config.json, train_config.json and TensorBoard logs go to
--model_dir; running the same command again resumes from its newest intact
checkpoint.

SIGTERM, SIGUSR1 or Ctrl-C stop training after the step in progress (on
every worker), save a checkpoint of that step and exit with 143: rerun the
same command to resume. A second Ctrl-C aborts at once without saving.
"""

import logging as std_logging
import sys


from pyramidnet_tf import exit_codes
from pyramidnet_tf.cli import compile_cache_flags
from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import train_config
from pyramidnet_tf.cli import train_flags  # pylint: disable=unused-import # noqa: F401
from pyramidnet_tf.cli import usage

PROG = "pyramidnet_tf.train"


def main(argv):
  del argv  # console_base.run refuses positional arguments
  std_logging.getLogger().setLevel(std_logging.INFO)
  # Every flag is checked before TensorFlow is imported (seconds).
  try:
    config = train_config.from_flags()
  except train_config.ConfigError as e:
    sys.stderr.write(f"{PROG}: error: {e}\n")
    sys.exit(exit_codes.USAGE)
  # Before TensorFlow loads (seconds to a minute): a stop request from here
  # on is kept and acted on at the first step boundary.
  from pyramidnet_tf.training import preemption  # pylint: disable=g-import-not-at-top
  stop = preemption.StopSignals()
  stop.install()
  from pyramidnet_tf.model_dir import access as model_dir  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loop  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import trainer  # pylint: disable=g-import-not-at-top
  try:
    result = trainer.train(config, stop=stop)
  except (trainer.TrainError, checkpointing.ConfigMismatchError,
          loop.NonFiniteLossError, checkpointing.CheckpointError,
          model_dir.ModelDirError) as e:
    sys.exit(f"{PROG}: error: {e}")
  finally:
    stop.uninstall()
  code = exit_codes.FINISHED
  if result.get("preempted"):
    code = exit_codes.PREEMPTED
    saved = result.get("checkpoint")
    std_logging.warning(
        "stopped by %s at step %d/%d%s; rerun the same command to resume "
        "(exit code %d)", result.get("signal") or
        "another worker's stop request", result["step"],
        result["total_steps"],
        f", checkpoint {saved} saved" if saved else ", checkpoint saved",
        exit_codes.PREEMPTED)
  if result.get("workers", 1) > 1:
    from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
    distribute.leave_cluster(result["worker"], result["workers"], code)
  sys.exit(code)


def check_flags() -> None:
  """The flag values alone (``PYRAMIDNET_TF_CHECK_FLAGS=1``): every problem
  ``main`` would report before TensorFlow starts, except those of the
  files and environment the flags point at (--model_dir's writability,
  the --init_from source, Slurm's or the pod's variables).

  Raises:
    cli.FlagError: naming every problem (exit status 2, as ``main``).
  """
  try:
    train_config.from_flags(check_model_dir=False, check_environment=False)
  except train_config.ConfigError as e:
    raise cli.FlagError(str(e)) from None


def run():
  # The compile cache is set up while flags are parsed: TensorFlow reads
  # TF_XLA_FLAGS once, when it first lists its devices.
  console.run(PROG, main, doc=__doc__ + "\n" + exit_codes.help_text(),
              groups=usage.TRAIN_GROUPS,
              knobs=usage.TRAIN_KNOBS, check_flags=False,
              after_parse=compile_cache_flags.configure_after_parse,
              flags_check=check_flags)


if __name__ == "__main__":
  run()

"""``pyramidnet_tf.evaluate``'s own flags -> one validated ``EvaluateConfig``.

Why here: as for the trainer (``train_config``), the command line is read
in one place. The settings evaluate shares with the trainer (data
directory, image size, eval batch, devices and distribution) arrive as the
trainer's config sections, so the strategy and the eval batch follow the
same rules in both. No TensorFlow import: every check here runs before it
loads.
"""

import dataclasses
from typing import Optional

from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf.cli import common_flags  # pylint: disable=unused-import # noqa: F401
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf import paths as paths_lib
from pyramidnet_tf.training import config as config_lib

flags.DEFINE_string("split", None, "Split to evaluate; default: validation "
                    "or test, whichever the manifest has.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path, or best (the "
                    "best evaluation's, kept in --model_dir/best); default: "
                    "the newest intact one in --model_dir.")
flags.DEFINE_enum("use_ema", "auto", list(options.USE_EMA_CHOICES),
                  "Evaluate the EMA of the weights instead of the raw ones. "
                  "auto: when the training run kept one (--ema_decay > 0, "
                  "recorded in model_config.json).")

FLAGS = flags.FLAGS

# The global eval batch when --eval_batch_size is 0 (the trainer's is its
# --batch_size, which evaluate does not have).
DEFAULT_EVAL_BATCH = 100


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
  """One evaluation: which model, which data, on what devices.

  Attributes:
    model_dir: the model directory (trainer's or import_torch's).
    checkpoint: a checkpoint path, "best", or None for the newest intact.
    split: the split to evaluate; None: the manifest's eval split.
    use_ema: "auto", "yes" or "no".
    data: --data_dir, --image_size, --cifar_convention, --eval_batch_size.
    runtime: distribution, cluster, devices, --dtype, --channel_multiple.
  """
  model_dir: str
  checkpoint: Optional[str]
  split: Optional[str]
  use_ema: str
  data: config_lib.DataConfig
  runtime: config_lib.RuntimeConfig

  @property
  def eval_batch(self) -> int:
    """The requested global eval batch (rounded up to the replicas by
    ``evaluator.batch_for_replicas``)."""
    return self.data.eval_batch_size or DEFAULT_EVAL_BATCH


def from_flags(f=FLAGS) -> EvaluateConfig:
  """The validated configuration of evaluate's parsed flags.

  Args:
    f: parsed absl flag values (default: the program's).

  Raises:
    cli.FlagError: a required flag is missing or a directory is unusable;
      one line (one per problem) naming it.
    ValueError: TF_CONFIG is malformed, in one line.
  """
  if not f.model_dir:
    raise cli.FlagError("--model_dir is required (written by "
                        "pyramidnet_tf.train or pyramidnet_tf.import_torch)")
  if not f.data_dir:
    raise cli.FlagError("--data_dir is required: a directory written by "
                        "data_prep (manifest.json + TFRecords)")
  # Before TensorFlow starts (seconds): what is wrong on disk.
  problems = [p for p in (
      paths_lib.model_dir_problem(f.model_dir, checkpoint=f.checkpoint),
      paths_lib.data_dir_problem(f.data_dir)) if p]
  from pyramidnet_tf.runtime import cluster_env  # pylint: disable=g-import-not-at-top
  if f.cluster_resolver != "k8s_indexed":
    try:
      cluster_env.tf_config()  # a bad TF_CONFIG, reported with the rest
    except ValueError as e:
      problems.append(str(e))
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  config = EvaluateConfig(
      model_dir=f.model_dir, checkpoint=f.checkpoint, split=f.split,
      use_ema=f.use_ema, data=config_flags.section(config_lib.DataConfig, f),
      runtime=config_flags.section(config_lib.RuntimeConfig, f))
  return config

"""``pyramidnet_tf.export``'s flags -> one validated ``ExportConfig``.

Why here: as for the trainer and evaluate, the command line is read in one
place and the tool gets a typed value. The settings export shares with the
trainer (--data_dir, --image_size, --cifar_convention) arrive as the
trainer's ``DataConfig`` section and take their flag defaults from it; the
tool's own settings take theirs from ``ExportConfig``.

The flags are defined by ``define_flags``, which the tool calls when it is
imported, not by importing this module: --model_dir, --checkpoint,
--use_ema, ... are flags of other tools too, with other help texts, and
absl refuses a flag defined twice in one process (every module of ``cli/``
is imported together by the tests). No TensorFlow import: every check here
runs before it loads.
"""

import dataclasses
import functools
from typing import Optional

from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf import paths as paths_lib
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.training import config as config_lib

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """One export: which model, where the SavedModel goes, how it serves.

  Attributes:
    model_dir: the model directory (trainer's or import_torch's).
    export_dir: where the SavedModel is written.
    data: --data_dir (class names when the model records none; None for
      none), --image_size (0: the training run's) and --cifar_convention
      (for models without recorded preprocessing).
    checkpoint: a checkpoint path, "best", or None for the newest intact.
    top_k: classes the classify signature returns (>= 1).
    use_ema: "auto", "yes" or "no": export the EMA of the weights.
  """
  model_dir: str
  export_dir: str
  data: config_lib.DataConfig
  checkpoint: Optional[str] = None
  top_k: int = 5
  use_ema: str = "auto"


# Each default is its setting's dataclass default: the trainer's sections
# for the shared settings, ExportConfig for the tool's own.
_default = config_flags.default
_own = functools.partial(config_flags.field_default, ExportConfig)


def define_flags(flag_values=FLAGS) -> None:
  """Defines export's flags and their ranges (once per process).

  Args:
    flag_values: where to define them (default: the program's).
  """
  flags.DEFINE_string("model_dir", _default("model_dir"),
                      "Model directory (pyramidnet_tf.train or import_torch).",
                      flag_values=flag_values)
  flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.",
                      flag_values=flag_values)
  flags.DEFINE_string("data_dir", _default("data_dir"),
                      "Optional data directory whose manifest supplies class "
                      "names (when the model dir records none).",
                      flag_values=flag_values)
  flags.DEFINE_string("checkpoint", _own("checkpoint"), "Checkpoint path, or "
                      "best (the best evaluation's, kept in --model_dir/best);"
                      " default: the newest intact one.",
                      flag_values=flag_values)
  flags.DEFINE_integer("image_size", _default("image_size"),
                       "Override the serving image size; 0 = the training "
                       "run's.", flag_values=flag_values)
  flags.DEFINE_enum("cifar_convention", _default("cifar_convention"),
                    list(options.CIFAR_CONVENTIONS),
                    "CIFAR normalisation for models without recorded "
                    "preprocessing (see pyramidnet_tf.train --help).",
                    flag_values=flag_values)
  flags.DEFINE_integer("top_k", _own("top_k"),
                       "Classes returned by the classify signature.",
                       flag_values=flag_values)
  flags.DEFINE_enum("use_ema", _own("use_ema"), list(options.USE_EMA_CHOICES),
                    "Export the EMA of the weights instead of the raw ones. "
                    "auto: when the training run kept one (--ema_decay > 0, "
                    "recorded in model_config.json).",
                    flag_values=flag_values)
  cli.register_number_validator("image_size", 0, integer=True,
                                note="0 = the training run's size",
                                flag_values=flag_values)
  cli.register_number_validator("top_k", 1, integer=True,
                                flag_values=flag_values)


def from_flags(f=FLAGS) -> ExportConfig:
  """The validated configuration of export's parsed flags.

  Args:
    f: parsed absl flag values holding ``define_flags``' flags (default:
      the program's).

  Raises:
    cli.FlagError: a flag out of its range, a required flag missing, or a
      directory that is unusable; one line (one per problem) naming it.
  """
  problems = cli.flag_problems(f)
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  if not f.model_dir or not f.export_dir:
    raise cli.FlagError("--model_dir and --export_dir are required")
  # Before TensorFlow starts (seconds): what is wrong on disk.
  problems = [p for p in (
      paths_lib.model_dir_problem(f.model_dir, checkpoint=f.checkpoint),
      paths_lib.data_dir_problem(f.data_dir)) if p]
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  return ExportConfig(
      model_dir=f.model_dir, export_dir=f.export_dir,
      data=config_lib.DataConfig(data_dir=f.data_dir,
                                 image_size=f.image_size,
                                 cifar_convention=f.cifar_convention),
      checkpoint=f.checkpoint, top_k=f.top_k, use_ema=f.use_ema)

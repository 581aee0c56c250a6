"""``pyramidnet_tf.export_torch``'s flags -> one validated
``ExportTorchConfig``.

Why here: the command line is read in one place and the tool gets a typed
value, as for the trainer, evaluate and export. --model_dir takes its
default from the trainer's setting, the tool's own flags from
``ExportTorchConfig``.

The flags are defined by ``define_flags``, which the tool calls when it is
imported (its --model_dir, --checkpoint, --output, ... are other tools'
flags too, with other help texts; see ``export_config``). No TensorFlow
import: every check here runs before it (and PyTorch) loads.
"""

import dataclasses
import functools
from typing import Optional

from absl import flags

from pyramidnet_tf import paths as paths_lib
from pyramidnet_tf import options
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.convert import exporter

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class ExportTorchConfig:
  """One export to the authors' PyTorch checkpoint layout.

  Attributes:
    model_dir: the model directory (trainer's or import_torch's).
    output: the .pth file to write.
    checkpoint: a checkpoint of ``model_dir``, "best", or None for the
      newest intact one.
    use_ema: "auto", "yes" or "no": write the EMA of the weights.
    overwrite: replace an existing ``output``.
  """
  model_dir: str
  output: str
  checkpoint: Optional[str] = None
  use_ema: str = "auto"
  overwrite: bool = False


_own = functools.partial(config_flags.field_default, ExportTorchConfig)


def define_flags(flag_values=FLAGS) -> None:
  """Defines export_torch's flags (once per process).

  Args:
    flag_values: where to define them (default: the program's).
  """
  flags.DEFINE_string("model_dir", config_flags.default("model_dir"),
                      "Model directory to export (trainer or import_torch "
                      "output: ckpt-N + model_config.json).",
                      flag_values=flag_values)
  flags.DEFINE_string("output", None,
                      "The .pth file to write (the authors' checkpoint "
                      "layout); an existing file is replaced only with "
                      "--overwrite.", flag_values=flag_values)
  flags.DEFINE_string("checkpoint", _own("checkpoint"),
                      "Checkpoint of --model_dir to export, or best (the best "
                      "evaluation's, kept in --model_dir/best); default: the "
                      "newest intact one.", flag_values=flag_values)
  flags.DEFINE_enum("use_ema", _own("use_ema"), list(options.USE_EMA_CHOICES),
                    "Write the EMA of the weights instead of the raw ones. "
                    "auto: when the training run kept one (--ema_decay > 0).",
                    flag_values=flag_values)
  flags.DEFINE_bool("overwrite", _own("overwrite"),
                    "Replace an existing --output.", flag_values=flag_values)


def from_flags(f=FLAGS) -> ExportTorchConfig:
  """The validated configuration of export_torch's parsed flags.

  Args:
    f: parsed absl flag values holding ``define_flags``' flags (default:
      the program's).

  Raises:
    cli.FlagError: a required flag missing, a model directory that is
      unusable or an --output that cannot be written
      (``exporter.check_output``); one line naming it.
  """
  missing = [f"--{n}" for n in ("model_dir", "output") if not f[n].value]
  if missing:
    raise cli.FlagError(f"{' and '.join(missing)} required")
  # Before TensorFlow and PyTorch load (seconds).
  problem = paths_lib.model_dir_problem(f.model_dir, checkpoint=f.checkpoint)
  if problem:
    raise cli.FlagError(problem)
  exporter.check_output(f.output, f.overwrite)
  return ExportTorchConfig(model_dir=f.model_dir, output=f.output,
                           checkpoint=f.checkpoint, use_ema=f.use_ema,
                           overwrite=f.overwrite)

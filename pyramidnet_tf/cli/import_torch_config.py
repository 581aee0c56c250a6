"""``pyramidnet_tf.import_torch``'s flags -> one validated
``ImportTorchConfig``.

Why here: the command line is read in one place and the tool gets a typed
value, as for the trainer and the other tools. The model flags are the
trainer's (``model_flags``, the ``ModelConfig`` section); import_torch
passes on only those given, since the file supplies the architecture. The
tool's own flags take their defaults from ``ImportTorchConfig``.

The tool's own flags are defined by ``define_flags``, which the tool calls
when it is imported (its --checkpoint, --output_dir, --overwrite are other
tools' flags too, with other help texts; see ``export_config``). Nothing
here imports TensorFlow or reads a file, so ``from_flags`` is also the
check of ``PYRAMIDNET_TF_CHECK_FLAGS=1``.
"""

import dataclasses
import functools
from typing import Any, Dict, FrozenSet

from absl import app
from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.training import config as config_lib

FLAGS = flags.FLAGS

# Each names a file or directory the import cannot do without.
REQUIRED = ("checkpoint", "output_dir")


@dataclasses.dataclass(frozen=True)
class ImportTorchConfig:
  """One import of released weights into a model directory.

  Attributes:
    checkpoint: the weight file to read.
    output_dir: the model directory to write.
    model: the model flags (their defaults where not given).
    given: the model flags given on the command line (or in a flagfile);
      the file supplies the others, and given ones must agree with it.
    format: the file's format, one of ``options.IMPORT_FORMATS`` ("auto":
      detected from its first bytes).
    overwrite: replace the model ``output_dir`` holds.
    trust_checkpoint: unpickle arbitrary Python objects in the file.
  """
  checkpoint: str
  output_dir: str
  model: config_lib.ModelConfig
  given: FrozenSet[str]
  format: str = "auto"
  overwrite: bool = False
  trust_checkpoint: bool = False

  @property
  def model_overrides(self) -> Dict[str, Any]:
    """The given model flags as ``importer.import_checkpoint``'s keyword
    arguments, in the model flags' order."""
    values = dataclasses.asdict(self.model)
    return {name: values[name] for name in model_flags.MODEL_FLAG_NAMES
            if name in self.given}


_own = functools.partial(config_flags.field_default, ImportTorchConfig)


def define_flags(flag_values=FLAGS) -> None:
  """Defines import_torch's own flags (once per process); importing
  ``model_flags`` defines the model flags.

  Args:
    flag_values: where to define them (default: the program's).
  """
  flags.DEFINE_string("checkpoint", None,
                      "PyTorch checkpoint (.pth/.pth.tar as the authors save "
                      "it, or a bare state_dict), an .npz of name -> array, a "
                      "Torch7 .t7 model (fb.resnet.torch) or a Caffe "
                      ".caffemodel.", flag_values=flag_values)
  flags.DEFINE_enum("format", _own("format"), list(options.IMPORT_FORMATS),
                    "File format of --checkpoint; auto detects it from the "
                    "file's first bytes (zip/pickle: pytorch, Torch7 header: "
                    "torch7, protobuf NetParameter: caffe).",
                    flag_values=flag_values)
  flags.DEFINE_string("output_dir", None,
                      "Model directory to write (TF checkpoint + "
                      "model_config.json).", flag_values=flag_values)
  flags.DEFINE_bool("overwrite", _own("overwrite"),
                    "Replace the model --output_dir holds (its checkpoints, "
                    "model_config.json and train_config.json; other files "
                    "are kept); without it such a directory is refused.",
                    flag_values=flag_values)
  flags.DEFINE_bool("trust_checkpoint", _own("trust_checkpoint"),
                    "Unpickle arbitrary Python objects in --checkpoint (only "
                    "for files you trust; default reads tensors and plain "
                    "types).", flag_values=flag_values)


def from_flags(f=FLAGS) -> ImportTorchConfig:
  """The validated configuration of import_torch's parsed flags, before
  TensorFlow starts (the file itself is read by the import).

  Args:
    f: parsed absl flag values holding ``define_flags``' flags and the
      model flags (default: the program's).

  Raises:
    cli.FlagError: naming a missing flag or a bad combination of the model
      flags (checked when --dataset, --depth and --alpha are all given).
  """
  for name in REQUIRED:
    if not f[name].value:
      raise cli.FlagError(f"--{name} is required")
  model = model_flags.model_config(f)
  given = config_flags.given(model_flags.MODEL_FLAG_NAMES, f)
  if all(name in given for name in ("dataset", "depth", "alpha")):
    try:
      model_flags.architecture(model=model)  # before loading anything
    except app.UsageError as e:
      raise cli.FlagError(str(e)) from None
  return ImportTorchConfig(
      checkpoint=f.checkpoint, output_dir=f.output_dir, model=model,
      given=given, format=f.format, overwrite=f.overwrite,
      trust_checkpoint=f.trust_checkpoint)

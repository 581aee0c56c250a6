"""``pyramidnet_tf.describe``'s flags -> one validated ``DescribeConfig``.

Why here: describe takes the trainer's flags (and flagfiles) and reports on
the network the trainer would build, so it reads them as the trainer's
config sections, in one place, before any TensorFlow work. Its own flags
(the report's form and the memory estimate's device) are defined here too.
"""

import dataclasses
from typing import FrozenSet, Optional

from absl import flags

from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import train_flags
from pyramidnet_tf.training import config as config_lib

# --image_size (input resolution for FLOPs and feature-map sizes; 0 = 32 for
# CIFAR, 224 for ImageNet) is the trainer's flag, from common_flags.
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_integer("replicas", 1,
                     "Replicas the trainer's global --batch_size is split "
                     "over, for the memory per replica (>= 1).")
flags.DEFINE_enum("device", "gpu", ["gpu", "cpu"],
                  "Device the memory is estimated for: its --channel_multiple "
                  "default (auto = 1 on GPU; 8 for float32 and 16 for "
                  "bfloat16/float16 on CPU) sets the padded widths.")
flags.DEFINE_bool("show_widths", True,
                  "List every unit's planes under the table.")

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class DescribeConfig:
  """What to describe and how; the trainer's settings describe does not use
  keep their defaults.

  Attributes:
    model: the model flags.
    data: --data_dir (its class count), --synthetic_like, --image_size.
    runtime: --dtype, --channel_multiple, --recompute (the memory estimate).
    batch_size: the trainer's global --batch_size.
    model_dir: a run to describe (its saved network wins), or None.
    init_from: a fine-tune's source (its architecture), or None.
    replicas: how many replicas --batch_size is split over.
    device: "gpu" or "cpu", for the memory estimate.
    json: print JSON instead of a table.
    show_widths: list every unit's planes.
    given: the settings set on the command line (or in a flagfile).
  """
  model: config_lib.ModelConfig
  data: config_lib.DataConfig
  runtime: config_lib.RuntimeConfig
  batch_size: int
  model_dir: Optional[str]
  init_from: Optional[str]
  replicas: int
  device: str
  json: bool
  show_widths: bool
  given: FrozenSet[str]


def from_flags(f=FLAGS) -> DescribeConfig:
  """The configuration of describe's parsed flags.

  Args:
    f: parsed absl flag values (default: the program's).

  Raises:
    cli.FlagError: a model flag out of its range, naming it.
  """
  problems = train_flags.number_problems(train_flags.MODEL_NUMBER_FLAGS)
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  return DescribeConfig(
      model=config_flags.section(config_lib.ModelConfig, f),
      data=config_flags.section(config_lib.DataConfig, f),
      runtime=config_flags.section(config_lib.RuntimeConfig, f),
      batch_size=f.batch_size, model_dir=f.model_dir, init_from=f.init_from,
      replicas=f.replicas, device=f.device, json=f.json,
      show_widths=f.show_widths,
      given=config_flags.given(config_lib.field_names(), f))

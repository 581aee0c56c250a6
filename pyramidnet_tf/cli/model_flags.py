"""The model's absl flags, defined once for every CLI (train, describe, ...).

Importing this module defines the flags, one per field of
``training.config.ModelConfig`` (their defaults are its defaults);
``model_config()`` turns their values into that section (``model_kwargs()``:
the ``PyramidNet`` arguments) and ``architecture()`` validates them, turning a
bad combination into an ``app.UsageError`` that names the flag.
"""

import dataclasses

from absl import app
from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.model import widths
from pyramidnet_tf.training import config as config_lib

SHAKEDROP_LEVELS = options.SHAKEDROP_LEVELS

# Each default is its setting's dataclass default (training.config).
_default = config_flags.default

flags.DEFINE_enum("dataset", _default("dataset"),
                  list(widths.DATASETS) + ["synthetic"],
                  "Architecture family and default class count: CIFAR stem "
                  "(32x32 input, 3 stages) or ImageNet stem (224x224, 4 "
                  "stages). synthetic (trainer only): generated data for "
                  "benchmarks, shaped and modelled as --synthetic_like.")
flags.DEFINE_integer("depth", _default("depth"),
                     "Depth as the paper counts it. CIFAR: 6n+2 (basic units) "
                     "or 9n+2 (bottleneck); ImageNet: 18, 34, 50, 101, 152, "
                     "200, or 8n+2 / 12n+2.")
flags.DEFINE_float("alpha", _default("alpha"),
                   "Widening factor: total width increase (--mode=add) or "
                   "final/initial width ratio (--mode=mul).")
flags.DEFINE_bool("bottleneck", _default("bottleneck"),
                  "Bottleneck units (--bottleneck) or basic units "
                  "(--nobottleneck). Unset: the paper's choice for the depth "
                  "(CIFAR 110 basic; 164/200/236/272 bottleneck; ImageNet by "
                  "its table), or the only unit type the depth fits.")
flags.DEFINE_enum("mode", _default("mode"), list(widths.MODES),
                  "Additive or multiplicative PyramidNet.")
flags.DEFINE_integer("num_classes", _default("num_classes"),
                     "Classifier size; default: 10, 100 or 1000 by --dataset.")
flags.DEFINE_float("drop_rate", _default("drop_rate"),
                   "Dropout rate before the classifier (the ImageNet a=450 "
                   "model uses 0.5).")
flags.DEFINE_enum("rounding", _default("rounding"), list(widths.ROUNDINGS),
                  "Width rounding: py3 = round half to even (authors' PyTorch "
                  "code, default), half_up = floor(x + 0.5) (Torch7 code).")

flags.DEFINE_bool("shakedrop", _default("shakedrop"),
                  "ShakeDrop (Yamada et al.) on every residual branch: "
                  "forward factor b + a - ab, backward b + c - bc, eval p_l. "
                  "No parameters (checkpoints unchanged), but part of the "
                  "model config since it scales eval outputs by p_l.")
flags.DEFINE_float("shakedrop_pl", _default("shakedrop_pl"),
                   "ShakeDrop p_L in [0, 1]: keep probability of the LAST "
                   "unit; unit l of L keeps with 1 - (l/L)(1 - p_L) (linear "
                   "decay over all stages). 0.5 in every published recipe.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_enum("shakedrop_level", _default("shakedrop_level"),
                  list(SHAKEDROP_LEVELS),
                  "ShakeDrop randomness granularity: batch = one gate b per "
                  "(per-replica) mini-batch, a and c per sample (PyTorch "
                  "ports, fast-autoaugment); sample = b, a, c per sample "
                  "(AutoAugment's TF code); pixel = one gate per mini-batch, "
                  "a and c per element (the authors' Torch7 code).")

FLAGS = flags.FLAGS

# The model flags are ``ModelConfig``'s fields (the ``PyramidNet`` arguments).
MODEL_FLAG_NAMES = tuple(config_flags.model_flag_names())


def model_config(flag_values=FLAGS) -> config_lib.ModelConfig:
  """The ``ModelConfig`` of the parsed model flags.

  Args:
    flag_values: parsed absl flag values (default: the program's).
  """
  return config_flags.section(config_lib.ModelConfig, flag_values)


def model_kwargs(flag_values=FLAGS) -> dict:
  """PyramidNet keyword arguments from the parsed flags.

  Args:
    flag_values: parsed absl flag values (default: the program's).
  """
  return dataclasses.asdict(model_config(flag_values))


def architecture(dataset=None, model=None):
  """The validated architecture (no variables); errors name the flag.

  Args:
    dataset: overrides --dataset (e.g. the shape of --dataset=synthetic).
    model: the ``ModelConfig`` to check; default: the parsed model flags'.
  """
  kwargs = dataclasses.asdict(model or model_config())
  if dataset is not None:
    kwargs["dataset"] = dataset
  try:
    return widths.architecture(kwargs["dataset"], kwargs["depth"],
                               kwargs["alpha"], kwargs["bottleneck"],
                               kwargs["mode"], kwargs["rounding"])
  except ValueError as e:
    raise app.UsageError(f"invalid model flags: {e}") from None


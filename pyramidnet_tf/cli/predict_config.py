"""``pyramidnet_tf.predict``'s command line -> one validated
``PredictConfig``.

Why here: the command line (flags and the image files after them) is read
in one place and the tool gets a typed value, as for the trainer and the
other tools; the flags take their defaults from ``PredictConfig``.

The flags are defined by ``define_flags``, which the tool calls when it is
imported (--json is describe's flag too, with another help text; see
``export_config``). No TensorFlow import: every check here runs before it
loads the export.
"""

import dataclasses
import functools
from typing import Sequence, Tuple

from absl import flags

from pyramidnet_tf import paths as paths_lib
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class PredictConfig:
  """One prediction run: which export, which files, in what form.

  Attributes:
    saved_model: the directory written by ``pyramidnet_tf.export``.
    paths: the image files, in the order given.
    json: print one JSON object per image instead of text.
  """
  saved_model: str
  paths: Tuple[str, ...]
  json: bool = False


_own = functools.partial(config_flags.field_default, PredictConfig)


def define_flags(flag_values=FLAGS) -> None:
  """Defines predict's flags (once per process).

  Args:
    flag_values: where to define them (default: the program's).
  """
  flags.DEFINE_string("saved_model", None,
                      "Directory written by pyramidnet_tf.export.",
                      flag_values=flag_values)
  flags.DEFINE_bool("json", _own("json"), "Print one JSON object per image "
                    "instead of text.", flag_values=flag_values)


def from_flags(paths: Sequence[str], f=FLAGS) -> PredictConfig:
  """The validated configuration of predict's command line.

  Args:
    paths: the image files named after the flags.
    f: parsed absl flag values holding ``define_flags``' flags (default:
      the program's).

  Raises:
    cli.FlagError: without --saved_model or image files, for a
      --saved_model that is no export, or when not one of the files
      exists; one line (one per problem) naming it. Some missing files
      are left to the run, which classifies the others.
  """
  paths = tuple(paths)
  if not f.saved_model:
    raise cli.FlagError("--saved_model is required (an export_dir written by"
                        " pyramidnet_tf.export)")
  if not paths:
    raise cli.FlagError("give one or more image files after the flags")
  # Before TensorFlow loads the export (seconds): what is wrong on disk.
  problems = [p for p in [paths_lib.saved_model_problem(f.saved_model)] if p]
  missing = paths_lib.missing_files(list(paths))
  if len(missing) == len(paths):
    problems += missing
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  return PredictConfig(saved_model=f.saved_model, paths=paths, json=f.json)

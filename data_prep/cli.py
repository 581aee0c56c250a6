"""How the data_prep command-line tools start: the trainer's console, shared output flags.

Each tool defines its flags in its own `define_flags()`, called from its `run()` (the
console-script entry point, also used by `python -m data_prep.X`), so that importing several
tools in one process (as the tests do) never defines a flag twice. Its command line reaches it
as one typed value: a frozen dataclass whose fields are named as its flags (`from_flags`), with
the output flags every converter shares as one `Output` section; the tool's checks and its work
take that value and read no flags.

`run` starts a tool the way `python -m pyramidnet_tf.train` starts (through
`pyramidnet_tf.console_base`): `--help` lists the tool's flags in task groups and exits 0, a
flag absl cannot parse is one line with exit status 2, and before any work every problem of
the command line (a required flag missing, a number out of range, a path that does not exist,
an output folder that is a model directory) is reported at once, one line each, with exit
status 2. A failure while working (`DataPrepError`, an unreadable input, a full disk) is one
line with exit status 1; Ctrl-C ends with status 130, and a rerun resumes.
"""

import dataclasses
import os
from typing import Callable, List, Optional, Sequence, Tuple, Type, TypeVar

from absl import flags

from pyramidnet_tf import console_base
from pyramidnet_tf import errors

from data_prep import resume

FLAGS = flags.FLAGS


def default_workers() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def define_output_flags(with_max_rejected: bool = True, workers: int = 0,
                        workers_help: str = "") -> None:
  """--output_dir, --workers (default `workers`, 0: the usable CPUs), --seed, --overwrite,
  --max_rejected."""
  flags.DEFINE_string("output_dir", None,
                      "Folder for <split>-<iiiii>-of-<nnnnn>.tfrecord and manifest.json; "
                      "created if missing. Verified shards already there are kept. Not a "
                      "model directory (one holding checkpoints or model_config.json).")
  flags.DEFINE_integer("workers", workers or default_workers(),
                       workers_help or "Processes that write shards in parallel (default: "
                       "the CPUs this process may use). 1 writes in this process.")
  errors.register_number_validator("workers", low=1, integer=True)
  flags.DEFINE_integer("seed", 0, "Seed of the record order (SHA-256 of '<seed>:<key>').")
  flags.DEFINE_bool("overwrite", False,
                    "Replace another dataset in --output_dir (another converter or dataset "
                    "name, or splits this run does not write); without it such a folder is "
                    "refused. A rerun of the same conversion needs no --overwrite.")
  if with_max_rejected:
    flags.DEFINE_integer("max_rejected", 0,
                         "How many inputs may be rejected (undecodable, truncated, not an "
                         "image) with exit code 0. More than this: exit code 1 and no "
                         "manifest.json.")
    errors.register_number_validator("max_rejected", low=0, integer=True)


def output_flags(with_max_rejected: bool = True) -> Tuple[str, ...]:
  """The flags of `define_output_flags`, in the order --help lists them."""
  names = ("output_dir", "overwrite", "workers", "seed")
  return names + ("max_rejected",) if with_max_rejected else names


@dataclasses.dataclass(frozen=True)
class Output:
  """Where and how a converter writes (the flags of `define_output_flags`).

  Attributes:
    output_dir: --output_dir as given (None when left out; `~` not expanded).
    overwrite: replace another dataset in the folder.
    workers: processes that write shards.
    seed: seed of the record order.
    max_rejected: inputs that may be rejected; 0 where the tool has no such flag.
  """
  output_dir: Optional[str]
  overwrite: bool
  workers: int
  seed: int
  max_rejected: int = 0

  @property
  def path(self) -> str:
    """--output_dir with `~` expanded."""
    return os.path.expanduser(self.output_dir)


Config = TypeVar("Config")


def from_flags(config_class: Type[Config], flag_values=FLAGS) -> Config:
  """A tool's command line as its typed config.

  Args:
    config_class: a dataclass whose fields are named as the tool's flags; a field that is
      itself a dataclass (e.g. `Output`) is built the same way from the same flags, and a
      field with a default whose flag the tool does not define keeps its default.
    flag_values: parsed flags (default: the program's).

  Raises:
    KeyError: for a field without a default whose flag is not defined (a programming
      error: the config and the tool's flags disagree).
  """
  values = {}
  for field in dataclasses.fields(config_class):
    if dataclasses.is_dataclass(field.type):
      values[field.name] = from_flags(field.type, flag_values)
    elif field.name in flag_values:
      values[field.name] = flag_values[field.name].value
    elif field.default is dataclasses.MISSING:
      raise KeyError(f"{config_class.__name__}.{field.name} has no flag --{field.name}")
  return config_class(**values)


def required(value: Optional[str], name: str, what: str) -> Optional[str]:
  """`--name is required: what` when the flag was left out (or empty), else None."""
  if value in (None, ""):
    return f"--{name} is required: {what}"
  return None


def missing_path(value: Optional[str], name: str, expected: str) -> Optional[str]:
  """One line when `--name=value` is a path that does not exist, else None.

  Args:
    value: The flag's value as given (`~` is expanded for the check only).
    name: The flag, without dashes.
    expected: What the path should be, for the message.
  """
  if value and not os.path.exists(os.path.expanduser(value)):
    return f"--{name}={value} does not exist; expected {expected}"
  return None


def output_problems(output: Output) -> List[str]:
  """--output_dir is given and is not a model directory."""
  problem = required(output.output_dir, "output_dir",
                     "the folder to write the shards and manifest.json to")
  if problem is None:
    problem = resume.model_dir_problem(output.path)
  return [problem] if problem else []


def exit_codes_text(finished: str, failed: str) -> str:
  """The tool's exit codes as --help prints them (the trainer's table, in its layout)."""
  rows: Sequence[Tuple[int, str]] = (
      (0, finished),
      (1, failed),
      (2, "a usage error: an unknown, missing or invalid flag, or a path that cannot be "
          "used (named in one line each)"),
      (130, "interrupted by Ctrl-C; rerunning the same command resumes"),
  )
  return "exit codes:\n" + "".join(f"  {code:>3}  {meaning}\n" for code, meaning in rows)


def run(prog: str, body: Callable[[Config], int], *, config: Type[Config], doc: str,
        groups: console_base.Groups,
        problems: Callable[[Config], List[Optional[str]]] = lambda _: []) -> None:
  """Runs a data_prep tool as the module docstring describes.

  Args:
    prog: The tool's name in messages, e.g. "data_prep.cifar".
    body: The work, given the tool's config; returns the exit status (0, or 1 for a run that
      failed as planned).
    config: The tool's config dataclass (`from_flags` builds it once the flags are parsed).
    doc: What the tool does, with example commands and its exit codes (`--help`'s text).
    groups: The task groups of its flags, as `--help` lists them.
    problems: Every problem of the config, one line each, None for a check that passed
      (checked with the numeric ranges before `body` runs; any problem ends the tool with
      exit status 2).
  """

  def main(argv):
    del argv  # console_base.run refuses positional arguments
    found = errors.flag_problems()
    values = from_flags(config)
    found += [p for p in problems(values) if p]
    if found:
      raise errors.FlagError(errors.problems_text(found))
    return body(values)

  console_base.run(prog, main, doc=doc, groups=groups, knobs=(), check_flags=False)

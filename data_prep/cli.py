"""How the data_prep command-line tools start: the trainer's console, shared output flags.

Each tool defines its flags in its own `define_flags()`, called from its `run()` (the
console-script entry point, also used by `python -m data_prep.X`), so that importing several
tools in one process (as the tests do) never defines a flag twice.

`run` starts a tool the way `python -m pyramidnet_tf.train` starts (through
`pyramidnet_tf.console_base`): `--help` lists the tool's flags in task groups and exits 0, a
flag absl cannot parse is one line with exit status 2, and before any work every problem of
the command line (a required flag missing, a number out of range, a path that does not exist,
an output folder that is a model directory) is reported at once, one line each, with exit
status 2. A failure while working (`DataPrepError`, an unreadable input, a full disk) is one
line with exit status 1; Ctrl-C ends with status 130, and a rerun resumes.
"""

import os
from typing import Callable, List, Optional, Sequence, Tuple

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


def required(name: str, what: str) -> Optional[str]:
  """`--name is required: what` when the flag was left out (or empty), else None."""
  if FLAGS[name].value in (None, ""):
    return f"--{name} is required: {what}"
  return None


def missing_path(name: str, expected: str) -> Optional[str]:
  """One line when `--name` is set to a path that does not exist, else None.

  Args:
    name: The flag, without dashes.
    expected: What the path should be, for the message.
  """
  value = FLAGS[name].value
  if value and not os.path.exists(os.path.expanduser(value)):
    return f"--{name}={value} does not exist; expected {expected}"
  return None


def output_problems() -> List[str]:
  """--output_dir is given and is not a model directory."""
  problem = required("output_dir", "the folder to write the shards and manifest.json to")
  if problem is None:
    problem = resume.model_dir_problem(os.path.expanduser(FLAGS.output_dir))
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


def run(prog: str, body: Callable[[], int], *, doc: str, groups: console_base.Groups,
        problems: Callable[[], List[str]] = list) -> None:
  """Runs a data_prep tool as the module docstring describes.

  Args:
    prog: The tool's name in messages, e.g. "data_prep.cifar".
    body: The work; returns the exit status (0, or 1 for a run that failed as planned).
    doc: What the tool does, with example commands and its exit codes (`--help`'s text).
    groups: The task groups of its flags, as `--help` lists them.
    problems: Every problem of the parsed flags, one line each (checked with the numeric
      ranges before `body` runs; any problem ends the tool with exit status 2).
  """

  def main(argv):
    del argv  # console_base.run refuses positional arguments
    found = errors.flag_problems() + [p for p in problems() if p]
    if found:
      raise errors.FlagError(errors.problems_text(found))
    return body()

  console_base.run(prog, main, doc=doc, groups=groups, knobs=(), check_flags=False)

"""Flags and error handling shared by the data_prep command-line tools.

Each tool defines its flags in its own `define_flags()`, called from its `run()` (the
console-script entry point, also used by `python -m data_prep.X`), so that importing several
tools in one process (as the tests do) never defines a flag twice.
"""

import os
import sys
from typing import Callable

from absl import flags

from pyramidnet_tf.cli import console

from data_prep import DataPrepError


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
                      "created if missing. Verified shards already there are kept.")
  flags.mark_flag_as_required("output_dir")
  flags.DEFINE_integer("workers", workers or default_workers(),
                       workers_help or "Processes that write shards in parallel (default: "
                       "the CPUs this process may use). 1 writes in this process.",
                       lower_bound=1)
  flags.DEFINE_integer("seed", 0, "Seed of the record order (SHA-256 of '<seed>:<key>').")
  flags.DEFINE_bool("overwrite", False,
                    "Replace another dataset in --output_dir (another converter or dataset "
                    "name, or splits this run does not write); without it such a folder is "
                    "refused. A rerun of the same conversion needs no --overwrite.")
  if with_max_rejected:
    flags.DEFINE_integer("max_rejected", 0,
                         "How many inputs may be rejected (undecodable, truncated, not an "
                         "image) with exit code 0. More than this: exit code 1 and no "
                         "manifest.json.", lower_bound=0)


def main_with_errors(tool: str, body: Callable[[], int]) -> Callable:
  """An absl main that runs `body`; DataPrepError and OSError become 'tool: error: ...', exit 1.

  With PYRAMIDNET_TF_CHECK_FLAGS=1 (``pyramidnet_tf.cli.console``) `body` does not run: the
  flags were parsed (unknown flags, types, choices, bounds, required flags) and the tool says
  so and exits 0, having read and written nothing.
  """

  def main(argv):
    # Plain lines (no absl prefixes) unless --verbosity >= 1, as the trainer's tools.
    console.configure_logging(console.verbose())
    if len(argv) > 1:  # one line, not absl's full help text
      print(f"{tool}: error: unexpected arguments: {' '.join(argv[1:])} (every input is a "
            "--flag; see --helpshort)", file=sys.stderr)
      return 1
    if console.checking_flags_only():
      console.flags_ok(tool)
      return 0
    try:
      return body()
    except DataPrepError as e:
      print(f"{tool}: error: {e}", file=sys.stderr)
      return 1
    except OSError as e:  # unreadable input, unwritable output, disk full: names the path
      print(f"{tool}: error: {e}", file=sys.stderr)
      return 1
  return main

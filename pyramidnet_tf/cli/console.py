"""How every command-line tool starts: help, flag files, quiet logs, errors.

``run(prog, main, doc=..., groups=...)`` replaces ``absl.app.run`` for the
tools of ``pyramidnet_tf``:

1. ``--recipe=NAME`` and ``--flagfile=flags/...`` are resolved to shipped
   flagfiles (``recipes``); ``--recipes`` lists them.
2. ``--help`` / ``-h`` / ``--helpshort`` print the tool's task-grouped flags
   (``usage``), ``--helpfull`` every flag; both exit 0 without importing
   TensorFlow.
3. After parsing, logging is made quiet unless ``--verbosity`` >= 1: the
   tool's own lines without absl's ``I1203 07:10:00.123 1234 file.py:12]``
   prefix, TensorFlow's C++ log at ERROR and its Python log at ERROR
   (TensorFlow is imported later, by the code that needs it, so the
   setting is in place when it loads).
4. ``main`` runs under ``errors.guard``: every out-of-range flag is reported
   at once, and expected failures end with one line.

With ``PYRAMIDNET_TF_CHECK_FLAGS=1`` in the environment a tool only checks
its command line and exits: the flags are parsed (unknown flags, bad types
and choices, recipes and flagfiles that do not resolve), the registered
ranges and the tool's own checks of flag values (``flags_check``) run, and
``<prog>: flags OK`` is printed, exit status 0; a problem is the usual
one-line error, exit status 2. Nothing else runs: no file is read or
written, the environment (Slurm, Kubernetes) is not consulted and
TensorFlow is never imported, so checking a command costs a Python start.
The documentation tests check every command of the README this way.
"""

import logging
import os
import sys
from typing import Callable, Optional

from absl import app
from absl import flags
from absl import logging as absl_logging

from pyramidnet_tf import exit_codes
from pyramidnet_tf.cli import errors
from pyramidnet_tf.cli import recipes
from pyramidnet_tf.cli import usage

FLAGS = flags.FLAGS
CHECK_FLAGS_ENV = "PYRAMIDNET_TF_CHECK_FLAGS"
_HELP = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")
_HELPFULL = ("--helpfull", "-helpfull")


class PlainFormatter(logging.Formatter):
  """A log record as its message; warnings and errors say what they are."""

  def format(self, record):
    message = record.getMessage()
    if record.exc_info:
      message += "\n" + self.formatException(record.exc_info)
    if record.levelno >= logging.ERROR:
      return f"error: {message}"
    if record.levelno >= logging.WARNING:
      return f"warning: {message}"
    return message


class OtherLibrariesFilter(logging.Filter):
  """Drops other libraries' records below ERROR (TensorFlow logs INFO lines
  such as checkpoint sharding timings through absl, the same logger as
  ours)."""

  _PACKAGES = ("tensorflow", "tensorboard", "keras", "tf_keras")

  def filter(self, record):
    if record.levelno >= logging.ERROR:
      return True
    parts = record.pathname.replace("\\", "/").split("/")
    return not any(package in parts for package in self._PACKAGES)


def verbose() -> bool:
  """Whether the user asked for more than the quiet default."""
  try:
    return FLAGS["verbosity"].value >= 1
  except (KeyError, flags.UnparsedFlagAccessError):
    return False


def configure_logging(is_verbose: bool) -> None:
  """Quiet (default) or verbose logging for the rest of the process.

  Args:
    is_verbose: keep absl's prefixes and TensorFlow's own log lines.
  """
  if is_verbose:
    return
  # Read by TensorFlow's C++ runtime when it loads; a value the user set wins.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  logging.getLogger("tensorflow").setLevel(logging.ERROR)
  handler = absl_logging.get_absl_handler()
  handler.python_handler.setFormatter(PlainFormatter())
  if not any(isinstance(f, OtherLibrariesFilter) for f in handler.filters):
    handler.addFilter(OtherLibrariesFilter())
  # TensorFlow's deprecation notices go through the warnings module too.
  import warnings  # pylint: disable=g-import-not-at-top
  for module in ("tensorflow", "keras", "tensorboard"):
    warnings.filterwarnings("ignore", module=module)


def checking_flags_only() -> bool:
  """Whether this process only checks its command line (module
  docstring: ``PYRAMIDNET_TF_CHECK_FLAGS=1``)."""
  return os.environ.get(CHECK_FLAGS_ENV, "") == "1"


def flags_ok(prog: str) -> None:
  """Says the command line passed the check (``checking_flags_only``)."""
  sys.stdout.write(f"{prog}: flags OK\n")
  sys.stdout.flush()


def _print_help(prog: str, doc: str, groups: usage.Groups, knobs,
                full: bool) -> None:
  sys.stdout.write(usage.help_text(prog, doc, groups, knobs, full=full))
  sys.stdout.flush()


def parse_flags(prog: str, argv, after_parse: Optional[Callable] = None):
  """absl's flag parsing, with a parse error as one line and exit status 2.

  Args:
    prog: the tool's name in the message.
    argv: the command line.
    after_parse: called once the flags are parsed (e.g. the compile cache's
      environment, which must be set before TensorFlow lists devices).

  Returns:
    The arguments left after the flags.
  """
  try:
    remaining = FLAGS(argv)
  except flags.Error as e:
    sys.stderr.write(f"{prog}: error: {e} (--help lists the flags)\n")
    sys.exit(exit_codes.USAGE)
  if after_parse is not None:
    after_parse()
  return remaining


def run(prog: str, main: Callable, *, doc: str, groups: usage.Groups = (),
        knobs=(), check_flags: bool = True,
        after_parse: Optional[Callable] = None,
        flags_check: Optional[Callable[[], None]] = None,
        takes_arguments: bool = False) -> None:
  """Runs a tool's ``main`` as described in the module docstring.

  Args:
    prog: the tool's name in messages, e.g. "pyramidnet_tf.train".
    main: the absl main (takes the remaining argv).
    doc: what the tool does, with example commands (its module docstring).
    groups: the task groups of its flags (``usage``).
    knobs: the flags --helpfull adds; None = every other project flag.
    check_flags: report ``errors.flag_problems`` before ``main`` (False when
      ``main`` reports them together with its own checks).
    after_parse: called right after the flags are parsed, before absl's
      initialisation callbacks (``parse_flags``); not called when only
      checking the flags (it may configure the process).
    flags_check: the tool's checks of its parsed flag values beyond the
      registered ranges, for ``PYRAMIDNET_TF_CHECK_FLAGS=1``: raises
      ``errors.UserError`` naming the flag; must not import TensorFlow,
      touch files or read the cluster's environment.
    takes_arguments: the tool takes positional arguments (predict's
      files); else the check refuses them as ``main`` would.
  """
  argv = list(sys.argv)
  options = argv[1:argv.index("--")] if "--" in argv else argv[1:]
  if "--recipes" in options or "-recipes" in options:
    sys.stdout.write(recipes.listing())
    sys.exit(0)
  if any(arg in _HELPFULL for arg in options):
    _print_help(prog, doc, groups, knobs, full=True)
    sys.exit(0)
  if any(arg in _HELP for arg in options):
    _print_help(prog, doc, groups, knobs, full=False)
    sys.exit(0)
  try:
    argv = recipes.expand_argv(argv)
  except recipes.RecipeError as e:
    sys.stderr.write(f"{prog}: error: {e}\n")
    sys.exit(exit_codes.USAGE)

  def quiet_main(remaining):
    configure_logging(verbose())
    return main(remaining)

  def check_only(remaining):
    if len(remaining) > 1 and not takes_arguments:
      raise errors.FlagError(
          f"unexpected arguments: {' '.join(remaining[1:])}")
    problems = errors.flag_problems()
    if problems:
      raise errors.FlagError(errors.problems_text(problems))
    if flags_check is not None:
      flags_check()
    flags_ok(prog)

  if checking_flags_only():
    app.run(errors.guard(prog, check_only, check_flags=False), argv=argv,
            flags_parser=lambda args: parse_flags(prog, args))
    return
  app.run(errors.guard(prog, quiet_main, check_flags=check_flags),
          argv=argv, flags_parser=lambda args: parse_flags(
              prog, args, after_parse))

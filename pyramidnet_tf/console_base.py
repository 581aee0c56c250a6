"""How every command-line tool starts, below the layers that use it.

Shared by the tools of ``pyramidnet_tf`` (through ``pyramidnet_tf.cli.console``,
which adds the shipped flagfiles) and by ``data_prep``, so that every tool of
the project answers the same way:

* ``--help`` / ``-h`` / ``--helpshort`` print the tool's docstring and its
  flags in task groups, each with its default (``help_text``);
  ``--helpfull`` adds the advanced knobs and every other flag. Both exit 0
  without importing TensorFlow.
* A flag absl cannot parse is one line and exit status 2 (``parse_flags``).
* After parsing, logging is quiet unless ``--verbosity`` >= 1: the tool's
  own lines without absl's ``I1203 07:10:00.123 1234 file.py:12]`` prefix,
  TensorFlow's C++ and Python logs at ERROR (TensorFlow is imported later,
  by the code that needs it, so the setting is in place when it loads).
* ``main`` runs under ``errors.guard``: every out-of-range flag is reported
  at once, and expected failures end with one line (status 1, or 2 for a
  usage error).

absl's own ``--help`` lists only the flags the main module defines, under
the path of the file defining them; here each tool names the flags a user
reaches for, in task groups (``Groups``), and the rest are knobs shown by
``--helpfull``.

No TensorFlow import here.
"""

import logging
import os
import sys
import textwrap
from typing import Callable, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging as absl_logging

from pyramidnet_tf import errors
from pyramidnet_tf import exit_codes

FLAGS = flags.FLAGS
HELP_OPTIONS = ("--help", "-help", "-h", "--helpshort", "-helpshort", "-?")
HELPFULL_OPTIONS = ("--helpfull", "-helpfull")

Groups = Sequence[Tuple[str, Sequence[str]]]


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


_FLAGFILE_OPTIONS = """\
Command-line files:
  --flagfile=FILE
      Read flags from FILE (one per line); later flags override earlier ones."""
_RECIPE_OPTIONS = """\
  --recipe=NAME
      A flagfile shipped with the package, by name (e.g. cifar10/pyramidnet110_a48);
      works after `pip install`, from any directory.
  --recipes
      List the shipped flagfiles and exit."""
_MORE_OPTIONS = """\
  --helpfull
      Every flag, including the advanced ones and absl's logging flags.
  --verbosity=1
      TensorFlow's own log lines, absl log prefixes and tracebacks of errors."""


def _default_text(flag) -> str:
  value = flag.default
  if isinstance(flag, flags.BooleanFlag) or flag.flag_type() == "bool":
    if value is None:
      return "unset"
    return "on" if value else "off"
  if value is None:
    return "no default"
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value) or "empty"
  if value == "":
    return "empty"
  return str(flag.default_as_str).strip("'") if flag.default_as_str else str(
      value)


def _flag_lines(flag, width: int) -> List[str]:
  boolean = flag.flag_type() == "bool"
  name = f"--[no]{flag.name}" if boolean else f"--{flag.name}"
  default = _default_text(flag)
  head = f"  {name} ({default if default == 'no default' else 'default: ' + default})"
  text = " ".join((flag.help or "").split())  # enums start with <a|b|c>:
  body = textwrap.wrap(text, width=width, initial_indent="      ",
                       subsequent_indent="      ")
  return [head] + body


def defined_names(flag_values=flags.FLAGS) -> List[str]:
  """Flags defined by this project's modules (not absl's or other ones)."""
  names = set()
  for module, module_flags in flag_values.flags_by_module_dict().items():
    # absl names a module by its import name, the main one by its path.
    if (module.startswith(("pyramidnet_tf", "data_prep", "__main__")) or
        "/pyramidnet_tf/" in module or "/data_prep/" in module):
      names.update(flag.name for flag in module_flags)
  return sorted(names)


def knobs(groups: Groups, listed_knobs, flag_values=flags.FLAGS
          ) -> List[str]:
  """The project flags of a tool that --help leaves to --helpfull."""
  grouped = {name for _, names in groups for name in names}
  if listed_knobs is not None:
    return [name for name in listed_knobs if name in flag_values]
  return [name for name in defined_names(flag_values) if name not in grouped]


def help_text(prog: str, doc: str, groups: Groups, listed_knobs=(), *,
              full: bool = False, flag_values=flags.FLAGS,
              width: int = 92) -> str:
  """The tool's help: its docstring, then its flags by group.

  Args:
    prog: the tool, e.g. "pyramidnet_tf.train".
    doc: its module docstring (what it does, example commands).
    groups: (title, flag names) in the order shown.
    listed_knobs: flags shown only with ``full``; None = every project flag
      not in ``groups``.
    full: also list the knobs and every other flag of the process.
    flag_values: where the flags are defined.
    width: text width of the help paragraphs.
  """
  lines = [f"usage: python -m {prog} [flags]", ""]
  lines += [line.rstrip() for line in (doc or "").strip().splitlines()]
  shown = set()
  for title, names in groups:
    present = [name for name in names if name in flag_values]
    if not present:
      continue
    lines += ["", f"{title}:"]
    for name in present:
      lines += _flag_lines(flag_values[name], width)
      shown.add(name)
  extra = knobs(groups, listed_knobs, flag_values)
  if full:
    if extra:
      lines += ["", "Advanced:"]
      for name in extra:
        lines += _flag_lines(flag_values[name], width)
        shown.add(name)
    rest = sorted(name for name in _unique_names(flag_values)
                  if name not in shown)
    if rest:
      lines += ["", "Other flags (absl logging, flag files):"]
      for name in rest:
        lines += _flag_lines(flag_values[name], width)
  lines += ["", _FLAGFILE_OPTIONS]
  if "depth" in flag_values:  # the tools that take model flags
    lines.append(_RECIPE_OPTIONS)
  lines.append(_MORE_OPTIONS)
  if not full and extra:
    lines += ["", f"{len(extra)} advanced flags ({', '.join(extra[:4])}"
              f"{', ...' if len(extra) > 4 else ''}): --helpfull"]
  return "\n".join(lines) + "\n"


def _unique_names(flag_values) -> List[str]:
  names = []
  for name in flag_values:
    if flag_values[name].name == name:  # not a one-letter alias
      names.append(name)
  return names


def options_of(argv: Sequence[str]) -> List[str]:
  """The arguments of a command line before a ``--`` (the program left out)."""
  argv = list(argv)
  return argv[1:argv.index("--")] if "--" in argv else argv[1:]


CHECK_FLAGS_ENV = "PYRAMIDNET_TF_CHECK_FLAGS"


def checking_flags_only() -> bool:
  """Whether this process only checks its command line
  (``PYRAMIDNET_TF_CHECK_FLAGS=1``, see ``run``)."""
  return os.environ.get(CHECK_FLAGS_ENV, "") == "1"


def flags_ok(prog: str) -> None:
  """Says the command line passed the check (``checking_flags_only``)."""
  errors.write_stdout(f"{prog}: flags OK\n")


def run(prog: str, main: Callable, *, doc: str, groups: Groups = (),
        knobs=(), check_flags: bool = True,
        after_parse: Optional[Callable] = None,
        expand_argv: Optional[Callable] = None,
        flags_check: Optional[Callable[[], None]] = None,
        takes_arguments: bool = False) -> None:
  """Runs a tool's ``main`` as described in the module docstring.

  Args:
    prog: the tool's name in messages, e.g. "data_prep.cifar".
    main: the absl main (takes the remaining argv).
    doc: what the tool does, with example commands (its module docstring).
    groups: the task groups of its flags.
    knobs: the flags --helpfull adds; None = every other project flag.
    check_flags: report ``errors.flag_problems`` before ``main`` (False when
      ``main`` reports them together with its own checks).
    after_parse: called right after the flags are parsed, before absl's
      initialisation callbacks (``parse_flags``).
    expand_argv: rewrites the command line before absl parses it (the
      shipped flagfiles); an ``errors.FlagError`` it raises is one line and
      exit status 2.
    flags_check: the tool's checks of its parsed flag values beyond the
      registered ranges, for ``PYRAMIDNET_TF_CHECK_FLAGS=1``: raises
      ``errors.UserError`` naming the flag; must not import TensorFlow,
      touch files or read the cluster's environment.
    takes_arguments: the tool takes positional arguments (predict's
      files); else the check refuses them as ``main`` would.

  With ``PYRAMIDNET_TF_CHECK_FLAGS=1`` in the environment a tool only checks
  its command line: the flags are parsed (unknown flags, bad types and
  choices, recipes and flagfiles that do not resolve), the registered ranges
  and ``flags_check`` run, and ``<prog>: flags OK`` is printed, exit status
  0; a problem is the usual one-line error, exit status 2. No file is read
  or written, the cluster's environment is not consulted and TensorFlow is
  never imported: the documentation tests check every command of the README
  this way.
  """
  argv = list(sys.argv)
  options = options_of(argv)
  full = any(arg in HELPFULL_OPTIONS for arg in options)
  if full or any(arg in HELP_OPTIONS for arg in options):
    errors.write_stdout(help_text(prog, doc, groups, knobs, full=full))
    sys.exit(exit_codes.FINISHED)
  if expand_argv is not None:
    try:
      argv = expand_argv(argv)
    except errors.FlagError as e:
      sys.stderr.write(f"{prog}: error: {e}\n")
      sys.exit(exit_codes.USAGE)

  def refuse_arguments(remaining):
    if len(remaining) > 1 and not takes_arguments:
      raise errors.FlagError(
          f"unexpected arguments: {' '.join(remaining[1:])} (every input is "
          "a --flag; --help lists them)")

  def quiet_main(remaining):
    refuse_arguments(remaining)
    configure_logging(verbose())
    return main(remaining)

  def check_only(remaining):
    refuse_arguments(remaining)
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

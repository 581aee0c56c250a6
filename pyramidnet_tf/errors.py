"""How the tools reject bad flags and report failures, and the error types
the library raises for failures a user can fix.

Why a module of its own, below every layer: the library (checkpoints,
converters) raises and recognises the same errors as the tools, and
data_prep reports its failures the same way, without importing the
command-line layer. Every CLI must answer an expected failure (a bad
flag, a missing or unreadable file, a full disk, no permission) with one line
that names the flag or file and says what to do, and must keep the
traceback for real bugs. Doing that in one place keeps the rules and the
wording the same in every tool.

* ``number_problem`` / ``check_number`` / ``register_number_validator`` /
  ``flag_problems``: a numeric flag must be finite (``nan`` and ``inf``
  parse as floats but mean nothing as a learning rate or a length) and
  inside its range; the message names the flag and the range, and every
  out-of-range flag of a command line is reported at once. ``check_image_size``: an image size is 0
  (the default) or at least the architecture's total stride.
* ``storage_problem``: recognises a full disk or a refused write, whether
  Python's ``OSError`` or TensorFlow's status error reports it.
* ``guard(prog, main)``: wraps an absl ``main``; ``UserError``,
  ``app.UsageError`` and file-system failures (``OSError`` and TensorFlow's
  file-system errors) become ``<prog>: error: <one line>`` and exit status 1,
  or 2 (``exit_codes.USAGE``) for ``FlagError`` and ``app.UsageError``: a
  wrong flag, which rerunning the same command cannot fix.
  With ``--verbosity=1`` (absl's flag) the traceback is printed too. Ctrl-C
  (``KeyboardInterrupt``) ends with ``<prog>: interrupted`` and status 130.
  Any other exception is a bug and propagates with its traceback.

No TensorFlow import here: checks run before TensorFlow is initialised, and
TensorFlow's error classes are looked up only once TensorFlow is loaded.
"""

import errno
import math
import os
import select
import sys
import traceback
from typing import Callable, List, Optional, Tuple

from absl import app
from absl import flags

from pyramidnet_tf import exit_codes


class UserError(Exception):
  """A failure the user can fix; its message is the whole report."""


class FlagError(UserError):
  """A flag with a wrong value (out of range, a path that is not what it
  must be): the tool ends with ``exit_codes.USAGE``, which launchers treat
  as final (rerunning the same command cannot help)."""


def _number(x) -> str:
  x = float(x)
  return str(int(x)) if x.is_integer() else f"{x:g}"


def _range_text(low, high, low_open: bool, high_open: bool,
                integer: bool) -> str:
  kind = "an integer" if integer else "a finite number"
  if low is not None and high is not None:
    if integer and not low_open and not high_open:
      return f"{kind} in {_number(low)}..{_number(high)}"
    return (f"{kind} in {'(' if low_open else '['}{_number(low)}, "
            f"{_number(high)}{')' if high_open else ']'}")
  if low is not None:
    return f"{kind} {'>' if low_open else '>='} {_number(low)}"
  if high is not None:
    return f"{kind} {'<' if high_open else '<='} {_number(high)}"
  return kind


def number_problem(name: str, value, low=None, high=None, *,
                   low_open: bool = False, high_open: bool = False,
                   integer: bool = False, note: str = "") -> Optional[str]:
  """Why ``--name=value`` is out of range, or None when it is fine.

  Args:
    name: the flag, without dashes.
    value: its parsed value; None (an unset optional flag) is fine.
    low, high: the bounds (None: unbounded).
    low_open, high_open: exclude the bound itself.
    integer: the flag is an integer flag (only changes the wording).
    note: what special values mean, e.g. "0 = off", appended to the range.
  """
  if value is None:
    return None
  value = float(value)
  ok = math.isfinite(value)
  if ok and low is not None:
    ok = value > low if low_open else value >= low
  if ok and high is not None:
    ok = value < high if high_open else value <= high
  if ok:
    return None
  text = _range_text(low, high, low_open, high_open, integer)
  if note:
    text += f" ({note})"
  shown = _number(value) if math.isfinite(value) else f"{value:g}"
  return f"--{name} must be {text}; got {shown}"


def check_number(name: str, value, low=None, high=None, **kwargs) -> None:
  """Raises UserError when ``number_problem`` finds one."""
  problem = number_problem(name, value, low, high, **kwargs)
  if problem:
    raise UserError(problem)


# flag name -> number_problem keyword arguments, per FlagValues object.
_NUMBER_CHECKS = {}


def register_number_validator(name: str, low=None, high=None,
                              flag_values=flags.FLAGS, **kwargs) -> None:
  """Declares ``--name``'s range; ``flag_problems`` checks it.

  The checks run after parsing, all at once (absl's own validators stop at
  the first failing flag), before any TensorFlow work: ``guard`` runs them
  for every CLI that defines the flag.

  Args:
    name: the flag, without dashes.
    low, high, kwargs: as ``number_problem``.
    flag_values: the FlagValues holding the flag.
  """
  _NUMBER_CHECKS.setdefault(id(flag_values), {})[name] = dict(
      low=low, high=high, **kwargs)


def flag_problems(flag_values=flags.FLAGS) -> List[str]:
  """Every registered range a parsed flag value is out of, one line each."""
  problems = []
  for name, kwargs in _NUMBER_CHECKS.get(id(flag_values), {}).items():
    if name in flag_values:
      problem = number_problem(name, flag_values[name].value, **kwargs)
      if problem:
        problems.append(problem)
  return problems


def problems_text(problems: List[str]) -> str:
  """One problem as its line; several as a count and an indented list."""
  if len(problems) == 1:
    return problems[0]
  return (f"{len(problems)} problems with the flags:\n" +
          "\n".join(f"  {problem}" for problem in problems))


# The network's total stride: a smaller input leaves its last stage less than
# one pixel (CIFAR: two stride-2 stages; ImageNet: stem stride 4, then three
# stride-2 stages).
_TOTAL_STRIDE = {"cifar10": 4, "cifar100": 4, "imagenet": 32}


def check_image_size(name: str, value: int, dataset: str,
                     default_note: str) -> None:
  """``--name`` must be 0 (``default_note`` says what 0 means) or at least
  the total stride of ``dataset``'s architecture."""
  minimum = _TOTAL_STRIDE.get(dataset, 4)
  if value != 0 and not value >= minimum:
    raise FlagError(f"--{name} must be 0 ({default_note}) or an integer >= "
                    f"{minimum} for a {dataset} PyramidNet (its total "
                    f"stride); got {value}")


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or its size limit",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "read-only file system",
}
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_ADVICE = {True: "free some space or choose another directory",
           False: "check its owner and mode"}


def storage_problem(error: BaseException) -> Optional[Tuple[str, str, bool]]:
  """(path, reason, no_space) when ``error`` is a full disk or a refused
  write or read (an OSError or TensorFlow's file-system error); else None."""
  if isinstance(error, OSError) and error.errno in _REASONS:
    path = error.filename if error.filename is not None else "?"
    return path, _REASONS[error.errno], error.errno in _NO_SPACE
  tf = sys.modules.get("tensorflow")
  if tf is None or not isinstance(error, tf.errors.OpError):
    return None
  # TensorFlow's file-system errors read "<path>; <strerror>" (inside a
  # function: "{{function_node ...}} <path>; <strerror> [Op:...]"), with a
  # status code that depends on errno (ENOSPC: RESOURCE_EXHAUSTED, EFBIG:
  # OUT_OF_RANGE, ...), so the strerror is what identifies them.
  for line in (error.message or "").splitlines():
    for code, reason in _REASONS.items():
      before, found, _ = line.partition(f"; {os.strerror(code)}")
      if found:
        path = before.rpartition("}} ")[2].strip()
        return path or "?", reason, code in _NO_SPACE
  if isinstance(error, tf.errors.PermissionDeniedError):
    return "?", "permission denied", False
  return None


def error_text(error: BaseException) -> Optional[str]:
  """The one-line report of an expected failure; None for a bug."""
  if isinstance(error, (UserError, app.UsageError)):
    return str(error)
  problem = storage_problem(error)
  if problem is not None:
    path, reason, no_space = problem
    verb = "write" if no_space else "access"
    return f"cannot {verb} {path}: {reason}; {_ADVICE[no_space]}"
  if isinstance(error, OSError):
    if error.filename is None:  # raised with a message of ours
      return str(error)
    if error.errno == errno.ENOENT:
      return f"{error.filename} does not exist"
    return f"{error.filename}: {error.strerror or error}"
  return None


def _verbose() -> bool:
  try:
    return flags.FLAGS["verbosity"].value >= 1
  except (KeyError, flags.UnparsedFlagAccessError):
    return False


def _stdout_reader_gone() -> bool:
  """Whether stdout is a pipe whose reading end is closed (poll reports an
  error on it); another broken pipe (a socket, a child's stdin) is an
  ordinary failure."""
  try:
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))
  except (AttributeError, ValueError, OSError):
    return False


def exit_output_closed() -> None:
  """Exits quietly with ``exit_codes.OUTPUT_CLOSED``: stdout's reader is
  gone (``| head``). Stdout is pointed at /dev/null first, so the
  interpreter's final flush does not fail again."""
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, sys.stdout.fileno())
  finally:
    os.close(devnull)
  sys.exit(exit_codes.OUTPUT_CLOSED)


def write_stdout(text: str) -> None:
  """Writes and flushes ``text``; a closed reader stops the tool quietly
  (``exit_output_closed``)."""
  try:
    sys.stdout.write(text)
    sys.stdout.flush()
  except BrokenPipeError:
    exit_output_closed()


def guard(prog: str, main: Callable, *, check_flags: bool = True) -> Callable:
  """``main`` for ``app.run``: expected failures exit with one line.

  Args:
    prog: the program's name, the prefix of every error line.
    main: the absl main.
    check_flags: first report every ``flag_problems`` line at once (a CLI
      that collects its own problems together with these passes False).
  """

  def guarded(argv):
    try:
      if check_flags:
        problems = flag_problems()
        if problems:
          raise FlagError(problems_text(problems))
      result = main(argv)
      sys.stdout.flush()   # a closed reader shows here, not at exit
      return result
    except KeyboardInterrupt:
      if _verbose():
        traceback.print_exc()
      sys.stderr.write(f"{prog}: interrupted\n")
      sys.exit(exit_codes.ABORTED)
    except Exception as e:  # pylint: disable=broad-except
      if isinstance(e, BrokenPipeError) and _stdout_reader_gone():
        exit_output_closed()
      text = error_text(e)
      if text is None:
        raise  # a bug: absl prints the traceback
      if _verbose():
        traceback.print_exc()
      sys.stderr.write(f"{prog}: error: {text}\n")
      sys.exit(exit_codes.USAGE if isinstance(e, (FlagError, app.UsageError))
               else exit_codes.FAILED)
  return guarded

"""How every tool of pyramidnet_tf starts: help, flag files, quiet logs, errors.

``run(prog, main, doc=..., groups=...)`` replaces ``absl.app.run`` for the
tools of ``pyramidnet_tf``. It is ``pyramidnet_tf.console_base.run`` (task
grouped ``--help`` exiting 0 without TensorFlow, parse errors as one line
with exit status 2, quiet logging, ``errors.guard``; data_prep's tools start
the same way) plus the shipped flagfiles: ``--recipe=NAME`` and
``--flagfile=flags/...`` are resolved to them (``recipes``), and
``--recipes`` lists them.
"""

import sys
from typing import Callable, Optional

from pyramidnet_tf import console_base
from pyramidnet_tf import errors
from pyramidnet_tf.cli import recipes
from pyramidnet_tf.cli import usage


def _expand_recipes(argv):
  try:
    return recipes.expand_argv(argv)
  except recipes.RecipeError as e:
    raise errors.FlagError(str(e)) from None


def run(prog: str, main: Callable, *, doc: str, groups: usage.Groups = (),
        knobs=(), check_flags: bool = True,
        after_parse: Optional[Callable] = None) -> None:
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
      initialisation callbacks (``console_base.parse_flags``).
  """
  options = console_base.options_of(sys.argv)
  if "--recipes" in options or "-recipes" in options:
    sys.stdout.write(recipes.listing())
    sys.exit(0)
  console_base.run(prog, main, doc=doc, groups=groups, knobs=knobs,
                   check_flags=check_flags, after_parse=after_parse,
                   expand_argv=_expand_recipes)

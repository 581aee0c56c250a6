"""How every tool of pyramidnet_tf starts: help, flag files, quiet logs, errors.

``run(prog, main, doc=..., groups=...)`` replaces ``absl.app.run`` for the
tools of ``pyramidnet_tf``. It is ``pyramidnet_tf.console_base.run`` (task
grouped ``--help`` exiting 0 without TensorFlow, parse errors as one line
with exit status 2, quiet logging, ``errors.guard``; data_prep's tools start
the same way) plus the shipped flagfiles: ``--recipe=NAME`` and
``--flagfile=flags/...`` are resolved to them (``recipes``), and
``--recipes`` lists them. ``PYRAMIDNET_TF_CHECK_FLAGS=1`` only checks the
command line (``console_base.run``).
"""

import sys
from typing import Callable, Optional

from pyramidnet_tf import console_base
from pyramidnet_tf import errors
from pyramidnet_tf.cli import recipes
from pyramidnet_tf.cli import usage


checking_flags_only = console_base.checking_flags_only
flags_ok = console_base.flags_ok
CHECK_FLAGS_ENV = console_base.CHECK_FLAGS_ENV


def _expand_recipes(argv):
  try:
    return recipes.expand_argv(argv)
  except recipes.RecipeError as e:
    raise errors.FlagError(str(e)) from None


def run(prog: str, main: Callable, *, doc: str, groups: usage.Groups = (),
        knobs=(), check_flags: bool = True,
        after_parse: Optional[Callable] = None,
        flags_check: Optional[Callable[[], None]] = None,
        takes_arguments: bool = False) -> None:
  """``console_base.run`` with the shipped flagfiles: ``--recipes`` lists
  them, ``--recipe=NAME`` and ``--flagfile=flags/...`` resolve to them. The
  arguments are ``console_base.run``'s (its ``expand_argv`` is the
  recipes')."""
  options = console_base.options_of(sys.argv)
  if "--recipes" in options or "-recipes" in options:
    sys.stdout.write(recipes.listing())
    sys.exit(0)
  console_base.run(prog, main, doc=doc, groups=groups, knobs=knobs,
                   check_flags=check_flags, after_parse=after_parse,
                   expand_argv=_expand_recipes, flags_check=flags_check,
                   takes_arguments=takes_arguments)

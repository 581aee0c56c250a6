"""Shipped flagfiles on the command line: by name, and by their repository
path from any directory.

Every paper row and published recipe is a flagfile under ``flags/``, found
in a checkout or an installed package by ``pyramidnet_tf.recipe_book``. Two
ways to name one, both working from any directory:

* ``--recipe=cifar10/pyramidnet110_a48`` (the path under ``flags/``,
  ``.flags`` optional);
* ``--flagfile=flags/cifar10/pyramidnet110_a48.flags``, the path the
  flagfiles' own "Run:" lines and the README use: when no such file exists
  relative to the working directory, the shipped one is read.

``expand_argv`` rewrites both into a ``--flagfile`` of an existing file
before absl parses the command line.
"""

import difflib
import os
from typing import List

from pyramidnet_tf.recipe_book import SUFFIX
from pyramidnet_tf.recipe_book import recipes_dir


class RecipeError(ValueError):
  """An unknown recipe name; the message lists the known ones."""


def names() -> List[str]:
  """Every shipped flagfile, as ``--recipe`` takes it (no ``.flags``)."""
  root = recipes_dir()
  found = []
  if root is None:
    return found
  for folder, _, files in os.walk(root):
    for name in files:
      if name.endswith(SUFFIX):
        path = os.path.relpath(os.path.join(folder, name), root)
        found.append(path[:-len(SUFFIX)].replace(os.sep, "/"))
  return sorted(found)


def summary(name: str) -> str:
  """The first comment line of recipe ``name`` (what it is)."""
  with open(path_of(name), encoding="utf-8") as f:
    for line in f:
      if line.startswith("#"):
        return line.lstrip("# ").strip()
  return ""


def path_of(name: str) -> str:
  """The file of recipe ``name``.

  Raises:
    RecipeError: no such recipe; the message lists them.
  """
  root = recipes_dir()
  relative = name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name
  if relative.startswith("flags/"):
    relative = relative[len("flags/"):]
  if root is not None:
    path = os.path.join(root, *relative.split("/")) + SUFFIX
    if os.path.isfile(path):
      return path
  known = names()
  if not known:
    raise RecipeError(f"--recipe={name}: no shipped flagfiles are installed")
  close = difflib.get_close_matches(relative, known, n=3, cutoff=0.5)
  # Also a name given without its folder (pyramidnet110_a48).
  close += [k for k in known if k.rsplit("/", 1)[-1] == relative
            and k not in close]
  hint = (f"did you mean {' or '.join(close)}? " if close else "")
  raise RecipeError(
      f"--recipe={name}: no such shipped flagfile; {hint}--recipes lists "
      f"all {len(known)} with what each reproduces")


def expand_argv(argv: List[str]) -> List[str]:
  """``argv`` with ``--recipe`` and missing ``flags/...`` flagfiles resolved.

  Args:
    argv: the command line (program name first).

  Raises:
    RecipeError: for an unknown ``--recipe`` (or ``--recipe`` without a
      name).
  """
  out = argv[:1]
  args = iter(argv[1:])
  for arg in args:
    if arg == "--":
      out.append(arg)
      out.extend(args)
      break
    if arg in ("--recipe", "-recipe"):
      value = next(args, None)
      if value is None:
        raise RecipeError("--recipe needs a name, e.g. "
                          "--recipe=cifar10/pyramidnet110_a48")
      out.append(f"--flagfile={path_of(value)}")
    elif arg.startswith(("--recipe=", "-recipe=")):
      out.append(f"--flagfile={path_of(arg.split('=', 1)[1])}")
    elif arg.startswith(("--flagfile=", "-flagfile=")):
      value = arg.split("=", 1)[1]
      if (not os.path.exists(value) and
          value.replace(os.sep, "/").startswith("flags/")):
        try:
          value = path_of(value)
        except RecipeError:
          pass  # absl reports the missing file with its own path
      out.append(f"--flagfile={value}")
    else:
      out.append(arg)
  return out


def listing() -> str:
  """``--recipes``: every shipped flagfile and its first comment line."""
  known = names()
  if not known:
    return "no shipped flagfiles found\n"
  width = max(len(name) for name in known)
  lines = [f"{name:<{width}}  {summary(name)}" for name in known]
  return "\n".join(lines) + f"\n\nfrom {recipes_dir()}\n"

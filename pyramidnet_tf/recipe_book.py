"""The shipped flagfiles (recipes): where they are, and the paper's published
errors they cite.

Every paper row and published recipe is a flagfile under ``flags/``. In a
checkout they sit next to the package; a ``pip install`` ships them inside
it as ``pyramidnet_tf/recipes/`` (setup.py maps ``flags/`` there);
``recipes_dir`` finds them either way. Resolving them on a command line
(``--recipe``, ``--recipes``) is ``pyramidnet_tf.cli.recipes``.

Why below every layer: the trainer's plan and ``describe`` print the paper
row of the network they build, and the command-line layer lists and expands
the same files; none of it needs TensorFlow.

Each flagfile under ``flags/cifar10``, ``flags/cifar100`` and
``flags/imagenet`` reproduces one row of the paper's tables (or one of the
authors' released models) and cites its published error in a comment line
starting ``# Published``; the flagfile's model flags say which network the
row is. Keeping the numbers only there means there is one place to correct.
"""

import dataclasses
import os
import re
from typing import List, Optional

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SUFFIX = ".flags"
_ROW_DIRS = ("cifar10", "cifar100", "imagenet")


def recipes_dir() -> Optional[str]:
  """The directory of the shipped flagfiles (inside an installed package,
  else the checkout's ``flags/``), or None when there is none."""
  for candidate in (os.path.join(_PACKAGE_DIR, "recipes"),
                    os.path.join(os.path.dirname(_PACKAGE_DIR), "flags")):
    if os.path.isdir(candidate):
      return candidate
  return None


@dataclasses.dataclass(frozen=True)
class PaperRow:
  """One flagfile's network and the error it cites.

  Attributes:
    path: the flagfile, relative to the repository root.
    dataset, depth, alpha, bottleneck, mode: its model flags (bottleneck
      None when the flagfile leaves the paper's default).
    published: the cited error, as the comment states it (e.g. "3.31 %",
      "20.11 % top-1 / 5.43 % top-5").
  """
  path: str
  dataset: str
  depth: int
  alpha: float
  bottleneck: Optional[bool]
  mode: str
  published: str


def _parse(path: str, flags_dir: str) -> Optional[PaperRow]:
  values = {}
  published = None
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line.startswith("# Published"):
        match = re.search(r"error[^:]*:\s*(.*?%(?:\s*top-1\s*/\s*[\d.]+\s*%"
                          r"\s*top-5)?)", line)
        if match:
          published = match.group(1)
      elif line == "--bottleneck":
        values["bottleneck"] = True
      elif line == "--nobottleneck":
        values["bottleneck"] = False
      elif line.startswith("--") and "=" in line:
        key, value = line[2:].split("=", 1)
        values[key] = value
  if published is None or not {"dataset", "depth", "alpha"} <= set(values):
    return None
  rel = "flags/" + os.path.relpath(path, flags_dir).replace(os.sep, "/")
  return PaperRow(path=rel, dataset=values["dataset"],
                  depth=int(values["depth"]), alpha=float(values["alpha"]),
                  bottleneck=values.get("bottleneck"),
                  mode=values.get("mode", "add"), published=published)


def rows(flags_dir: Optional[str] = None) -> List[PaperRow]:
  """Every paper row under ``flags_dir`` (empty if it does not exist).

  Args:
    flags_dir: the repository's ``flags`` folder; None: ``recipes_dir()``.
  """
  flags_dir = flags_dir or recipes_dir()
  found = []
  if flags_dir is None:
    return found
  for sub in _ROW_DIRS:
    folder = os.path.join(flags_dir, sub)
    if not os.path.isdir(folder):
      continue
    for name in sorted(os.listdir(folder)):
      if name.endswith(".flags"):
        row = _parse(os.path.join(folder, name), flags_dir)
        if row is not None:
          found.append(row)
  return found


def find(arch, flags_dir: Optional[str] = None) -> Optional[PaperRow]:
  """The paper row of ``arch``'s network, or None if it is not one.

  Args:
    arch: a ``widths.Architecture``.
    flags_dir: the repository's ``flags`` folder; None: ``recipes_dir()``.
  """
  for row in rows(flags_dir):
    if (row.dataset == arch.dataset and row.depth == arch.depth and
        row.alpha == float(arch.alpha) and row.mode == arch.mode and
        (row.bottleneck is None or row.bottleneck == arch.bottleneck)):
      return row
  return None

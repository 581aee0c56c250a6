"""The package's shape in numbers: what its structure costs a reader.

    python scripts/code_metrics.py            # a table
    python scripts/code_metrics.py --json     # the same as JSON

Reads the source as text and syntax trees (nothing is imported), and reports:
modules per package; the largest files and longest functions; reads of
``FLAGS.`` outside ``pyramidnet_tf/cli/`` (tools included: flags should be
turned into a typed config in one place); flag defaults written as literals
although the flag is a setting of ``training/config.py``, whose dataclass
field holds the default already (``cli.config_flags.default`` reads it);
imports inside function bodies;
and import arrows that point up the layers of docs/architecture.md. The
layers, lowest first:

  0  foundation: options, exit_codes, tf_import, errors (user-error types),
     console_base (how a tool starts), recipe_book (the shipped flagfiles)
  1  model/
  2  data/, runtime/, model_dir/, convert/
  3  training/, serving/
  4  cli/, the top-level tools, data_prep/ (a separate package beside them)

A module may import from its own layer or below; anything else is an arrow
pointing up. data_prep may use only the foundation and its own modules.
"""

import argparse
import ast
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("pyramidnet_tf", "data_prep")
FOUNDATION = ("options", "exit_codes", "tf_import", "errors", "console_base",
              "recipe_book")
LAYERS = {"model": 1, "data": 2, "runtime": 2, "model_dir": 2, "convert": 2,
          "training": 3, "serving": 3, "cli": 4}


def _modules() -> List[str]:
  found = []
  for package in PACKAGES:
    for parent, _, names in os.walk(os.path.join(ROOT, package)):
      for name in names:
        if name.endswith(".py"):
          found.append(os.path.relpath(os.path.join(parent, name), ROOT))
  return sorted(found)


def _dotted(path: str) -> str:
  name = path[:-3].replace(os.sep, ".")
  return name[:-len(".__init__")] if name.endswith(".__init__") else name


def layer_of(module: str) -> Optional[Tuple[str, int]]:
  """(group, layer) of a dotted module of the project, None for others."""
  parts = module.split(".")
  if parts[0] == "data_prep":
    return "data_prep", 4
  if parts[0] != "pyramidnet_tf":
    return None
  if len(parts) == 1:
    return "pyramidnet_tf", 0
  if parts[1] in FOUNDATION:
    return parts[1], 0
  if parts[1] in LAYERS:
    return parts[1], LAYERS[parts[1]]
  return "tools", 4       # train.py, evaluate.py, ... (top-level modules)


def _imports(tree: ast.AST, module: str) -> List[Tuple[str, bool]]:
  """(imported module, inside a function) of every import statement."""
  found = []

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      inner = in_function or isinstance(child, (ast.FunctionDef,
                                                ast.AsyncFunctionDef))
      if isinstance(child, ast.Import):
        found.extend((alias.name, in_function) for alias in child.names)
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          package = module.split(".")[:-child.level]
          base = ".".join(package + ([base] if base else []))
        for alias in child.names:
          found.append((f"{base}.{alias.name}" if base else alias.name,
                        in_function))
      visit(child, inner)
  visit(tree, False)
  return found


def config_settings() -> set:
  """The setting names of ``training/config.py``: the fields of its
  section dataclasses (every class named ``*Config`` but ``TrainConfig``,
  which holds the sections)."""
  with open(os.path.join(ROOT, "pyramidnet_tf", "training", "config.py")) as f:
    tree = ast.parse(f.read())
  names = set()
  for node in tree.body:
    if (isinstance(node, ast.ClassDef) and node.name.endswith("Config") and
        node.name != "TrainConfig"):
      names.update(item.target.id for item in node.body
                   if isinstance(item, ast.AnnAssign) and
                   isinstance(item.target, ast.Name))
  return names


def duplicated_default(node: ast.AST, settings: set) -> Optional[str]:
  """The flag name when ``node`` is a ``DEFINE_*`` call of a setting whose
  default is written out (not a call, e.g. ``config_flags.default``)."""
  if not (isinstance(node, ast.Call) and
          isinstance(node.func, ast.Attribute) and
          node.func.attr.startswith("DEFINE_") and len(node.args) >= 2):
    return None
  name = node.args[0]
  if not (isinstance(name, ast.Constant) and name.value in settings):
    return None
  return None if isinstance(node.args[1], ast.Call) else name.value


def _resolve(name: str, known: set) -> str:
  """The longest known module prefix of ``name`` (``a.b.func`` -> ``a.b``)."""
  parts = name.split(".")
  for end in range(len(parts), 0, -1):
    candidate = ".".join(parts[:end])
    if candidate in known:
      return candidate
  return name


def measure() -> Dict:
  """The numbers described in the module docstring."""
  paths = _modules()
  known = {_dotted(p) for p in paths}
  per_package: Dict[str, int] = {}
  sizes, functions, flag_reads, local_imports, upward = [], [], {}, {}, []
  settings, duplicated = config_settings(), {}
  for path in paths:
    module = _dotted(path)
    with open(os.path.join(ROOT, path)) as f:
      text = f.read()
    tree = ast.parse(text)
    package = os.path.dirname(path).replace(os.sep, "/")
    per_package[package] = per_package.get(package, 0) + 1
    sizes.append((len(text.splitlines()), path))
    for node in ast.walk(tree):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        functions.append((node.end_lineno - node.lineno + 1,
                          f"{path}:{node.lineno} {node.name}"))
      if (isinstance(node, ast.Attribute) and
          isinstance(node.value, ast.Name) and node.value.id == "FLAGS"):
        if not path.startswith(os.path.join("pyramidnet_tf", "cli")):
          flag_reads[path] = flag_reads.get(path, 0) + 1
      if path.startswith("pyramidnet_tf") and duplicated_default(node,
                                                                 settings):
        duplicated[path] = duplicated.get(path, 0) + 1
    mine = layer_of(module)
    for name, in_function in _imports(tree, module):
      target = _resolve(name, known)
      if in_function and target.split(".")[0] in (
          PACKAGES + ("tensorflow", "numpy", "torch")):
        local_imports[path] = local_imports.get(path, 0) + 1
      theirs = layer_of(target)
      if mine is None or theirs is None or target == module:
        continue
      if mine[0] == "data_prep":
        bad = theirs[0] != "data_prep" and theirs[1] != 0
      else:
        bad = theirs[1] > mine[1] and theirs[0] != mine[0]
      if bad:
        upward.append(f"{module} -> {target}")
  sizes.sort(reverse=True)
  functions.sort(reverse=True)
  return {
      "modules_per_package": dict(sorted(per_package.items())),
      "largest_files": [f"{n} {p}" for n, p in sizes[:5]],
      "longest_functions": [f"{n} {p}" for n, p in functions[:5]],
      "flag_reads_outside_cli": sum(flag_reads.values()),
      "flag_reads_by_file": dict(sorted(flag_reads.items())),
      "duplicated_defaults": sum(duplicated.values()),
      "duplicated_defaults_by_file": dict(sorted(duplicated.items())),
      "function_level_imports": sum(local_imports.values()),
      "function_level_imports_by_file": dict(sorted(local_imports.items())),
      "upward_imports": sorted(set(upward)),
  }


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--json", action="store_true", help="print JSON")
  args = parser.parse_args(argv)
  numbers = measure()
  if args.json:
    json.dump(numbers, sys.stdout, indent=2)
    print()
    return 0
  for key, value in numbers.items():
    if isinstance(value, dict):
      print(f"{key}:")
      for name, count in value.items():
        print(f"  {count:5d}  {name}")
    elif isinstance(value, list):
      print(f"{key}: {len(value)}" if key == "upward_imports" else f"{key}:")
      for item in value:
        print(f"  {item}")
    else:
      print(f"{key}: {value}")
  return 0


if __name__ == "__main__":
  sys.exit(main())

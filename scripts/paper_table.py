"""The README's "Reproduce the paper" table, generated from describe.

    python scripts/paper_table.py            # print the table
    python scripts/paper_table.py --write    # replace it in README.md
    python scripts/paper_table.py --check    # exit 1 when README.md differs

Every row is one flagfile under ``flags/cifar10``, ``flags/cifar100`` and
``flags/imagenet`` that cites a published error (``recipe_book``), and
every number in it is what ``python -m pyramidnet_tf.describe --json
--flagfile=<that flagfile>`` prints: the output feature dimension, the
parameters, the forward MACs per image, the training compute of the
flagfile's schedule (3 x FLOPs x images seen) and the training-memory
estimate at the flagfile's batch on one GPU. The table sits in README.md
between the ``<!-- paper_table: begin -->`` and ``<!-- paper_table: end -->``
markers; tests/docs/test_readme.py checks that it is this script's output.
"""

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
BEGIN = "<!-- paper_table: begin (scripts/paper_table.py --write) -->"
END = "<!-- paper_table: end -->"
HEADER = ("| paper row | `--recipe=` | published error | output dim | "
          "parameters | MACs / image | training compute | training memory "
          "per GPU (estimate) |\n|---|---|---|---|---|---|---|---|")
_DATASETS = {"cifar10": "C10", "cifar100": "C100", "imagenet": "ImageNet"}
GIB = 2 ** 30

sys.path.insert(0, ROOT)
# pylint: disable=g-import-not-at-top,wrong-import-position
from pyramidnet_tf.describe import format_flops
from pyramidnet_tf import recipe_book as paper_rows
# pylint: enable=g-import-not-at-top,wrong-import-position


def flagfiles() -> List[str]:
  """The flagfiles of the paper's rows, relative to the repository root."""
  return [row.path for row in paper_rows.rows(os.path.join(ROOT, "flags"))]


def describe(flagfile: str) -> Dict:
  """``describe --json`` of one flagfile (run as a user runs it).

  Args:
    flagfile: a path relative to the repository root.

  Raises:
    RuntimeError: naming the flagfile and describe's error.
  """
  done = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.describe", "--json",
       f"--flagfile={flagfile}"], cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=ROOT), check=False)
  if done.returncode != 0:
    raise RuntimeError(f"describe --flagfile={flagfile} failed: "
                       f"{done.stderr.strip()}")
  return json.loads(done.stdout)


def describe_all(files: Sequence[str]) -> Dict[str, Dict]:
  """``describe`` of each flagfile, two at a time."""
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return dict(zip(files, pool.map(describe, files)))


def recipe_name(flagfile: str) -> str:
  """``flags/cifar10/x.flags`` -> ``cifar10/x`` (what --recipe takes)."""
  return flagfile[len("flags/"):-len(".flags")]


def row_label(report: Dict, flagfile: str) -> str:
  """The network of a row in words, from describe's report."""
  label = (f"{_DATASETS[report['dataset']]} {report['depth']} "
           f"{'additive' if report['mode'] == 'add' else 'multiplicative'} "
           f"alpha={report['alpha']:g}, "
           f"{'bottleneck' if report['bottleneck'] else 'basic'} units")
  if report.get("drop_rate"):
    label += f", dropout {report['drop_rate']:g}"
  if flagfile.endswith("_pytorch.flags"):
    label += " (the authors' PyTorch release)"
  return label


def row(flagfile: str, report: Dict) -> str:
  """One table row (see the module docstring for the columns)."""
  training = report["training"]
  memory = report["memory"]
  return " | ".join([
      "", row_label(report, flagfile), f"`{recipe_name(flagfile)}`",
      report["published"]["error"], str(report["num_features"]),
      f"{report['parameters']:,}", f"{report['macs'] / 1e9:.2f} G",
      f"{format_flops(training['flops'])} ({training['epochs']:g} epochs)",
      f"{memory['estimate']['total'] / GIB:.1f} GiB (batch "
      f"{memory['batch_per_replica']})", ""]).strip()


def table(reports: Dict[str, Dict]) -> str:
  """The whole table, header included, rows in ``reports``' order."""
  return "\n".join([HEADER] + [row(f, r) for f, r in reports.items()])


def readme_table(text: str) -> str:
  """The table between the markers of README.md's text.

  Raises:
    ValueError: when the markers are missing.
  """
  start, end = text.find(BEGIN), text.find(END)
  if start < 0 or end < start:
    raise ValueError(f"README.md lacks the markers {BEGIN!r} ... {END!r}")
  return text[start + len(BEGIN):end].strip("\n")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  group = parser.add_mutually_exclusive_group()
  group.add_argument("--write", action="store_true",
                     help="replace the table in README.md")
  group.add_argument("--check", action="store_true",
                     help="exit 1 when README.md's table differs")
  args = parser.parse_args(argv)
  generated = table(describe_all(flagfiles()))
  if not (args.write or args.check):
    print(generated)
    return 0
  with open(README, encoding="utf-8") as f:
    text = f.read()
  current = readme_table(text)
  if args.check:
    if current != generated:
      print("README.md's paper table differs from describe's numbers; run "
            "python scripts/paper_table.py --write", file=sys.stderr)
      return 1
    return 0
  start = text.find(BEGIN) + len(BEGIN)
  text = text[:start] + "\n" + generated + "\n" + text[text.find(END):]
  with open(README, "w", encoding="utf-8") as f:
    f.write(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())

"""README.md and docs/*.md cannot drift from the code.

* Every Python block runs, in a scratch directory holding what the blocks
  name: a model directory trained once on tiny data, with an EMA and a best
  checkpoint, at ``runs/quickstart/model``; a held-out image; the authors'
  style PyTorch file ``model_best.pth.tar`` of the import_torch example.
* Every command of the project's tools that a shell block shows is checked
  by the tool itself (``PYRAMIDNET_TF_CHECK_FLAGS=1``: unknown flags, bad
  values, recipes, flagfiles; nothing runs), in parallel; transcripts that
  show an error must fail the check, the others must pass it. describe's
  transcripts are run and their output compared line for line.
* The "Reproduce the paper" table is ``scripts/paper_table.py``'s output,
  and each of its numbers is checked against ``describe --json`` of the
  row's flagfile, parsed independently of the script.
* The Layout section names every tool module and subpackage.
"""

import concurrent.futures
import glob
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests import train_fixtures as fx
from tests.docs import markdown_commands as md

REPO = fx.REPO
DOCS = ["README.md"] + sorted(
    os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "docs",
                                                             "*.md")))
_TOOL = re.compile(r"^(?:\S*/)?python3?(?:\.\d+)?$")


def _blocks():
  return [b for path in DOCS for b in md.blocks(os.path.join(REPO, path))]


def _tool_commands():
  """(command, module, args) of every project tool a doc runs."""
  found = []
  for block in _blocks():
    for command in md.commands(block):
      tokens = command.tokens()
      while tokens and re.match(r"^[A-Z_]+=", tokens[0]):
        tokens = tokens[1:]  # VAR=value prefixes
      if (len(tokens) >= 3 and _TOOL.match(tokens[0]) and tokens[1] == "-m"
          and tokens[2].split(".")[0] in ("pyramidnet_tf", "data_prep")):
        found.append((command, tokens[2], tokens[3:]))
  return found


def _load_script():
  spec = importlib.util.spec_from_file_location(
      "paper_table", os.path.join(REPO, "scripts", "paper_table.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


# --- shell commands ---------------------------------------------------------


def _check(module: str, args):
  """The tool's own check of a command line (nothing runs)."""
  args = [a for a in args if a != "..."]  # elided flags ("train ... --x")
  return subprocess.run(
      [sys.executable, "-m", module] + args, cwd=REPO,
      env=fx.cli_env(PYRAMIDNET_TF_CHECK_FLAGS="1"), capture_output=True,
      text=True, timeout=300, check=False)


def _only_elided_required(args, result) -> bool:
  """For a command that elides flags ("train ... --x"): the check failed
  only because required flags are among the elided ones."""
  if "..." not in args or result.returncode != 2:
    return False
  lines = [l.split(": error: ", 1)[-1].strip()
           for l in result.stderr.strip().splitlines()]
  lines = [l for l in lines if not re.match(r"^\d+ problems with", l)]
  return bool(lines) and all(re.match(r"^--\w+ is required", l)
                             for l in lines)


def _shows_error(command) -> bool:
  return command.output is not None and ": error:" in command.output


def test_every_tool_command_passes_the_tools_own_flag_check():
  commands = _tool_commands()
  assert len(commands) >= 20, "the README lost its commands?"
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    results = list(pool.map(lambda c: _check(c[1], c[2]), commands))
  wrong = []
  for (command, _, args), result in zip(commands, results):
    if _only_elided_required(args, result):
      continue
    if _shows_error(command):
      shown = command.output.strip().splitlines()[0]
      if result.returncode == 0 or shown not in result.stderr:
        wrong.append(f"{command.where}: {command.text}\n  shows {shown!r}, "
                     f"the check gave {result.returncode}: "
                     f"{result.stderr.strip()[-300:]}")
    elif result.returncode != 0 or "flags OK" not in result.stdout:
      wrong.append(f"{command.where}: {command.text}\n  "
                   f"{(result.stderr or result.stdout).strip()[-400:]}")
  assert not wrong, "\n".join(wrong)


def test_the_flag_check_refuses_what_a_tool_refuses():
  """The check is not a rubber stamp: the harness would see a bad flag."""
  bad = _check("pyramidnet_tf.train", ["--recipe=cifar10/pyramidnet110_a48",
                                       "--data_dir=d", "--no_such_flag=1"])
  assert bad.returncode == 2 and "no_such_flag" in bad.stderr
  bad = _check("pyramidnet_tf.evaluate", ["--model_dir=m", "--data_dir=d",
                                          "--use_ema=maybe"])
  assert bad.returncode == 2 and "use_ema" in bad.stderr
  bad = _check("data_prep.folder", ["--source=x", "--output_dir=y",
                                    "--val_fraction=nope"])
  assert bad.returncode != 0 and "val_fraction" in bad.stderr
  good = _check("pyramidnet_tf.export", ["--model_dir=m", "--export_dir=e"])
  assert good.returncode == 0 and "flags OK" in good.stdout


def test_describe_transcripts_print_what_describe_prints():
  shown = [(c, args) for c, module, args in _tool_commands()
           if module == "pyramidnet_tf.describe" and c.output]
  assert shown
  for command, args in shown:
    result = subprocess.run(
        [sys.executable, "-m", "pyramidnet_tf.describe"] + args, cwd=REPO,
        env=fx.cli_env(), capture_output=True, text=True, timeout=300,
        check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip() == command.output.rstrip(), command.where


# --- the paper table ---------------------------------------------------------


@pytest.fixture(scope="module")
def paper_table():
  script = _load_script()
  return script, script.describe_all(script.flagfiles())


def test_readme_paper_table_is_the_scripts_output(paper_table):
  script, reports = paper_table
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    readme = f.read()
  assert script.readme_table(readme) == script.table(reports), (
      "README.md's paper table is stale: python scripts/paper_table.py "
      "--write")


def _flops(text: str) -> float:
  value, unit = re.fullmatch(r"([\d,.]+) (PFLOP|TFLOP|GFLOP)", text).groups()
  return float(value.replace(",", "")) * {"PFLOP": 1e15, "TFLOP": 1e12,
                                          "GFLOP": 1e9}[unit]


def test_every_number_of_the_paper_table_is_describes(paper_table):
  script, reports = paper_table
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    rows = script.readme_table(f.read()).splitlines()[2:]
  by_recipe = {script.recipe_name(f): r for f, r in reports.items()}
  seen = set()
  for line in rows:
    cells = [c.strip() for c in line.strip("|").split("|")]
    recipe = cells[1].strip("`")
    report = by_recipe[recipe]
    seen.add(recipe)
    assert cells[2] == report["published"]["error"], line
    assert int(cells[3]) == report["num_features"], line
    assert int(cells[4].replace(",", "")) == report["parameters"], line
    assert float(cells[5].rstrip(" G")) == pytest.approx(
        report["macs"] / 1e9, abs=0.005), line
    compute, epochs = re.fullmatch(r"(.+) \(([\d.]+) epochs\)",
                                   cells[6]).groups()
    assert _flops(compute) == pytest.approx(report["training"]["flops"],
                                            rel=0.006), line
    assert float(epochs) == report["training"]["epochs"], line
    memory, batch = re.fullmatch(r"([\d.]+) GiB \(batch (\d+)\)",
                                 cells[7]).groups()
    assert float(memory) == pytest.approx(
        report["memory"]["estimate"]["total"] / 2 ** 30, abs=0.05), line
    assert int(batch) == report["memory"]["batch_per_replica"], line
  assert seen == set(by_recipe), "a paper flagfile has no row"


# --- Python blocks ------------------------------------------------------------


@pytest.fixture(scope="module")
def doc_workspace(tmp_path_factory):
  """A directory holding what the Python blocks name."""
  import torch  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  from tests import torch_pyramidnet  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp("readme")
  data_dir = fx.write_dataset(str(root / "data"), num_classes=4,
                              train_per_class=16, eval_per_class=4, size=16)
  model_dir = root / "runs" / "quickstart" / "model"
  proc = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=16",
      "--epochs=2", "--steps_per_loop=4", "--ema_decay=0.5",
      "--eval_every_epochs=1"], timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.isdir(model_dir / "best"), "no best checkpoint kept"
  holdout = root / "runs" / "quickstart" / "digits" / "holdout"
  holdout.mkdir(parents=True)
  Image.fromarray(fx.class_image(0, 4, 16, np.random.default_rng(3))).save(
      holdout / "0_1768.jpg")
  net = torch_pyramidnet.randomize(
      torch_pyramidnet.TorchPyramidNet("cifar100", 29, 24, True), seed=5)
  torch_pyramidnet.save_like_authors(net, str(root / "model_best.pth.tar"))
  del torch
  return root


def _python_blocks():
  return [b for b in _blocks() if md.kind(b) == "python"]


@pytest.mark.parametrize("block", _python_blocks(),
                         ids=lambda b: f"{os.path.basename(b.path)}:{b.line}")
def test_python_block_runs(block, doc_workspace):
  result = subprocess.run([sys.executable, "-c", block.text],
                          cwd=doc_workspace, env=fx.cli_env(),
                          capture_output=True, text=True, timeout=600,
                          check=False)
  assert result.returncode == 0, (
      f"{block.where}:\n{block.text}\n{result.stderr[-3000:]}")


def test_python_blocks_include_the_public_api_section():
  sections = {b.section for b in _python_blocks()}
  assert "Use a trained model from Python" in sections


# --- Layout ---------------------------------------------------------------------


def test_layout_names_every_tool_and_subpackage():
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    layout = f.read().split("## Layout", 1)[1]
  package = os.path.join(REPO, "pyramidnet_tf")
  tools = [n for n in os.listdir(package) if n.endswith(".py") and
           'if __name__ == "__main__"' in open(os.path.join(package, n)).read()]
  subpackages = [n + "/" for n in os.listdir(package)
                 if os.path.isfile(os.path.join(package, n, "__init__.py"))]
  missing = [n for n in tools + subpackages
             if not re.search(rf"(?<![\w/]){re.escape(n)}", layout)]
  assert not missing, f"README.md's Layout does not name {missing}"
  assert tools and subpackages


# --- transcripts run on the trained model -----------------------------------


def _transcripts(module: str):
  return [(c, args) for c, m, args in _tool_commands()
          if m == module and c.output is not None]


def _run_in(workspace, module: str, args):
  return subprocess.run([sys.executable, "-m", module] + args,
                        cwd=workspace, env=fx.cli_env(), capture_output=True,
                        text=True, timeout=600, check=False)


def test_import_torch_transcript_prints_what_import_torch_prints(
    doc_workspace):
  (command, args), = _transcripts("pyramidnet_tf.import_torch")
  result = _run_in(doc_workspace, "pyramidnet_tf.import_torch", args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.rstrip() == command.output.rstrip(), command.where


def test_evaluate_export_predict_transcripts_run_on_a_trained_model(
    doc_workspace):
  """The section's names: ``run`` (a model dir), ``data`` (its data),
  ``photo.jpg``; the scores differ, the shape of the output must not."""
  import json  # pylint: disable=g-import-not-at-top
  for name, target in (("run", "runs/quickstart/model"), ("data", "data"),
                       ("photo.jpg",
                        "runs/quickstart/digits/holdout/0_1768.jpg")):
    if not os.path.lexists(doc_workspace / name):
      os.symlink(doc_workspace / target, doc_workspace / name)
  (evaluate, args), = _transcripts("pyramidnet_tf.evaluate")
  result = _run_in(doc_workspace, "pyramidnet_tf.evaluate", args)
  assert result.returncode == 0, result.stderr[-2000:]
  shown, got = json.loads(evaluate.output), json.loads(result.stdout)
  assert list(got) == list(shown), evaluate.where
  assert {k: got[k] for k in ("model_dir", "data_dir")} == {
      k: shown[k] for k in ("model_dir", "data_dir")}
  (export, args), = _transcripts("pyramidnet_tf.export")
  result = _run_in(doc_workspace, "pyramidnet_tf.export", args)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.rstrip() == export.output.rstrip(), export.where
  (predict, args), = _transcripts("pyramidnet_tf.predict")
  result = _run_in(doc_workspace, "pyramidnet_tf.predict", args)
  assert result.returncode == 0, result.stderr[-2000:]
  line = re.compile(r"^  \d\. \S+ \(class \d+\) [01]\.\d{4}$")
  got = result.stdout.rstrip().splitlines()
  shown = predict.output.rstrip().splitlines()
  assert got[0] == shown[0] and len(got) == len(shown), predict.where
  assert all(line.match(l) for l in got[1:] + shown[1:]), (got, shown)

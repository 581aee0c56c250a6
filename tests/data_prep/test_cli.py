"""The data_prep tools start as the trainer does: grouped --help (exit 0), every flag problem
at once (exit 2), failures as one line (exit 1); data_prep.cifar reads --dataset from the
archive."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
from absl import flags

from data_prep import DataPrepFlagError
from data_prep import cifar
from data_prep import cifar_archive
from data_prep import cifar_tfds
from data_prep import cli
from data_prep import folder
from tests import data_prep_fixtures as fx

TOOLS = ["cifar", "folder", "imagenet", "verify", "digits_demo"]


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
  """A PYTHONPATH entry whose ``tensorflow`` fails to import."""
  root = tmp_path_factory.mktemp("no_tf")
  (root / "tensorflow").mkdir()
  (root / "tensorflow" / "__init__.py").write_text(
      "raise ImportError('TensorFlow was imported')\n")
  return str(root)


def _run_without_tensorflow(no_tensorflow, tool, *args):
  return fx.run_cli(tool, *args, env={
      "PYTHONPATH": os.pathsep.join([no_tensorflow, fx.REPO_ROOT])})


def _error_lines(proc, prog):
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return [line for line in proc.stderr.splitlines() if line.startswith(f"{prog}: error:")]


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
  """{dataset: a python-format archive}."""
  root = tmp_path_factory.mktemp("cifar_cli")
  out = {}
  for dataset, per_batch, test in (("cifar10", 4, 6), ("cifar100", 10, 6)):
    arrays = fx.cifar_arrays(dataset, per_batch, test, seed=2)
    name = f"{dataset.replace('cifar', 'cifar-')}-python.tar.gz"
    out[dataset] = fx.write_tar(str(root / name), fx.cifar_files(dataset, arrays, "python"),
                                "w:gz")
  return out


# ---------------------------------------------------------------------------------------
# --help


@pytest.mark.parametrize("tool", TOOLS)
def test_help_is_the_trainers_format_and_exits_0(tool, no_tensorflow):
  proc = _run_without_tensorflow(no_tensorflow, tool, "--help")
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  assert out.startswith(f"usage: python -m data_prep.{tool} [flags]\n")
  assert "\nexit codes:\n" in out and "    2  a usage error" in out
  assert "\nCommand-line files:\n" in out and "--helpfull" in out
  # absl's raw format: a "<path>.py:" header above the flags and quoted defaults.
  assert not [line for line in out.splitlines() if line.rstrip().endswith(".py:")], out
  assert "default: '" not in out
  assert "(default: " in out or "(no default)" in out


def _defined_and(tool, program):
  """The flags `tool` defines and what `program` computes, in a fresh process.

  `program` runs after `tool.define_flags()` (the module imported as `tool`, with json,
  dataclasses, absl's flags and data_prep.cli) and leaves its result in `result`.
  """
  program = (f"import dataclasses, json\nfrom absl import flags\n"
             f"from data_prep import cli, {tool} as tool\n"
             "from pyramidnet_tf import console_base\ntool.define_flags()\n"
             f"{program}\nprint(json.dumps([console_base.defined_names(), result]))\n")
  proc = subprocess.run([sys.executable, "-c", program], cwd=fx.REPO_ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("tool", TOOLS)
def test_every_flag_of_the_tool_is_in_a_help_group(tool):
  defined, grouped = _defined_and(
      tool, "result = [n for _, names in tool.GROUPS for n in names]")
  assert len(grouped) == len(set(grouped)), "a flag is in two groups"
  assert sorted(grouped) == sorted(defined)


COMMANDS = {"cifar": "CifarCommand", "folder": "FolderCommand",
            "imagenet": "ImagenetCommand", "verify": "VerifyCommand",
            "digits_demo": "DigitsCommand"}


@pytest.mark.parametrize("tool", TOOLS)
def test_the_tools_config_holds_every_flag_it_defines(tool):
  """Each flag reaches the tool's work through its typed config, none beside it."""
  defined, configured = _defined_and(tool, (
      "flags.FLAGS(['prog'])\n"
      f"config = cli.from_flags(tool.{COMMANDS[tool]})\n"
      "def names(value):\n"
      "  for f in dataclasses.fields(value):\n"
      "    inner = getattr(value, f.name)\n"
      "    if dataclasses.is_dataclass(inner):\n"
      "      yield from names(inner)\n"
      "    elif f.name in flags.FLAGS:\n"
      "      assert inner == flags.FLAGS[f.name].value, f.name\n"
      "      yield f.name\n"
      "result = list(names(config))"))
  assert sorted(configured) == sorted(defined)


def test_a_config_is_built_from_the_flags_of_its_fields():
  values = flags.FlagValues()
  flags.DEFINE_string("source", None, "", flag_values=values)
  flags.DEFINE_string("output_dir", None, "", flag_values=values)
  flags.DEFINE_bool("overwrite", False, "", flag_values=values)
  flags.DEFINE_integer("workers", 1, "", flag_values=values)
  flags.DEFINE_integer("seed", 0, "", flag_values=values)
  values(["prog", "--source=~/images", "--output_dir=~/shards", "--seed=7"])

  @dataclasses.dataclass(frozen=True)
  class Command:
    source: str
    output: cli.Output

  command = cli.from_flags(Command, values)
  assert command == Command("~/images", cli.Output("~/shards", False, 1, 7, 0))
  assert command.output.path == os.path.expanduser("~/shards")
  with pytest.raises(KeyError, match="has no flag --val_fraction"):
    cli.from_flags(folder.FolderCommand, values)


def test_the_checks_read_the_config_not_the_flags(tmp_path):
  (tmp_path / "run").mkdir()
  (tmp_path / "run" / "model_config.json").write_text("{}")
  command = cifar.CifarCommand(
      dataset=None, source="x.tar.gz", download=True, download_dir="d",
      download_url="", download_sha256="", tfds_data_dir="t", train_shards=1,
      test_shards=1, output=cli.Output(str(tmp_path / "run"), False, 1, 0))
  problems = [p for p in cifar._problems(command) if p]  # pylint: disable=protected-access
  assert problems[0] == "pass either --source or --download, not both"
  assert len(problems) == 2 and "model" in problems[1], problems
  alone = dataclasses.replace(command, source=None,
                              output=cli.Output(str(tmp_path / "new"), False, 1, 0))
  assert [p for p in cifar._problems(alone) if p] == [  # pylint: disable=protected-access
      "--download needs --dataset=cifar10 or --dataset=cifar100 (which archive to fetch)"]


def test_help_lists_the_flags_in_their_groups(no_tensorflow):
  out = _run_without_tensorflow(no_tensorflow, "cifar", "--help").stdout
  for title in ("Input:", "Download:", "Output:"):
    assert f"\n{title}\n" in out
  flags_part = out[out.index("\nInput:\n"):]
  assert (flags_part.index("--source") < flags_part.index("--download_dir")
          < flags_part.index("--output_dir"))
  assert "  --[no]overwrite (default: off)" in out


# ---------------------------------------------------------------------------------------
# Flag problems: all at once, exit 2, before TensorFlow.


def test_every_flag_problem_is_reported_at_once_with_exit_2(no_tensorflow, tmp_path):
  proc = _run_without_tensorflow(no_tensorflow, "folder", "--workers=0", "--val_fraction=1.5",
                                 "--train_shards=-1", f"--source={tmp_path / 'missing'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert lines[0] == "data_prep.folder: error: 5 problems with the flags:", proc.stderr
  problems = [line.strip() for line in lines[1:]]
  assert problems == [
      "--val_fraction must be a finite number in [0, 1) (0 = no validation split); got 1.5",
      "--train_shards must be an integer >= 0 (0 = automatic); got -1",
      "--workers must be an integer >= 1; got 0",
      f"--source={tmp_path / 'missing'} does not exist; expected a folder with one "
      "subfolder of images per class",
      "--output_dir is required: the folder to write the shards and manifest.json to"]


@pytest.mark.parametrize("tool,args,needle", [
    ("cifar", ["--download"], "--download needs --dataset=cifar10 or --dataset=cifar100"),
    ("cifar", ["--source=x.tar.gz", "--download", "--dataset=cifar10"],
     "pass either --source or --download, not both"),
    ("imagenet", [], "nothing to convert: pass --train=PATH, --val=PATH or both"),
    ("imagenet", ["--val=v", "--label_offset=2"], "--label_offset must be an integer in 0..1"),
    ("verify", [], "--data_dir is required"),
    ("digits_demo", ["--holdout_per_class=-1"], "--holdout_per_class must be an integer >= 0"),
], ids=["download without dataset", "source and download", "imagenet without input",
        "label offset", "verify without data_dir", "negative holdout"])
def test_a_usage_error_is_one_line_each_with_exit_2(no_tensorflow, tmp_path, tool, args,
                                                    needle):
  proc = _run_without_tensorflow(no_tensorflow, tool, *args,
                                 f"--output_dir={tmp_path / 'out'}" if tool != "verify"
                                 else f"--workers={1}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert needle in proc.stderr, proc.stderr
  assert not (tmp_path / "out").exists()


def test_unexpected_arguments_and_unknown_flags_exit_2(no_tensorflow, tmp_path):
  proc = _run_without_tensorflow(no_tensorflow, "verify", f"--data_dir={tmp_path}", "extra")
  assert proc.returncode == 2
  assert _error_lines(proc, "data_prep.verify") == [
      "data_prep.verify: error: unexpected arguments: extra (every input is a --flag; "
      "--help lists them)"]
  proc = _run_without_tensorflow(no_tensorflow, "cifar", "--no_such_flag=1")
  assert proc.returncode == 2
  assert proc.stderr.strip() == ("data_prep.cifar: error: Unknown command line flag "
                                 "'no_such_flag' (--help lists the flags)")


def test_a_failure_while_working_is_one_line_with_exit_1(tmp_path):
  not_an_archive = tmp_path / "cifar-10-python.tar.gz"
  not_an_archive.write_bytes(b"not a tar file")
  proc = fx.run_cli("cifar", f"--source={not_an_archive}", f"--output_dir={tmp_path / 'out'}")
  assert proc.returncode == 1, proc.stderr[-2000:]
  lines = _error_lines(proc, "data_prep.cifar")
  assert len(lines) == 1 and "is neither a folder nor a tar archive" in lines[0], proc.stderr


# ---------------------------------------------------------------------------------------
# --dataset read from the archive.


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_dataset_is_read_from_the_archive(archives, tmp_path, dataset):
  assert cifar_archive.load(None, archives[dataset]).dataset == dataset
  out = tmp_path / "out"
  proc = fx.run_cli("cifar", f"--source={archives[dataset]}", f"--output_dir={out}",
                    "--train_shards=1", "--test_shards=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["dataset"] == dataset
  assert manifest["num_classes"] == (10 if dataset == "cifar10" else 100)


def test_a_dataset_that_contradicts_the_archive_is_one_line_naming_both(archives, tmp_path):
  source = archives["cifar10"]
  proc = fx.run_cli("cifar", "--dataset=cifar100", f"--source={source}",
                    f"--output_dir={tmp_path / 'out'}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert _error_lines(proc, "data_prep.cifar") == [
      f"data_prep.cifar: error: --dataset=cifar100 contradicts --source={source}: it holds "
      "CIFAR-10, not CIFAR-100; pass --dataset=cifar10 or leave --dataset out (it is read "
      "from --source)"]
  assert not (tmp_path / "out").exists()
  # Given and agreeing, it is accepted.
  assert cifar_archive.load("cifar10", source).dataset == "cifar10"


def test_a_folder_holding_both_cifars_needs_dataset(tmp_path):
  for dataset in ("cifar10", "cifar100"):
    fx.write_tree(str(tmp_path / "both"),
                  fx.cifar_files(dataset, fx.cifar_arrays(dataset, 2, 2), "binary"))
  with pytest.raises(DataPrepFlagError, match="holds both CIFAR-10 and CIFAR-100; pass "
                     "--dataset=cifar10 or --dataset=cifar100"):
    cifar_archive.load(None, str(tmp_path / "both"))
  assert cifar_archive.load("cifar100", str(tmp_path / "both")).dataset == "cifar100"


def test_dataset_is_read_from_a_tfds_data_dir(tmp_path):
  def prepare(dataset):
    folder = tmp_path / dataset / "3.0.2"
    folder.mkdir(parents=True)
    (folder / "dataset_info.json").write_text("{}")

  prepare("cifar100")
  assert cifar_tfds.prepared(str(tmp_path)) == ["cifar100"]
  with pytest.raises(DataPrepFlagError, match="--dataset=cifar10 contradicts --source=tfds: "
                     ".* holds cifar100, not cifar10"):
    cifar_tfds.load("cifar10", str(tmp_path))
  prepare("cifar10")
  with pytest.raises(DataPrepFlagError, match="holds both cifar10 and cifar100"):
    cifar_tfds.load(None, str(tmp_path))

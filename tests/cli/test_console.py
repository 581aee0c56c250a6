"""What a user sees first: --help, every flag error at once, shipped recipes.

The tools run as users run them (``python -m ...`` in a subprocess). Where a
test says "before TensorFlow", the subprocess gets a ``tensorflow`` package
that raises when imported: any TensorFlow import would end the run with
that error instead of the expected output.
"""

import json
import os
import pty
import re
import subprocess
import zipfile
import sys

import pytest

from tests import REPO_ROOT

TOOLS = ("train", "evaluate", "export", "predict", "describe", "import_torch",
         "export_torch", "data_service")


def _run(args, *, cwd=REPO_ROOT, pythonpath=(), env=None, timeout=300):
  full_env = dict(os.environ, **(env or {}))
  full_env["PYTHONPATH"] = os.pathsep.join([*pythonpath, REPO_ROOT])
  full_env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=full_env,
                        capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_lists_the_tools_flags_by_task_without_tensorflow(
    tool, no_tensorflow):
  # import_torch's format readers import TensorFlow with the CLI module.
  blocked = [] if tool == "import_torch" else [no_tensorflow]
  result = _run([f"pyramidnet_tf.{tool}", "--help"], pythonpath=blocked)
  assert result.returncode == 0, result.stderr[-2000:]
  out = result.stdout
  assert out.startswith(f"usage: python -m pyramidnet_tf.{tool}")
  assert "(default:" in out or "(no default)" in out
  assert "--helpfull" in out


def test_train_help_groups_the_user_flags_and_keeps_the_knobs_for_helpfull(
    no_tensorflow):
  short = _run(["pyramidnet_tf.train", "--help"],
               pythonpath=[no_tensorflow]).stdout
  titles = [line[:-1] for line in short.splitlines()
            if line.endswith(":") and not line.startswith(" ")]
  for title in ("Model", "Data", "Schedule and optimiser", "Regularisers",
                "Precision and speed", "Checkpoints, evaluation and logging",
                "Cluster"):
    assert title in titles
  assert "  --depth (default: 110)" in short
  assert "  --[no]nesterov (default: on)" in short
  assert "  --model_dir (no default)" in short
  for knob in ("--cpu_devices", "--slurm_port_base", "--jit_scope",
               "--histogram_every_steps", "--synthetic_like"):
    assert f"  {knob} " not in short
  full = _run(["pyramidnet_tf.train", "--helpfull"],
              pythonpath=[no_tensorflow])
  assert full.returncode == 0
  assert "Advanced:" in full.stdout
  for knob in ("--cpu_devices", "--slurm_port_base", "--jit_scope",
               "--histogram_every_steps", "--synthetic_like"):
    assert f"  {knob} " in full.stdout
  assert "--verbosity" in full.stdout  # absl's own flags are listed too


def test_describe_help_lists_the_model_flags(no_tensorflow):
  out = _run(["pyramidnet_tf.describe", "--help"],
             pythonpath=[no_tensorflow]).stdout
  for name in ("dataset", "depth", "alpha", "bottleneck", "mode", "rounding",
               "shakedrop"):
    assert f"--{name} " in out or f"--[no]{name} " in out
  assert "  --lr " not in out  # trainer flags only in --helpfull


def test_every_bad_flag_is_reported_at_once_before_tensorflow(no_tensorflow):
  result = _run(["pyramidnet_tf.train", "--depth=111", "--lr=-1",
                 "--momentum=nan", "--cpu_devices=0", "--label_smoothing=2"],
                pythonpath=[no_tensorflow])
  assert result.returncode == 2   # exit_codes.USAGE: final, not retried
  err = result.stderr
  assert "TensorFlow was imported" not in err
  assert "pyramidnet_tf.train: error: 7 problems with the flags:" in err
  for text in ("--model_dir is required", "--data_dir is required",
               "--lr must be a finite number > 0; got -1",
               "--momentum must be a finite number in [0, 1); got nan",
               "--cpu_devices must be an integer >= 1; got 0",
               "--label_smoothing must be in [0, 1)",
               "depth must be 6n+2"):
    assert text in err
  assert "Traceback" not in err


def test_an_unknown_flag_is_one_line_with_the_usage_exit_code(no_tensorflow):
  for tool in ("train", "evaluate", "describe"):
    result = _run([f"pyramidnet_tf.{tool}", "--no_such_flag=1"],
                  pythonpath=[no_tensorflow])
    assert result.returncode == 2, (tool, result.stderr)
    assert result.stderr.strip() == (
        f"pyramidnet_tf.{tool}: error: Unknown command line flag "
        "'no_such_flag' (--help lists the flags)")


def test_one_bad_flag_is_one_line(no_tensorflow):
  result = _run(["pyramidnet_tf.evaluate", "--model_dir=m", "--data_dir=d",
                 "--cpu_devices=0"], pythonpath=[no_tensorflow])
  assert result.returncode == 2
  assert result.stderr.strip() == ("pyramidnet_tf.evaluate: error: "
                                   "--cpu_devices must be an integer >= 1; "
                                   "got 0")


def test_recipes_resolve_from_any_directory(tmp_path, no_tensorflow):
  listing = _run(["pyramidnet_tf.train", "--recipes"], cwd=tmp_path,
                 pythonpath=[no_tensorflow])
  assert listing.returncode == 0
  assert "cifar10/pyramidnet164_a48_bottleneck" in listing.stdout
  assert "Paper row: PyramidNet-164" in listing.stdout
  # By name, and by the repository path the flagfiles' Run: lines use, from a
  # directory without flags/: describe prints the network the file defines.
  for args in (["--recipe=cifar10/pyramidnet164_a48_bottleneck"],
               ["--flagfile=flags/cifar10/pyramidnet164_a48_bottleneck.flags"]):
    result = _run(["pyramidnet_tf.describe", "--json", *args], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout)["parameters"] == 1715442
  unknown = _run(["pyramidnet_tf.train", "--recipe=cifar10/nope"],
                 cwd=tmp_path, pythonpath=[no_tensorflow])
  assert unknown.returncode == 2
  assert ("pyramidnet_tf.train: error: --recipe=cifar10/nope: no such shipped "
          "flagfile; ") in unknown.stderr


def test_a_mistyped_recipe_gets_the_closest_names_in_one_line(no_tensorflow):
  for typo, meant in (("cifar10/pyramidnet110_a4B",
                       "cifar10/pyramidnet110_a48"),
                      ("pyramidnet200_a300", "imagenet/pyramidnet200_a300")):
    result = _run(["pyramidnet_tf.train", f"--recipe={typo}"],
                  pythonpath=[no_tensorflow])
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"pyramidnet_tf.train: error: --recipe={typo}: "
                           "no such shipped flagfile; did you mean ")
    assert meant in line and line.endswith(" with what each reproduces")


def test_a_built_wheel_ships_the_recipes_and_finds_them(tmp_path,
                                                       no_tensorflow):
  wheels = tmp_path / "wheels"
  build = subprocess.run(
      [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
       "-q", "-w", str(wheels), REPO_ROOT], capture_output=True, text=True,
      timeout=600, cwd=tmp_path)
  assert build.returncode == 0, build.stderr[-3000:]
  (wheel,) = wheels.glob("pyramidnet_tf-*.whl")
  site = tmp_path / "site"
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    archive.extractall(site)
  shipped = sorted(n for n in names if n.startswith("pyramidnet_tf/recipes/"))
  in_repo = sorted(
      os.path.relpath(os.path.join(folder, f), REPO_ROOT)
      for folder, _, files in os.walk(os.path.join(REPO_ROOT, "flags"))
      for f in files if f.endswith(".flags"))
  assert [n[len("pyramidnet_tf/recipes/"):] for n in shipped] == [
      p[len("flags/"):] for p in in_repo]
  # The installed package alone (no checkout beside it), from another
  # directory: the recipe is found inside the package.
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([no_tensorflow,
                                                     str(site)]))
  where = subprocess.run(
      [sys.executable, "-c", "import pyramidnet_tf; print(pyramidnet_tf.__file__)"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
  assert where.stdout.strip() == str(site / "pyramidnet_tf" / "__init__.py")
  result = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.describe", "--json",
       "--flagfile=flags/cifar10/pyramidnet110_a48.flags"],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-2000:]
  assert json.loads(result.stdout)["parameters"] == 1772706


_ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")


def _smoke_args(model_dir):
  return ["pyramidnet_tf.train", "--recipe=smoke", f"--model_dir={model_dir}",
          "--train_steps=20", "--log_every_steps=10", "--steps_per_loop=5"]


def test_training_in_a_pipe_prints_plain_progress_lines_and_a_summary(
    tmp_path):
  result = _run(_smoke_args(tmp_path / "m"))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stderr.splitlines()
  assert lines[0].startswith(
      "training cifar10 PyramidNet-20 (add alpha=12, basic units, 10 "
      "classes, 84.8k parameters, 28.4M MACs at 32 px): 20 steps = 0.013 "
      "epochs of 1562 steps; global batch 32 = 1 replica x 32 on 1 worker (1 "
      "x CPU each); float32, XLA off, channel multiple 8"), lines[:3]
  assert lines[1] == "compiling the first step (tracing; this can take a while)"
  assert re.fullmatch(r"first step ready after \d+\.\d s; training", lines[2])
  progress = [l for l in lines if l.startswith("step ")]
  assert len(progress) == 2
  assert re.fullmatch(
      r"step 20/20 \(100%, epoch 0\.013/0\.013\): loss [\d.e+-]+, top-1 error "
      r"[\d.]+%, top-5 error [\d.]+%, lr 0\.1, [\d,.]+ img/s \| elapsed "
      r"\d:\d\d:\d\d, ETA 0:00:00", progress[-1]), progress[-1]
  assert any(l.startswith("done: step 20/20 in ") for l in lines)
  assert f"  checkpoint: {tmp_path / 'm'}/ckpt-20" in lines
  assert f"  TensorBoard: tensorboard --logdir {tmp_path / 'm'}" in lines
  # Quiet: no absl prefixes, no TensorFlow banners or INFO lines, no bar.
  assert not [l for l in lines if _ABSL_PREFIX.match(l)]
  for noise in ("oneDNN custom operations", "absl::InitializeLog",
                "Sharding callback", "cpu_feature_guard", "\r"):
    assert noise not in result.stderr


def test_training_on_a_terminal_draws_a_bar_between_the_lines(tmp_path):
  main, replica = pty.openpty()
  env = dict(os.environ, PYTHONPATH=REPO_ROOT)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  proc = subprocess.Popen([sys.executable, "-m", *_smoke_args(tmp_path / "m")],
                          cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=replica)
  os.close(replica)
  chunks = []
  while True:
    try:
      chunk = os.read(main, 65536)
    except OSError:  # the process closed the terminal
      break
    if not chunk:
      break
    chunks.append(chunk)
  os.close(main)
  assert proc.wait(timeout=300) == 0
  text = b"".join(chunks).decode()
  assert "\r[############............] step 10/20 (50%" in text
  assert "\r\x1b[K" in text  # the bar is cleared before the next line
  assert "done: step 20/20" in text


def test_verbosity_1_keeps_tensorflows_lines_and_absl_prefixes(tmp_path):
  result = _run(_smoke_args(tmp_path / "m") + ["--train_steps=5",
                                                "--verbosity=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert any(_ABSL_PREFIX.match(l) for l in result.stderr.splitlines())


def test_tensorflow_still_prints_its_banners_which_the_import_hook_drops():
  """Canary: when TensorFlow stops printing them, the filter can go.

  TensorFlow prints the oneDNN banner only where its oneDNN rewrites are on:
  by default on some CPUs, on every x86-64 CPU with TF_ENABLE_ONEDNN_OPTS=1,
  which both runs set so that the banner is there to drop on any CPU.
  """
  program = ("import sys; sys.path.insert(0, %r); import pyramidnet_tf; "
             "import tensorflow" % REPO_ROOT)
  onednn_env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1")
  shown = subprocess.run([sys.executable, "-c", program], capture_output=True,
                         text=True, timeout=300,
                         env=dict(onednn_env, TF_CPP_MIN_LOG_LEVEL="0"))
  assert "oneDNN custom operations are on" in shown.stderr
  quiet_env = dict(onednn_env)
  quiet_env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  quiet = subprocess.run([sys.executable, "-c", program + "; print('ok')"],
                         capture_output=True, text=True, timeout=300,
                         env=quiet_env)
  assert quiet.stdout.strip() == "ok"
  assert "oneDNN" not in quiet.stderr
  assert "absl::InitializeLog" not in quiet.stderr


def test_the_python_version_the_readme_names_is_the_one_setup_requires():
  readme = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
  setup = open(os.path.join(REPO_ROOT, "setup.py"), encoding="utf-8").read()
  (required,) = re.findall(r'python_requires=">=(3\.\d+)"', setup)
  assert f"Python {required} or newer" in readme
  assert f"python{required} -m venv" in readme
  assert sys.version_info[:2] >= tuple(int(v) for v in required.split("."))


def test_predict_on_a_model_dir_says_to_export_first_in_one_line(tmp_path):
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  (model_dir / "checkpoint").write_text('model_checkpoint_path: "ckpt-1"\n')
  image = tmp_path / "a.jpg"
  image.write_bytes(b"\xff\xd8\xff\xe0")
  result = _run(["pyramidnet_tf.predict", f"--saved_model={model_dir}",
                 str(image)])
  assert result.returncode == 2
  assert result.stderr.strip() == (
      f"pyramidnet_tf.predict: error: --saved_model={model_dir} is a model "
      "directory (checkpoints), not an export: run `python -m "
      f"pyramidnet_tf.export --model_dir={model_dir} --export_dir=EXPORT_DIR`"
      " first, then pass --saved_model=EXPORT_DIR")


def test_demo_flags_state_the_error_the_readme_quickstart_shows():
  readme = open(os.path.join(REPO_ROOT, "README.md"), encoding="utf-8").read()
  demo = open(os.path.join(REPO_ROOT, "flags", "demo.flags"),
              encoding="utf-8").read()
  (shown,) = re.findall(r"quickstart done in \d+ s: validation top-1 error "
                        r"([\d.]+) %", readme)
  (stated,) = re.findall(r"Measured top-1 error: ([\d.]+) %", demo)
  assert shown == stated


@pytest.mark.parametrize("args", [
    ["pyramidnet_tf.describe", "--depth=110", "--alpha=48", "--json"],
    ["pyramidnet_tf.train", "--help"],
])
def test_output_cut_off_by_its_reader_stops_quietly(args, no_tensorflow):
  """``tool | head``: the reader is gone before the tool writes (the read
  end is closed as the process starts); no error line, 128 + SIGPIPE."""
  read_end, write_end = os.pipe()
  env = dict(os.environ,
             PYTHONPATH=os.pathsep.join([no_tensorflow, REPO_ROOT]))
  proc = subprocess.Popen([sys.executable, "-m", *args], cwd=REPO_ROOT,
                          env=env, stdout=write_end, stderr=subprocess.PIPE,
                          text=True)
  os.close(write_end)
  os.close(read_end)
  _, stderr = proc.communicate(timeout=300)
  assert (proc.returncode, stderr) == (141, ""), stderr[-2000:]


def test_a_broken_pipe_elsewhere_is_an_ordinary_failure(capsys):
  """Only a closed stdout stops quietly: a broken pipe to a child process
  or a socket is reported like any other failure."""
  from pyramidnet_tf import errors  # pylint: disable=g-import-not-at-top

  def main(argv):
    del argv
    raise BrokenPipeError(32, "Broken pipe")
  with pytest.raises(SystemExit) as stopped:
    errors.guard("tool", main, check_flags=False)(["tool"])
  assert stopped.value.code == 1
  assert capsys.readouterr().err == "tool: error: [Errno 32] Broken pipe\n"

"""scripts/slurm/train.sbatch, the parts no one-node test can run: valid
bash, the #SBATCH request the README describes (2 nodes x 8 GPUs, one task
per node, the time limit's warning to the batch shell, requeue) and the
production trainer command (ImageNet PyramidNet-200, batch and learning
rate for 16 GPUs), parsed with the trainer's own flags.

What Slurm does with the script (tasks meeting, labelled lines, derived
ports, COMPLETED, the time limit's requeue and resume, failures) runs on
real daemons in tests/cluster/test_slurm_real.py. Here a stand-in ``srun``
only records the command as bash expands it.
"""

import os
import re
import stat
import subprocess

from absl import flags
import pytest

from tests import train_fixtures as fx

SCRIPT = os.path.join(fx.REPO, "scripts", "slurm", "train.sbatch")


def _sbatch_options():
  """{option: value} of the #SBATCH lines; sbatch reads them only before the
  first command, so any after it fail the test."""
  options, in_header = {}, True
  with open(SCRIPT) as f:
    for number, line in enumerate(f, 1):
      text = line.strip()
      if text.startswith("#SBATCH"):
        assert in_header, f"line {number}: #SBATCH after the first command"
        for option in text[len("#SBATCH"):].split():
          name, _, value = option.partition("=")
          options[name] = value
      elif text and not text.startswith("#"):
        in_header = False
  return options


def test_bash_syntax():
  proc = subprocess.run(["bash", "-n", SCRIPT], capture_output=True,
                        text=True)
  assert proc.returncode == 0, proc.stderr


def test_sbatch_request():
  options = _sbatch_options()
  assert options["--nodes"] == "2"
  assert options["--ntasks-per-node"] == "1"  # one trainer per node ...
  assert options["--gres"] == "gpu:8"          # ... using all 8 GPUs
  assert "--exclusive" in options
  # The warning goes to the batch shell (B:), which forwards it and
  # requeues; early enough to save PyramidNet-200 on a shared filesystem.
  match = re.fullmatch(r"B:USR1@(\d+)", options["--signal"])
  assert match and int(match.group(1)) >= 120, options["--signal"]
  assert "--requeue" in options and options["--open-mode"] == "append"


def _srun_arguments(tmp_path, *script_args, **env):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  record = tmp_path / "srun.args"
  srun = bin_dir / "srun"
  srun.write_text("#!/bin/sh\n# stand-in: records its arguments\n"
                  f"printf '%s\\n' \"$@\" > '{record}'\n")
  srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
  run_env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
                 SLURM_SUBMIT_DIR=fx.REPO, **env)
  proc = subprocess.run(["bash", SCRIPT, *script_args], cwd=str(tmp_path),
                        env=run_env, capture_output=True, text=True,
                        timeout=60)
  assert proc.returncode == 0, proc.stderr
  return record.read_text().splitlines()


def test_the_production_command_is_pyramidnet200_for_16_gpus(tmp_path,
                                                             monkeypatch):
  args = _srun_arguments(tmp_path)
  start = args.index(".venv/bin/python")
  assert args[start + 1:start + 3] == ["-m", "pyramidnet_tf.train"]
  # A site's KillOnBadExit=1 would stop the peers of the first task to exit
  # 143 while they save: the script turns it off and bounds the wait.
  assert "--kill-on-bad-exit=0" in args[:start]
  assert any(a.startswith("--wait=") for a in args[:start])
  args = args[start:]
  # Parse with the trainer's own flags (flagfile from the repository root,
  # where the script cds) and validate as it does, inside a job step.
  from pyramidnet_tf import train  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  from pyramidnet_tf.cli import train_config  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(fx.REPO)
  for name, value in (("SLURM_JOB_ID", "12345"), ("SLURM_PROCID", "0"),
                      ("SLURM_STEP_NUM_TASKS", "2"),
                      ("SLURM_STEP_NODELIST", "node[1-2]"),
                      ("SLURM_STEP_TASKS_PER_NODE", "1(x2)")):
    monkeypatch.setenv(name, value)
  flag_values = flags.FLAGS
  saved = flag_values.flags_into_string()
  try:
    flag_values.unparse_flags()
    flag_values(["train"] + args[3:])
    config = train_config.from_flags(check_model_dir=False)
  finally:
    flag_values.unparse_flags()
    flag_values(["train", *[line for line in saved.splitlines() if line]])
  assert config.runtime.cluster_resolver == "slurm"
  assert config.model.dataset == "imagenet" and config.model.depth == 200
  assert config.data.data_dir == "/shared/imagenet"
  assert config.runtime.slurm_port_base == 0  # ports from SLURM_JOB_ID
  replicas = int(_sbatch_options()["--nodes"]) * 8
  assert config.schedule.batch_size % replicas == 0
  assert config.schedule.lr == pytest.approx(
      0.1 * config.schedule.batch_size / 256)

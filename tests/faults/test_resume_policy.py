"""Fault injection: reruns in a --model_dir with changed settings.

A rerun that changes what a step means (here the batch size) must be refused
with one line before anything is written, or, with --rebase_resume, continue
from the examples seen; changes that leave a step's meaning alone (length,
learning rate, dtype) are applied and printed; train_config.json keeps
every launch. The runs are the trainer CLI on a tiny net (depth 8, alpha 4,
16x16 CIFAR stem) over 160 training examples (10 steps per epoch at batch
16).
"""

import json
import os

import pytest

from tests import train_fixtures as fx

TRAIN = "pyramidnet_tf.train"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          train_per_class=16, eval_per_class=1, size=16)


def _args(data_dir, model_dir, *extra):
  return fx.TINY_MODEL + [
      "--nobottleneck", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--steps_per_loop=5", "--log_every_steps=5", "--eval_every_epochs=0",
      "--noeval_at_end", "--seed=3"] + list(extra)


def _error_line(proc) -> str:
  assert proc.returncode not in (0, None), proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines and lines[-1].startswith(f"{TRAIN}: error: "), (
      proc.stderr[-3000:])
  return lines[-1]


def _steps(model_dir):
  return sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(
      model_dir) if n.startswith("ckpt-") and n.endswith(".index"))


def _launches(model_dir):
  with open(os.path.join(model_dir, "train_config.json")) as f:
    return json.load(f)["launches"]


def test_a_resume_cannot_silently_change_the_batch_size(faults, data_dir,
                                                        tmp_path):
  """batch 16 for one epoch (10 steps), then reruns at batch 32."""
  model_dir = str(tmp_path / "run")
  fx.clean_exit(fx.run_cli(TRAIN, _args(data_dir, model_dir, "--batch_size=16",
                                        "--epochs=1")))
  assert _steps(model_dir) == [10]
  config_path = os.path.join(model_dir, "train_config.json")
  with open(config_path, "rb") as f:
    recorded = f.read()

  with faults.inject("resume: --batch_size 16 -> 32 without a re-base") as (
      fault):
    proc = fx.run_cli(TRAIN, _args(data_dir, model_dir, "--batch_size=32",
                                   "--epochs=2"))
    line = _error_line(proc)
    assert ("was trained with other settings that change what a step "
            "means: --batch_size 16 -> 32 (step 10, 160 examples seen)"
            ) in line, line
    for way in ("a new --model_dir", f"--init_from={model_dir}",
                "--rebase_resume"):
      assert way in line, line
    # Nothing trained, nothing written: the record of the run is intact.
    assert _steps(model_dir) == [10]
    with open(config_path, "rb") as f:
      fault.lost = int(f.read() != recorded)
    assert fault.lost == 0

  with faults.inject("resume: --batch_size 16 -> 32 with --rebase_resume"):
    proc = fx.clean_exit(fx.run_cli(TRAIN, _args(
        data_dir, model_dir, "--batch_size=32", "--epochs=2",
        "--rebase_resume")))
    assert ("resuming with changed settings: --epochs 1.0 -> 2.0"
            in proc.stderr), proc.stderr[-3000:]
    assert ("--rebase_resume: --batch_size 16 -> 32; the 160 examples seen "
            "by step 10 continue with batch 32: the input resumes at example "
            "160, the schedule at step 5") in proc.stderr, proc.stderr[-3000:]
    # Epoch 2 is 160 more examples = 5 steps of 32: counter 10 -> 15.
    assert "15 steps = 2 epochs of 5 steps, resuming at step 10" in (
        proc.stderr), proc.stderr[-3000:]
    assert fx.train_result(proc.stderr)["step"] == 15
    first, rebased = _launches(model_dir)
    assert (first["start_step"], first["settings"]["batch_size"],
            first["settings"]["epochs"]) == (0, 16, 1.0)
    assert (rebased["start_step"], rebased["start_examples"],
            rebased["step_offset"], rebased["rebased"]) == (10, 160, -5, True)
    assert rebased["changed"] == {"batch_size": [16, 32], "epochs": [1.0, 2.0]}

  with faults.inject("resume: length, learning rate and dtype changed"):
    proc = fx.clean_exit(fx.run_cli(TRAIN, _args(
        data_dir, model_dir, "--batch_size=32", "--epochs=3", "--lr=0.05",
        "--dtype=float16")))
    assert ("resuming with changed settings: --epochs 2.0 -> 3.0, --lr 0.1 "
            "-> 0.05, --dtype float32 -> float16") in proc.stderr, (
                proc.stderr[-3000:])
    assert fx.train_result(proc.stderr)["step"] == 20
    launches = _launches(model_dir)
    assert [l["start_step"] for l in launches] == [0, 10, 15]
    assert [l["start_examples"] for l in launches] == [0, 160, 320]
    assert launches[2]["step_offset"] == -5 and not launches[2]["rebased"]
    with open(config_path) as f:
      assert json.load(f)["schedule"]["lr"] == 0.05   # the latest launch


def test_a_smaller_batch_rebased_does_not_replay_examples(faults, data_dir,
                                                          tmp_path):
  """batch 16 for 5 steps (80 examples), then batch 8 re-based: the input
  continues at example 80 (not 5 x 8 = 40) and the run ends after 2 epochs
  of examples, 320 = 80 + 30 steps of 8."""
  model_dir = str(tmp_path / "run")
  fx.clean_exit(fx.run_cli(TRAIN, _args(data_dir, model_dir, "--batch_size=16",
                                        "--train_steps=5", "--epochs=2")))
  with faults.inject("resume: --batch_size 16 -> 8 with --rebase_resume"):
    proc = fx.clean_exit(fx.run_cli(TRAIN, _args(
        data_dir, model_dir, "--batch_size=8", "--epochs=2",
        "--rebase_resume")))
    assert "the input resumes at example 80, the schedule at step 10" in (
        proc.stderr), proc.stderr[-3000:]
    assert fx.train_result(proc.stderr)["step"] == 35
    launch = _launches(model_dir)[-1]
    assert (launch["start_examples"], launch["step_offset"]) == (80, 5)

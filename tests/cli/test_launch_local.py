"""pyramidnet_tf.launch_local: N local workers with TF_CONFIG and free ports."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from pyramidnet_tf import launch_local
from tests import train_fixtures as fx

TINY = ["--dataset=synthetic", "--synthetic_like=cifar10", "--depth=8",
        "--alpha=4", "--nobottleneck", "--image_size=16", "--batch_size=8",
        "--train_steps=4", "--steps_per_loop=2", "--log_every_steps=2",
        "--collective_timeout=60"]


def _launch(args, timeout=150):
  return subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.launch_local"] + args,
      cwd=fx.REPO, env=fx.cli_env(), capture_output=True, text=True,
      timeout=timeout)


def test_tf_configs_make_worker_zero_the_chief():
  configs = [json.loads(c) for c in launch_local.tf_configs([1111, 2222])]
  assert configs == [
      {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]},
       "task": {"type": "worker", "index": i}} for i in range(2)]
  ports = launch_local.free_ports(3)
  assert len(set(ports)) == 3


def test_two_workers_train_and_only_the_chief_writes(tmp_path):
  model_dir = str(tmp_path / "model")
  for attempt in range(2):
    out = _launch(["--workers=2", "--"] + TINY + [f"--model_dir={model_dir}"])
    if attempt == 0 and "Address already in use" in out.stdout:
      continue  # port race with another process: retry once
    break
  assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
  lines = out.stdout.splitlines()
  for index in range(2):
    mine = [l for l in lines if l.startswith(f"[worker {index}] ")]
    assert any("step 4/4" in l for l in mine), out.stdout[-4000:]
    assert any("2 replicas x 4 on 2 workers" in l for l in mine)
  assert "[launch_local] all 2 worker(s) exited 0" in lines
  # A quiet end: the chief (which hosts the coordination service) leaves
  # last, so no worker's heartbeat finds it gone.
  assert "coordination service" not in out.stdout, out.stdout[-4000:]
  assert "Traceback" not in out.stdout and "Exception ignored" not in (
      out.stdout), out.stdout[-4000:]
  assert not [l for l in lines if " E0000 " in l or "] error:" in l], (
      out.stdout[-4000:])
  events = glob.glob(os.path.join(model_dir, "**", "events.out.*"),
                     recursive=True)
  # The chief's runs only: one events file in each run directory (a second
  # writer would add its own file beside the chief's).
  run_dirs = [os.path.relpath(os.path.dirname(p), model_dir) for p in events]
  assert len(run_dirs) == len(set(run_dirs)), events
  assert set(run_dirs) <= {"tensorboard", "tensorboard/train",
                           "tensorboard/eval"}, events
  assert "tensorboard/train" in run_dirs, events
  assert not glob.glob(os.path.join(model_dir, "workertemp_*"))


def test_a_failing_worker_is_named_and_the_launch_fails():
  out = _launch(["--workers=2", "--"] + TINY + ["--cluster_resolver=k8s"],
                timeout=90)
  assert out.returncode != 0
  assert "[launch_local] FAILED: worker " in out.stdout, out.stdout[-3000:]
  # The worker's own error, prefixed, names the flag and its choices.
  assert any(l.startswith("[worker ") and "--cluster_resolver" in l
             and "tf_config" in l and "slurm" in l
             for l in out.stdout.splitlines()), out.stdout[-3000:]


def test_bad_worker_count_names_the_flag(capsys):
  with pytest.raises(SystemExit) as e:
    launch_local.run(["--workers=0", "--", "--train_steps=1"])
  assert e.value.code == 2
  assert "--workers must be >= 1; got 0" in capsys.readouterr().err


def test_sigterm_reaches_every_worker_they_agree_on_the_step_and_resume(
    tmp_path):
  """Preemption of a multi-worker job: every worker saves the same step.

  The launcher forwards SIGTERM; the workers agree on the step to stop at
  (inside the compiled loop's stats all-reduce), all take part in the save,
  exit 143 (so does the launcher), and a rerun resumes from that step on
  both workers.
  """
  model_dir = str(tmp_path / "model")
  args = [a for a in TINY if not a.startswith(("--train_steps",
                                                "--steps_per_loop",
                                                "--log_every_steps"))]
  args += ["--train_steps=100000", "--steps_per_loop=1",
           "--log_every_steps=1", "--checkpoint_every_steps=100000",
           f"--model_dir={model_dir}"]
  log_path = tmp_path / "launch.log"
  with open(log_path, "w") as log:
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyramidnet_tf.launch_local", "--workers=2",
         "--"] + args, cwd=fx.REPO, env=fx.cli_env(), stdout=log,
        stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + 900  # a hang guard, not a speed check
      while not all(f"[worker {i}] " in t and "step 3/" in t
                    for i in range(2)
                    for t in [log_path.read_text()]):
        assert proc.poll() is None, log_path.read_text()[-4000:]
        assert time.time() < deadline, log_path.read_text()[-4000:]
        time.sleep(0.2)
      proc.send_signal(signal.SIGTERM)
      code = proc.wait(timeout=150)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  text = log_path.read_text()
  assert code == 143, text[-4000:]
  assert "Traceback" not in text and "Exception ignored" not in text, (
      text[-4000:])
  assert "stopped after saving a checkpoint (exit codes: [143, 143])" in text
  saved = {}
  for index in range(2):
    mine = [l for l in text.splitlines() if l.startswith(f"[worker {index}] ")]
    stops = [l for l in mine if "stopped by SIGTERM at step " in l]
    assert stops, text[-4000:]
    saved[index] = int(stops[-1].split("at step ")[1].split("/")[0])
  assert saved[0] == saved[1] >= 3, saved
  stopped = saved[0]
  assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{stopped}")
  assert not glob.glob(os.path.join(model_dir, "workertemp_*"))
  out = _launch(["--workers=2", "--"] + [
      a for a in args if not a.startswith("--train_steps")] + [
          f"--train_steps={stopped + 2}", "--noeval_at_end"])
  assert out.returncode == 0, out.stdout[-4000:]
  for index in range(2):
    mine = "\n".join(l for l in out.stdout.splitlines()
                     if l.startswith(f"[worker {index}] "))
    assert f"ckpt-{stopped} at step {stopped}" in mine, out.stdout[-4000:]
    assert f"resuming at step {stopped}" in mine, out.stdout[-4000:]
    assert f"step {stopped + 2}/{stopped + 2} " in mine, out.stdout[-4000:]

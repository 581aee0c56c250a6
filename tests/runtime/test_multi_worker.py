"""Two MultiWorkerMirroredStrategy workers as processes on 127.0.0.1.

Checks: identical final weights, chief-only summaries and checkpoints,
non-chief temp dirs removed, and a dead peer turning into an error (not a
hang) thanks to the collective timeout. Every process is killed in
``finally`` and every wait has a timeout.
"""

import glob
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests import train_fixtures as fx


def _free_ports(n):
  sockets = []
  try:
    for _ in range(n):
      s = socket.socket()
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _start(args, ports, log_dir, chief_job=False):
  """One process per port; ``chief_job``: port 0 is a "chief" task."""
  if chief_job:
    cluster = {"chief": [f"127.0.0.1:{ports[0]}"],
               "worker": [f"127.0.0.1:{p}" for p in ports[1:]]}
    tasks = [("chief", 0)] + [("worker", i) for i in range(len(ports) - 1)]
  else:
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    tasks = [("worker", i) for i in range(len(ports))]
  procs = []
  for index, (task_type, task_index) in enumerate(tasks):
    config = json.dumps({"cluster": cluster,
                         "task": {"type": task_type, "index": task_index}})
    log = open(os.path.join(log_dir, f"worker{index}.log"), "w")
    procs.append((subprocess.Popen(
        [sys.executable, "-m", "pyramidnet_tf.train"] + args, cwd=fx.REPO,
        env=fx.cli_env(TF_CONFIG=config), stdout=log, stderr=log), log))
  return procs


def _stop(procs):
  for proc, log in procs:
    if proc.poll() is None:
      proc.kill()
    proc.wait(timeout=30)
    log.close()


def _logs(log_dir, n):
  return [open(os.path.join(log_dir, f"worker{i}.log")).read()
          for i in range(n)]


def _run_to_completion(args, log_dir, chief_job=False):
  """Two processes to their end: (exit codes, logs); one retry on a port
  race with another process."""
  for attempt in range(2):
    procs = _start(args, _free_ports(2), log_dir, chief_job)
    try:
      codes = [proc.wait(timeout=240) for proc, _ in procs]
    finally:
      _stop(procs)
    logs = _logs(log_dir, 2)
    if attempt == 0 and any("Address already in use" in l for l in logs):
      continue
    break
  return codes, logs


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=8, eval_per_class=3,
                          size=16, shards=3)


@pytest.mark.parametrize("chief_job", [False, True],
                         ids=["worker0_is_chief", "explicit_chief_task"])
def test_two_workers_agree_and_only_the_chief_writes(data_dir, tmp_path,
                                                     chief_job):
  model_dir = str(tmp_path / "model")
  args = fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
      "--train_steps=6", "--steps_per_loop=2", "--log_every_steps=2",
      "--checkpoint_every_steps=3", "--collective_timeout=120"]
  codes, logs = _run_to_completion(args, str(tmp_path), chief_job)
  assert codes == [0, 0], "\n=====\n".join(l[-3000:] for l in logs)
  results = [fx.train_result(l) for l in logs]
  assert results[0]["weights_fingerprint"] == results[1][
      "weights_fingerprint"]
  assert results[0]["step"] == results[1]["step"] == 6
  assert "2 replicas x 4 on 2 workers" in logs[0]
  # Only the chief's events and checkpoints; no temp dir left behind.
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
  assert sorted(os.path.basename(p) for p in glob.glob(
      os.path.join(model_dir, "ckpt-*.index"))) == ["ckpt-3.index",
                                                    "ckpt-6.index"]
  # The same eval on both workers (every example once).
  assert results[0]["eval"] == results[1]["eval"]
  assert results[0]["eval"]["examples"] == 12


def test_a_dead_peer_becomes_an_error_not_a_hang(data_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  args = fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
      "--train_steps=100000", "--steps_per_loop=1", "--log_every_steps=1",
      "--eval_every_epochs=0", "--collective_timeout=8"]
  procs = _start(args, _free_ports(2), str(tmp_path))
  try:
    deadline = time.time() + 900  # a hang guard, not a speed check
    while "step 2/" not in _logs(str(tmp_path), 2)[0]:
      assert time.time() < deadline, _logs(str(tmp_path), 2)[0][-3000:]
      assert all(p.poll() is None for p, _ in procs), "\n".join(
          _logs(str(tmp_path), 2))[-3000:]
      time.sleep(0.2)
    procs[1][0].kill()
    code = procs[0][0].wait(timeout=120)
  finally:
    _stop(procs)
  assert code != 0


def test_two_workers_with_every_regulariser_on(data_dir, tmp_path):
  """Issue 6: ShakeDrop + CutMix/Mixup + Cutout + AutoAugment + EMA + clip.

  Every option on at once under MultiWorkerMirroredStrategy: both workers
  finish, hold the same weights (raw and averaged: they drew the same mixing
  per replica seeds where they must and different ones where they must not),
  and the EMA weights are what evaluation uses.
  """
  model_dir = str(tmp_path / "model")
  args = fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
      "--train_steps=4", "--steps_per_loop=2", "--log_every_steps=2",
      "--checkpoint_every_steps=4", "--collective_timeout=120",
      "--shakedrop", "--shakedrop_level=sample", "--cutmix_prob=0.5",
      "--mixup_alpha=0.2", "--cutout_size=4", "--autoaugment=cifar10",
      "--ema_decay=0.9", "--clip_grad_norm=1", "--label_smoothing=0.1"]
  codes, logs = _run_to_completion(args, str(tmp_path))
  assert codes == [0, 0], "\n=====\n".join(l[-3000:] for l in logs)
  results = [fx.train_result(l) for l in logs]
  assert results[0]["weights_fingerprint"] == results[1][
      "weights_fingerprint"]
  assert results[0]["step"] == results[1]["step"] == 4
  assert results[0]["eval"] == results[1]["eval"]
  # The model dir records the options; evaluate picks the EMA weights.
  config = json.load(open(os.path.join(model_dir, "model_config.json")))
  assert json.dumps(config).count("shakedrop") >= 1
  ckpt = fx.checkpoint_values(os.path.join(model_dir, "ckpt-4"))
  assert any(name.startswith("ema/") for name in ckpt), sorted(ckpt)[:20]
  out = fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}"])
  assert out.returncode == 0, out.stderr[-3000:]
  report = json.loads(out.stdout)
  assert report["ema"] is True
  assert report["examples"] == 12

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


def _start(args, ports, log_dir):
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  procs = []
  for index in range(len(ports)):
    config = json.dumps({"cluster": cluster,
                         "task": {"type": "worker", "index": index}})
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


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=8, eval_per_class=3,
                          size=16, shards=3)


def test_two_workers_agree_and_only_the_chief_writes(data_dir, tmp_path):
  model_dir = str(tmp_path / "model")
  args = fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
      "--train_steps=6", "--steps_per_loop=2", "--log_every_steps=2",
      "--checkpoint_every_steps=3", "--collective_timeout=120"]
  for attempt in range(2):
    procs = _start(args, _free_ports(2), str(tmp_path))
    try:
      codes = [proc.wait(timeout=240) for proc, _ in procs]
    finally:
      _stop(procs)
    logs = _logs(str(tmp_path), 2)
    if attempt == 0 and any("Address already in use" in l for l in logs):
      continue  # port race with another process: retry once
    break
  assert codes == [0, 0], "\n=====\n".join(l[-3000:] for l in logs)
  results = [fx.train_result(l) for l in logs]
  assert results[0]["weights_fingerprint"] == results[1][
      "weights_fingerprint"]
  assert results[0]["step"] == results[1]["step"] == 6
  assert "2 replicas on 2 worker(s)" in logs[0]
  # Only the chief's events and checkpoints; no temp dir left behind.
  events = glob.glob(os.path.join(model_dir, "**", "events.out.*"),
                     recursive=True)
  assert len(events) == 1, events
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
    deadline = time.time() + 150
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

"""tf.data service on 127.0.0.1: a dispatcher and two workers started by
``python -m pyramidnet_tf.data_service`` feed the training input.

Checks: in distributed_epoch mode every record reaches the consumers of one
job exactly once per epoch; a two-worker MultiWorkerMirrored training fed
by the service keeps going when a service worker is killed mid-epoch and
when the dispatcher is killed and restarted with the same work_dir; every
server exits 0 on SIGTERM. Every process is killed in ``finally`` and every
wait has a timeout.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from pyramidnet_tf import launch_local
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import data_plan
from tests import train_fixtures as fx

_START_TIMEOUT = 900  # a hang guard, not a speed check


class Service:
  """A dispatcher and workers as subprocesses of the data_service CLI."""

  def __init__(self, directory, workers=2):
    self.directory = directory
    os.makedirs(directory, exist_ok=True)
    self.port = launch_local.free_ports(1)[0]
    self.work_dir = os.path.join(directory, "dispatcher")
    self.address = f"grpc://127.0.0.1:{self.port}"
    self.dispatcher = None
    self.workers = []
    self.logs = []
    self.start_dispatcher()
    for _ in range(workers):
      self.workers.append(self._start(
          f"worker{len(self.workers)}",
          ["--role=worker", f"--dispatcher=127.0.0.1:{self.port}",
           "--worker_address=127.0.0.1", "--heartbeat_interval=0.5"]))
    for proc in [self.dispatcher] + self.workers:
      self._wait_ready(proc)

  def _start(self, name, args):
    path = os.path.join(self.directory, f"{name}-{len(self.logs)}.log")
    log = open(path, "w")
    self.logs.append((path, log))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyramidnet_tf.data_service"] + args,
        cwd=fx.REPO, env=fx.cli_env(), stdout=log, stderr=log)
    proc.log_path = path
    return proc

  def _wait_ready(self, proc):
    deadline = time.time() + _START_TIMEOUT
    while "serving on" not in open(proc.log_path).read():
      assert proc.poll() is None, open(proc.log_path).read()[-3000:]
      assert time.time() < deadline, open(proc.log_path).read()[-3000:]
      time.sleep(0.2)

  def start_dispatcher(self):
    self.dispatcher = self._start(
        "dispatcher", ["--role=dispatcher", f"--port={self.port}",
                       f"--work_dir={self.work_dir}", "--worker_timeout=3"])

  def restart_dispatcher(self):
    """SIGKILL (no chance to save anything), then the same port and
    work_dir."""
    self.dispatcher.kill()
    self.dispatcher.wait(timeout=30)
    self.start_dispatcher()
    self._wait_ready(self.dispatcher)

  def stop(self):
    """SIGTERM to every live server; their exit codes (None: killed)."""
    codes = []
    for proc in [self.dispatcher] + self.workers:
      if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
          codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait(timeout=30)
          codes.append("hung")
      else:
        codes.append(None)
    return codes

  def close(self):
    for proc in [self.dispatcher] + self.workers:
      if proc is not None and proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)
    for _, log in self.logs:
      log.close()


@pytest.fixture
def service(tmp_path):
  s = Service(str(tmp_path / "service"))
  try:
    yield s
  finally:
    s.close()


def _id_dataset(files, service, job_name, epochs,
                mode="distributed_epoch"):
  """The trainer's service path with a ``prepare`` that yields record ids."""
  from pyramidnet_tf.data import pipeline  # pylint: disable=g-import-not-at-top

  def prepare(epoch, file_index, index, record):
    del record
    return epoch, file_index * 1000 + index
  return pipeline.service_stream(
      files, prepare, seed=3, service=service, mode=mode,
      job_name=job_name, start_epoch=1, end_epoch=1 + epochs,
      shuffle_buffer=4)


def test_every_record_once_per_epoch_across_consumers(service, tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=3,
                              train_per_class=5, eval_per_class=1, size=4,
                              shards=3)
  files = sorted(str(p) for p in (tmp_path / "data").glob("train-*"))
  per_file = [sum(1 for _ in tf.data.TFRecordDataset(f)) for f in files]
  ids = {i * 1000 + j for i, n in enumerate(per_file) for j in range(n)}
  assert len(ids) == 15 and data_dir
  epochs = 3
  # Two consumers of one job, as two trainer workers are.
  iterators = [iter(_id_dataset(files, service.address, "count", epochs))
               for _ in range(2)]
  seen = [[], []]
  live = [True, True]
  while any(live):
    for c, it in enumerate(iterators):
      if live[c]:
        try:
          epoch, record_id = next(it)
          seen[c].append((int(epoch), int(record_id)))
        except StopIteration:
          live[c] = False
  counts = collections.Counter(seen[0] + seen[1])
  assert set(counts.values()) == {1}, counts.most_common(3)
  assert sorted(counts) == sorted((e, i) for e in range(1, 1 + epochs)
                                  for i in ids)
  assert seen[0] and seen[1]   # the job was shared, not duplicated
  # parallel_epochs: each service worker makes whole epochs of its own, with
  # its own salt in the epoch's seeds, so no element is a copy of another.
  parallel = [(int(e), int(i)) for e, i in _id_dataset(
      files, service.address, "parallel", 2, mode="parallel_epochs")]
  assert len(parallel) == 2 * 2 * len(ids)   # 2 workers x 2 epochs
  assert len(set(parallel)) == len(parallel)
  assert collections.Counter(i for _, i in parallel) == {i: 4 for i in ids}
  assert service.stop() == [0, 0, 0]   # SIGTERM: every server exits 0


def _results(log):
  results = {}
  for line in log.splitlines():
    if "result: {" in line and line.startswith("[worker "):
      worker = int(line[len("[worker "):].split("]")[0])
      results[worker] = json.loads(line.split("result: ", 1)[1])
  return results


def test_training_survives_a_lost_worker_and_a_dispatcher_restart(service,
                                                                  tmp_path):
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=4,
                              train_per_class=8, eval_per_class=2, size=16,
                              shards=3)
  steps = 40
  model_dir = str(tmp_path / "model")
  args = fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=8", f"--train_steps={steps}", "--steps_per_loop=1",
      "--log_every_steps=1", "--eval_every_epochs=0", "--noeval_at_end",
      "--checkpoint_every_steps=1000", "--collective_timeout=120",
      f"--data_service={service.address}", "--shuffle_buffer=8"]
  log_path = str(tmp_path / "train.log")
  with open(log_path, "w") as log:
    trainers = subprocess.Popen(
        [sys.executable, "-m", "pyramidnet_tf.launch_local", "--workers=2",
         "--"] + args, cwd=fx.REPO, env=fx.cli_env(), stdout=log,
        stderr=subprocess.STDOUT)
    try:
      fx.wait_for_text(log_path, "step 3/", trainers, 240)
      service.workers[1].kill()          # mid-epoch (4 steps per epoch)
      service.workers[1].wait(timeout=30)
      fx.wait_for_text(log_path, "step 12/", trainers, 180)
      service.restart_dispatcher()
      code = trainers.wait(timeout=240)
    finally:
      if trainers.poll() is None:
        trainers.kill()
        trainers.wait(timeout=30)
  text = open(log_path).read()
  assert code == 0, text[-4000:]
  # The trainers' job is in the dispatcher's journal: they read through it.
  job = data_plan.service_job_name(config_lib.TrainConfig.from_values(
      {"model_dir": model_dir}), 0)
  journal = b"".join(
      open(os.path.join(parent, name), "rb").read()
      for parent, _, names in os.walk(service.work_dir) for name in names)
  assert job.encode() in journal
  results = _results(text)
  assert results[0]["step"] == results[1]["step"] == steps
  assert (results[0]["weights_fingerprint"] ==
          results[1]["weights_fingerprint"])
  # The restarted dispatcher served the rest of the run, then stops cleanly
  # (the killed worker is None).
  assert service.stop() == [0, 0, None]

"""A tf.data service that is not there, or loses all its workers: the run
ends with one line naming the address (exit 1) instead of hanging.

Servers run on 127.0.0.1 (``tests/runtime/test_data_service.Service``).
"""

import glob
import os
import subprocess
import sys
import time

import pytest

from pyramidnet_tf import exit_codes
from pyramidnet_tf import launch_local
from tests import train_fixtures as fx
from tests.runtime.test_data_service import Service

TRAIN = "pyramidnet_tf.train"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=8, eval_per_class=2,
                          size=16, shards=2)


def _args(data_dir, model_dir, address, timeout, *extra):
  return fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=8", "--train_steps=100000", "--steps_per_loop=1",
      "--log_every_steps=1", "--eval_every_epochs=0", "--noeval_at_end",
      "--checkpoint_every_steps=3", f"--data_service={address}",
      f"--data_service_timeout={timeout}", "--shuffle_buffer=8"] + list(extra)


def test_nothing_listening_is_one_line_naming_the_address(data_dir, tmp_path,
                                                          faults):
  port = launch_local.free_ports(1)[0]
  address = f"grpc://127.0.0.1:{port}"
  with faults.inject("tf.data service: no dispatcher") as fault:
    proc = fx.run_cli(TRAIN, _args(data_dir, str(tmp_path / "m"), address, 2))
    assert proc.returncode == exit_codes.FAILED, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if "error:" in l]
    assert errors == [
        f"{TRAIN}: error: --data_service={address}: no dispatcher answered "
        f"at 127.0.0.1:{port} within 2 s (--data_service_timeout); start one "
        f"there (python -m pyramidnet_tf.data_service --role=dispatcher "
        f"--port={port} --work_dir=...), or check the address and that the "
        "port is open from this host"], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    fault.lost = 0


def _watch(proc, log_path, text, timeout):
  deadline = time.monotonic() + timeout
  while text not in log_path.read_text():
    assert proc.poll() is None, log_path.read_text()[-3000:]
    assert time.monotonic() < deadline, log_path.read_text()[-3000:]
    time.sleep(0.2)


@pytest.mark.parametrize("when", ["before the first batch", "mid-run"])
def test_losing_every_service_worker_ends_the_run_with_one_line(
    data_dir, tmp_path, when, faults):
  service = Service(str(tmp_path / "service"),
                    workers=0 if when == "before the first batch" else 1)
  model_dir = str(tmp_path / "m")
  log_path = tmp_path / "train.log"
  try:
    with faults.inject(f"tf.data service: no workers {when}") as fault:
      with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", TRAIN] + _args(
                data_dir, model_dir, service.address, 10),
            cwd=fx.REPO, env=fx.cli_env(), stdout=log,
            stderr=subprocess.STDOUT)
        try:
          if service.workers:
            _watch(proc, log_path, "step 4/", 300)
            service.workers[0].kill()
            service.workers[0].wait(timeout=30)
          code = proc.wait(timeout=300)
        finally:
          if proc.poll() is None:
            proc.kill()
            proc.wait()
      text = log_path.read_text()
      assert code == exit_codes.FAILED, text[-3000:]
      assert (f"error: no training input from the tf.data service at "
              f"{service.address} for 10 s (--data_service_timeout): check "
              "that its workers") in text, text[-3000:]
      assert "Traceback" not in text
      if service.workers:   # the periodic checkpoints stay for a rerun
        assert glob.glob(os.path.join(model_dir, "ckpt-*.index")), text
        assert not glob.glob(os.path.join(model_dir, "ckpt-*_temp"))
      fault.lost = 0
  finally:
    service.close()

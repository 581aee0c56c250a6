"""Signals to a training process: stop after the step in progress, save,
exit 143 (the exit-code contract of ``pyramidnet_tf.exit_codes``).

The runs use the ImageNet flagfiles' cadence, ``--steps_per_loop=200``
(and no log, eval or checkpoint inside the loop), so a stop that waited for
the host loop would save at step 201; the trainer must save at the step the
signal arrived during (or the next one, if it came between the flag's read
and the step's end).
"""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from pyramidnet_tf import exit_codes
from tests import train_fixtures as fx

TRAIN = "pyramidnet_tf.train"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=24,
                          eval_per_class=8, size=16, shards=2)


def _args(data_dir, model_dir, *extra):
  return fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=16", "--lr=0.05", "--steps_per_loop=200",
      "--log_every_steps=100000", "--checkpoint_every_steps=100000",
      "--eval_every_epochs=0", "--noeval_at_end"] + list(extra)




def _first_checkpoint_time(proc, model_dir, timeout=300):
  """When the first checkpoint's index file appeared (monotonic clock)."""
  deadline = time.monotonic() + timeout
  while not tf.io.gfile.glob(os.path.join(model_dir, "ckpt-*.index")):
    if proc.poll() is not None:
      break
    assert time.monotonic() < deadline, "no checkpoint after the signal"
    time.sleep(0.01)
  return time.monotonic()


class _Run:
  """A training process whose output goes to a file the test reads."""

  def __init__(self, args, log_path):
    self.log_path = log_path
    self._log = open(log_path, "w")
    self.proc = subprocess.Popen(
        [sys.executable, "-m", TRAIN] + args, cwd=fx.REPO, env=fx.cli_env(),
        stdout=self._log, stderr=subprocess.STDOUT)

  def text(self):
    return self.log_path.read_text()

  def close(self):
    if self.proc.poll() is None:
      self.proc.kill()
      self.proc.wait()
    self._log.close()


def _stop_lines(text, name):
  got = re.search(rf"got {name} during step (\d+): stopping after the step "
                  r"in progress and saving a checkpoint", text)
  stopped = re.search(rf"stopped by {name} at step (\d+)/(\d+), checkpoint "
                      r"(\S+) saved; rerun the same command to resume \(exit "
                      rf"code {exit_codes.PREEMPTED}\)", text)
  assert got and stopped, text[-3000:]
  return int(got.group(1)), int(stopped.group(1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_mid_loop_saves_that_step_and_exits_143(
    data_dir, tmp_path, signum, faults):
  name = signal.Signals(signum).name
  model_dir = str(tmp_path / "m")
  run = _Run(_args(data_dir, model_dir, "--train_steps=100000"),
             tmp_path / "log.txt")
  try:
    with faults.inject(f"{name} inside a 200-step host call") as fault:
      fx.wait_for_text(run.log_path, "first step ready", run.proc)
      time.sleep(1.0)      # well inside the second call of 200 steps
      sent = time.monotonic()
      run.proc.send_signal(signum)
      on_disk = _first_checkpoint_time(run.proc, model_dir)
      code = run.proc.wait(timeout=300)
      text = run.text()
      in_progress, saved = _stop_lines(text, name)
      assert code == exit_codes.PREEMPTED, text[-3000:]
      # The step in progress or its neighbour, not the rest of the host call
      # (the line reads the step counter from another thread while a step
      # runs: the counter may already have moved, or the step may have read
      # the stop request just before it was set).
      assert in_progress - 1 <= saved <= in_progress + 1, (in_progress, saved)
      assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{saved}")
      print(f"{name}: step {in_progress} in progress, ckpt-{saved} on disk "
            f"{on_disk - sent:.2f} s and exit {code} "
            f"{time.monotonic() - sent:.2f} s after the signal")
      assert "Traceback" not in text
      fault.lost = 0
  finally:
    run.close()
  if signum != signal.SIGTERM:
    return
  # The rerun resumes exactly there and finishes with 0.
  proc = fx.run_cli(TRAIN, _args(data_dir, model_dir,
                                 f"--train_steps={saved + 2}"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"resuming at step {saved};" in proc.stderr
  assert fx.train_result(proc.stderr)["step"] == saved + 2


def test_ctrl_c_saves_once_and_a_second_ctrl_c_aborts(data_dir, tmp_path,
                                                      faults):
  model_dir = str(tmp_path / "m")
  run = _Run(_args(data_dir, model_dir, "--train_steps=100000"),
             tmp_path / "log.txt")
  try:
    with faults.inject("Ctrl-C during training") as fault:
      fx.wait_for_text(run.log_path, "first step ready", run.proc)
      run.proc.send_signal(signal.SIGINT)
      code = run.proc.wait(timeout=300)
      text = run.text()
      assert code == exit_codes.PREEMPTED, text[-3000:]
      assert "Ctrl-C again to abort without saving" in text
      _, saved = _stop_lines(text, "SIGINT")
      assert "Traceback" not in text and "KeyboardInterrupt" not in text
      assert tf.train.latest_checkpoint(model_dir).endswith(f"ckpt-{saved}")
      fault.lost = 0
  finally:
    run.close()
  # Two Ctrl-C in a row, the second while the first waits for its step
  # (here: during start-up, before the first step): abort at once, 130,
  # one line, nothing new written.
  before = sorted(os.listdir(model_dir))
  run = _Run(_args(data_dir, model_dir, "--train_steps=100000"),
             tmp_path / "log2.txt")
  try:
    with faults.inject("second Ctrl-C") as fault:
      fx.wait_for_text(run.log_path, "training cifar10", run.proc)
      run.proc.send_signal(signal.SIGINT)
      fx.wait_for_text(run.log_path, "Ctrl-C again to abort", run.proc)
      run.proc.send_signal(signal.SIGINT)
      code = run.proc.wait(timeout=120)
      text = run.text()
      assert code == exit_codes.ABORTED, text[-3000:]
      assert "got SIGINT again: aborting without saving" in text
      assert "Traceback" not in text
      assert sorted(os.listdir(model_dir)) == before
      fault.lost = 0
  finally:
    run.close()


def test_ctrl_c_while_flags_are_checked_is_one_line(tmp_path):
  """Before training starts (no checkpoint to save), Ctrl-C is one line and
  130, whatever the tool."""
  # Python's Ctrl-C handler as in a terminal: a process started from a
  # background job (``cmd &`` in a script, as CI may run the suite) inherits
  # SIGINT ignored, and Python then leaves it ignored.
  program = ("import os, signal, sys\n"
             "from pyramidnet_tf.cli import errors\n"
             "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
             "def main(argv):\n"
             "  os.kill(os.getpid(), signal.SIGINT)\n"
             "  import time; time.sleep(5)\n"
             "errors.guard('tool', main, check_flags=False)([])\n")
  proc = subprocess.run([sys.executable, "-c", program], cwd=fx.REPO,
                        env=fx.cli_env(), capture_output=True, text=True,
                        timeout=120, check=False)
  assert proc.returncode == exit_codes.ABORTED
  assert proc.stderr.strip() == "tool: interrupted"

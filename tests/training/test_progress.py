"""The trainer's console lines: plan, compile time, %/epoch/ETA, summary."""

import io
import logging

import pytest

from pyramidnet_tf.training import progress as progress_lib


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class FakeTerminal(io.StringIO):

  def isatty(self):
    return True


SCALARS = dict(loss=1.5, top1_error=40.0, top5_error=5.0, learning_rate=0.1,
               examples_per_sec=480.0)


def _progress(stream, clock, start_step=0):
  return progress_lib.TrainProgress(
      start_step=start_step, total_steps=400, steps_per_epoch=20,
      global_batch=64, stream=stream, clock=clock)


def test_log_lines_give_percent_epoch_rate_and_an_eta_from_the_steady_rate(
    caplog):
  clock, stream = FakeClock(), io.StringIO()
  progress = _progress(stream, clock)
  caplog.set_level(logging.INFO)
  progress.compiling()
  clock.now += 30.0      # the first call: tracing, not counted in the ETA
  progress.first_call_done(10)
  clock.now += 10.0      # 90 steps in 10 s: 1/9 s per step
  line = progress.log_line(100, SCALARS)
  assert line.startswith("step 100/400 (25%, epoch 5/20): loss 1.5, ")
  assert "top-1 error 40.00%" in line and "480.0 img/s" in line
  # 300 steps left at 1/9 s each = 33 s; 40 s elapsed.
  assert line.endswith("| elapsed 0:00:40, ETA 0:00:33")
  messages = [r.getMessage() for r in caplog.records]
  assert messages[0].startswith("compiling the first step (tracing")
  assert messages[1] == "first step ready after 30.0 s; training"
  assert messages[2] == line
  assert stream.getvalue() == ""   # no bar in a pipe


def test_the_eta_is_unknown_until_the_first_call_is_done():
  progress = _progress(io.StringIO(), FakeClock())
  assert progress.eta_seconds(10) is None
  assert "ETA ?" in progress.timing(10)


def test_a_terminal_gets_a_bar_that_is_cleared_before_each_line():
  clock, terminal = FakeClock(), FakeTerminal()
  progress = _progress(terminal, clock)
  assert progress.tty
  progress.first_call_done(10)
  clock.now += 5
  progress.update(200)
  drawn = terminal.getvalue()
  assert drawn.startswith("\r[############............] step 200/400 (50%")
  progress.log_line(220, SCALARS)
  assert terminal.getvalue().endswith("\r\x1b[K")  # cleared for the line


def test_the_summary_names_last_and_best_eval_checkpoint_and_tensorboard():
  clock = FakeClock()
  progress = _progress(io.StringIO(), clock)
  progress.first_call_done(1)
  clock.now += 125
  last = dict(step=400, split="validation", top1_error=4.5, top5_error=0.5,
              loss=0.2, examples=10000)
  best = dict(last, step=380, top1_error=4.25)
  text = progress.summary(final_step=400, last_eval=last, best_eval=best,
                          checkpoint="runs/m/ckpt-400", model_dir="runs/m")
  assert text.splitlines() == [
      "done: step 400/400 in 0:02:05 (first step 0.0 s)",
      "  last eval (step 400, validation): top-1 error 4.50%, top-5 error "
      "0.50%, loss 0.2 on 10,000 images",
      "  best eval (step 380): top-1 error 4.25%",
      "  checkpoint: runs/m/ckpt-400",
      "  TensorBoard: tensorboard --logdir runs/m"]


@pytest.mark.parametrize("epochs,text", [(300, "300"), (0.026, "0.026"),
                                         (2.5, "2.50"), (15.25, "15.2")])
def test_epoch_counts_keep_the_decimals_a_short_run_needs(epochs, text):
  assert progress_lib.epochs_text(epochs) == text

"""The trainer's console lines: plan, compile time, %/epoch/ETA, summary."""

import io
import logging

import pytest

from pyramidnet_tf.training import progress as progress_lib
from pyramidnet_tf.training import run_plan


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
  run = run_plan.RunPlan(global_batch=64, replicas=1, train_examples=20 * 64,
                        schedule_steps=400).resumed(start_step)
  return progress_lib.TrainProgress(run=run, stream=stream, clock=clock)


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


def test_the_eta_is_left_out_until_known_and_is_zero_at_the_end():
  progress = _progress(io.StringIO(), FakeClock())
  assert progress.eta_seconds(10) is None
  assert progress.timing(10) == "elapsed 0:00:00"
  # The last step: done, whether or not a rate was ever measured.
  assert progress.timing(400) == "elapsed 0:00:00, ETA 0:00:00"


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
      "done: step 400/400 in 0:02:05 (400 steps, first step 0.0 s)",
      "  last eval (step 400, validation): top-1 error 4.50%, top-5 error "
      "0.50%, loss 0.2 on 10,000 images",
      "  best eval (step 380): top-1 error 4.25%",
      "  checkpoint: runs/m/ckpt-400",
      "  TensorBoard: tensorboard --logdir runs/m"]


def test_the_summary_gives_throughput_best_checkpoint_and_the_papers_error():
  clock = FakeClock()
  progress = _progress(io.StringIO(), clock, start_step=100)
  progress.first_call_done(110)
  clock.now += 65
  last = dict(step=400, split="test", top1_error=4.5, top5_error=0.5,
              loss=0.2, examples=10000)
  text = progress.summary(final_step=400, last_eval=last, best_eval=last,
                          checkpoint="runs/m/ckpt-400", model_dir="runs/m",
                          best_checkpoint="runs/m/best/ckpt-400",
                          published="4.58 %", images_per_sec=1234.56)
  lines = text.splitlines()
  assert lines[0] == ("done: step 400/400 in 0:01:05 (300 steps, first step "
                      "0.0 s, 1,234.6 img/s training)")
  assert ("  best eval (step 400): top-1 error 4.50%, kept in "
          "runs/m/best/ckpt-400 (--checkpoint=best)") in lines
  assert ("  paper: 4.58 % top-1 error for this network (this run: 4.50%)"
          in lines)


def test_the_epoch_line_gives_time_rate_train_and_eval_metrics(caplog):
  progress = _progress(io.StringIO(), FakeClock())
  caplog.set_level(logging.INFO)
  row = dict(epoch=3.0, step=60, train_loss=1.234, train_top1_error=40.0,
             train_top5_error=5.0, eval_loss=0.9, eval_top1_error=30.5,
             eval_top5_error=3.25, images_per_sec=512.0, epoch_seconds=75.0)
  line = progress.epoch_line(row)
  assert line == ("epoch 3/20 in 0:01:15 (512.0 img/s): train loss 1.234, "
                  "top-1 error 40.00%; eval loss 0.9, top-1 error 30.50%, "
                  "top-5 error 3.25%")
  assert caplog.records[-1].getMessage() == line
  partial = dict(row, epoch=20.0, eval_loss=None, eval_top1_error=None,
                 images_per_sec=None)
  assert progress.epoch_line(partial) == (
      "epoch 20/20 in 0:01:15: train loss 1.234, top-1 error 40.00%")


def test_eval_progress_is_silent_for_short_passes_and_steady_for_long_ones(
    caplog):
  caplog.set_level(logging.INFO)
  clock = FakeClock()
  progress = progress_lib.EvalProgress("validation", 50000, clock=clock,
                                       every_s=10.0)
  clock.now += 60.0                      # tracing: starts the clock only
  assert progress.update(5000) is None
  clock.now += 5.0                       # too soon for a line
  assert progress.update(10000) is None
  clock.now += 5.0                       # 10 s after the first chunk
  line = progress.update(15000)
  assert line == ("evaluating validation: 15,000/50,000 images (30%), "
                  "1,000.0 img/s, ETA 0:00:35")
  clock.now += 30.0
  assert progress.update(50000) is None  # done: the eval line follows
  quiet = progress_lib.EvalProgress("validation", 50000, clock=clock,
                                    enabled=False)
  quiet.update(1)
  clock.now += 100
  assert quiet.update(2) is None


@pytest.mark.parametrize("epochs,text", [(300, "300"), (0.026, "0.026"),
                                         (2.5, "2.50"), (15.25, "15.2")])
def test_epoch_counts_keep_the_decimals_a_short_run_needs(epochs, text):
  assert progress_lib.epochs_text(epochs) == text

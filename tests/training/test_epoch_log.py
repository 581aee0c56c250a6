"""metrics.csv: one row per epoch, appended across resumes, cut back to the
step a run resumes from."""

import csv
import datetime

import numpy as np

from pyramidnet_tf.training import epoch_log
from pyramidnet_tf.training import run_plan
from pyramidnet_tf.training import schedules
from pyramidnet_tf.training import step as step_lib


class FakeClock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def _log(model_dir, clock, start_step=0, total_steps=25, enabled=True):
  run = run_plan.RunPlan(global_batch=8, replicas=1, train_examples=10 * 8,
                        schedule_steps=total_steps).resumed(start_step)
  return epoch_log.EpochLog(
      model_dir=str(model_dir), enabled=enabled, run=run,
      schedule=schedules.Schedule("step", 0.1, 10, total_steps, (2,)),
      clock=clock,
      utc_now=lambda: datetime.datetime(2026, 12, 7, 12, 0, 0,
                                        tzinfo=datetime.timezone.utc))


def _totals(loss_sum, top1, top5, examples):
  return np.array(step_lib.stats_vector(loss_sum, top1, top5,
                                        examples).numpy())


def _rows(model_dir):
  with open(model_dir / "metrics.csv", newline="") as f:
    return list(csv.DictReader(f))


def test_rows_per_epoch_with_eval_rate_and_a_partial_last_epoch(tmp_path):
  clock = FakeClock()
  log = _log(tmp_path, clock)
  clock.now += 30.0
  log.record(_totals(16.0, 4.0, 8.0, 8), 1, 30.0, first_call=True)  # compile
  clock.now += 9.0
  log.record(_totals(144.0, 36.0, 72.0, 72), 9, 9.0, first_call=False)
  assert log.due(10) and not log.due(11)
  row = log.write(10, {"step": 10, "loss": 0.5, "top1_error": 12.5,
                       "top5_error": 1.0})
  assert row["train_loss"] == 2.0 and row["train_top1_error"] == 50.0
  assert row["images_per_sec"] == 9 * 8 / 9.0
  assert row["epoch_seconds"] == 39.0
  clock.now += 10.0
  log.record(_totals(80.0, 80.0, 80.0, 80), 10, 10.0, first_call=False)
  log.write(20, {"step": 10, "loss": 0.5, "top1_error": 12.5,
                 "top5_error": 1.0})   # an older eval: not this epoch's
  log.record(_totals(40.0, 40.0, 40.0, 40), 5, 4.0, first_call=False)
  assert log.due(25)                   # the run's end
  log.write(25, None)
  rows = _rows(tmp_path)
  assert [r["epoch"] for r in rows] == ["1", "2", "2.5"]
  assert [r["step"] for r in rows] == ["10", "20", "25"]
  assert rows[0]["eval_top1_error"] == "12.5" and rows[0]["eval_loss"] == "0.5"
  assert rows[1]["eval_top1_error"] == "" and rows[2]["eval_loss"] == ""
  assert rows[0]["learning_rate"] == "0.1" and rows[2]["learning_rate"] == (
      "0.01")
  assert rows[0]["images_per_sec"] == "8"
  assert rows[0]["wall_time"] == "2026-12-07T12:00:00Z"
  assert list(rows[0]) == list(epoch_log.FIELDS)
  # Throughput of the whole process, compilation excluded.
  assert log.images_per_sec == (9 + 10 + 5) * 8 / (9.0 + 10.0 + 4.0)
  assert epoch_log.final_eval(str(tmp_path), 25) is None
  assert epoch_log.final_eval(str(tmp_path), 10)["top1_error"] == 12.5


def test_a_resume_appends_and_first_drops_rows_after_its_checkpoint(tmp_path):
  clock = FakeClock()
  log = _log(tmp_path, clock, total_steps=40)
  for step in (10, 20, 30):
    log.record(_totals(8.0, 0.0, 0.0, 8), 10, 1.0, first_call=False)
    log.write(step, None)
  # The run died after writing the row of step 30 but resumes from ckpt-20.
  resumed = _log(tmp_path, clock, start_step=20, total_steps=40)
  assert [r["step"] for r in _rows(tmp_path)] == ["10", "20"]
  resumed.record(_totals(8.0, 0.0, 0.0, 8), 10, 1.0, first_call=False)
  resumed.write(30, None)
  assert [r["step"] for r in _rows(tmp_path)] == ["10", "20", "30"]


def test_only_the_chief_writes(tmp_path):
  log = _log(tmp_path, FakeClock(), enabled=False)
  log.record(_totals(8.0, 0.0, 0.0, 8), 10, 1.0, first_call=False)
  log.write(10, None)
  assert not (tmp_path / "metrics.csv").exists()

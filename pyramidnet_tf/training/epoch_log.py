"""One record per epoch: a console line and a row of ``metrics.csv``.

``<model_dir>/metrics.csv`` is the run's history in a form users plot or
diff without TensorBoard (pandas, a spreadsheet, ``column -s, -t``): one row
per finished epoch, and one for the final step when the last epoch is
partial. Columns (``FIELDS``): epoch (float: a partial final epoch is
fractional), step, the train loss and top-1/top-5 error (%) over the steps
trained in that epoch by this process (since the epoch began or the run
resumed), the eval loss, errors and image count when an evaluation ran at
that step (empty otherwise), the learning rate of the epoch's last step, training
images per second (compilation excluded), the epoch's wall seconds, and the
UTC time the row was written.

Resumes append to the same file. Rows of steps after the checkpoint a run
resumes from are dropped first: those steps are trained again, and the file
must describe the one history that the checkpoints continue. Only the chief
writes.
"""

import csv
import datetime
import logging
import math
import os
import time
from typing import Callable, Dict, List, Optional

import numpy as np

from pyramidnet_tf.training import step as step_lib

FILENAME = "metrics.csv"
FIELDS = ("epoch", "step", "train_loss", "train_top1_error",
          "train_top5_error", "eval_loss", "eval_top1_error",
          "eval_top5_error", "eval_examples", "learning_rate", "images_per_sec",
          "epoch_seconds", "wall_time")


def path_of(model_dir: str) -> str:
  return os.path.join(model_dir, FILENAME)


def read_rows(model_dir: str) -> List[Dict[str, str]]:
  """The rows of ``<model_dir>/metrics.csv`` (empty if there is none)."""
  try:
    with open(path_of(model_dir), newline="") as f:
      return list(csv.DictReader(f))
  except FileNotFoundError:
    return []


def final_eval(model_dir: str, step: int) -> Optional[dict]:
  """The evaluation recorded at ``step`` (the run's last), or None.

  A rerun of a finished run reports it instead of evaluating again.
  """
  for row in reversed(read_rows(model_dir)):
    if row.get("step") == str(step) and row.get("eval_top1_error"):
      return {"loss": float(row["eval_loss"]),
              "top1_error": float(row["eval_top1_error"]),
              "top5_error": float(row["eval_top5_error"]),
              "examples": int(row.get("eval_examples") or 0),
              "step": step}
  return None


def _number(value: Optional[float]) -> str:
  if value is None:
    return ""
  return f"{value:.6g}"


class EpochLog:
  """Accumulates each host call's stats; writes a record at epoch ends."""

  def __init__(self, *, model_dir: str, enabled: bool, run, schedule,
               progress=None,
               clock: Callable[[], float] = time.monotonic,
               utc_now: Callable[[], datetime.datetime] = (
                   lambda: datetime.datetime.now(datetime.timezone.utc))):
    """Opens the record; on the chief, drops rows after ``start_step``.

    Args:
      model_dir: where ``metrics.csv`` lives.
      enabled: True on the chief only.
      run: the run plan (``run_plan.RunPlan``): steps of one epoch, the
        run's last step, the step it starts or resumes at, images per step
        (all replicas) and the schedule step minus the step counter (a run
        re-based on the examples seen counts epochs from its schedule step).
      schedule: the learning-rate schedule (``value(step)``).
      progress: ``progress.TrainProgress`` for the console line, or None.
      clock: monotonic seconds (tests inject one).
      utc_now: the wall time of a row (tests inject one).
    """
    self.path = path_of(model_dir)
    self.enabled = enabled
    self.steps_per_epoch = run.steps_per_epoch
    self.total_steps = run.total_steps
    self.global_batch = run.global_batch
    self.schedule = schedule
    self.progress = progress
    self.step_offset = run.step_offset
    self._clock = clock
    self._utc_now = utc_now
    self._epoch_start = clock()
    self._run_steps = 0        # this process's steps counted for throughput
    self._run_seconds = 0.0
    self._reset()
    if enabled:
      self._drop_rows_after(run.start_step)

  def _reset(self) -> None:
    self._totals = np.zeros([step_lib.NUM_STATS])
    self._steps = 0          # steps of this epoch counted for throughput
    self._seconds = 0.0      # their seconds inside train calls

  def _drop_rows_after(self, step: int) -> None:
    rows = []
    try:
      with open(self.path, newline="") as f:
        rows = list(csv.DictReader(f))
    except FileNotFoundError:
      return
    kept = [r for r in rows if _step(r) <= step]
    if len(kept) == len(rows):
      return
    logging.info("%s: dropped %d row(s) after step %d (those steps are "
                 "trained again)", self.path, len(rows) - len(kept), step)
    temp = self.path + ".tmp"
    with open(temp, "w", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
      writer.writeheader()
      writer.writerows(kept)
    os.replace(temp, self.path)

  def record(self, loop_totals, steps: int, elapsed: float,
             first_call: bool) -> None:
    """Adds one host call of ``steps`` steps that took ``elapsed`` s (the
    first call, which compiles, counts for the metrics only)."""
    self._totals += np.asarray(loop_totals, dtype=np.float64)
    if not first_call:
      self._steps += steps
      self._seconds += elapsed
      self._run_steps += steps
      self._run_seconds += elapsed

  @property
  def images_per_sec(self) -> Optional[float]:
    """Training images per second of this process's train calls but the
    first (compilation), or None if there were none."""
    if self._run_seconds <= 0:
      return None
    return self._run_steps * self.global_batch / self._run_seconds

  def due(self, step: int) -> bool:
    """Whether ``step`` ends an epoch (or the run)."""
    return ((step + self.step_offset) % self.steps_per_epoch == 0 or
            step >= self.total_steps)

  def write(self, step: int, eval_metrics: Optional[dict]) -> dict:
    """Writes the record of the epoch ending at ``step``; returns its row.

    Args:
      step: the step the epoch (or the run) ended at.
      eval_metrics: the evaluation at ``step``, or None.
    """
    train = step_lib.Totals.of(self._totals).metrics()
    rate = (self._steps * self.global_batch / self._seconds
            if self._seconds > 0 else None)
    seconds = self._clock() - self._epoch_start
    evaluated = eval_metrics if (eval_metrics and
                                 eval_metrics.get("step") == step) else None
    row = {
        "epoch": (step + self.step_offset) / self.steps_per_epoch,
        "step": step,
        "train_loss": train["loss"] if train["examples"] else None,
        "train_top1_error": train["top1_error"] if train["examples"] else None,
        "train_top5_error": train["top5_error"] if train["examples"] else None,
        "eval_loss": evaluated["loss"] if evaluated else None,
        "eval_top1_error": evaluated["top1_error"] if evaluated else None,
        "eval_top5_error": evaluated["top5_error"] if evaluated else None,
        "eval_examples": evaluated.get("examples") if evaluated else None,
        "learning_rate": float(self.schedule.value(max(step - 1, 0))),
        "images_per_sec": rate,
        "epoch_seconds": seconds,
        "wall_time": self._utc_now().strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if self.enabled:
      self._append(row)
      if self.progress is not None:
        self.progress.epoch_line(row)
    self._epoch_start = self._clock()
    self._reset()
    return row

  def _append(self, row: dict) -> None:
    if not os.path.isdir(os.path.dirname(self.path) or "."):
      # The model dir was deleted or moved during the run: the trainer's
      # ownership check at its next save (or the end) stops the run saying
      # so; recreating the directory here would hide that.
      logging.warning("%s: not written for step %s (its directory is gone)",
                      self.path, row["step"])
      return
    new = not os.path.exists(self.path)
    with open(self.path, "a", newline="") as f:
      writer = csv.DictWriter(f, fieldnames=FIELDS)
      if new:
        writer.writeheader()
      writer.writerow({k: (v if isinstance(v, str) else
                           (_epoch(v) if k == "epoch" else
                            str(v) if k in ("step", "eval_examples") and
                            v is not None else _number(v)))
                       for k, v in row.items()})


def _epoch(value: float) -> str:
  return str(int(value)) if value == math.floor(value) else f"{value:.4g}"


def _step(row: Dict[str, str]) -> int:
  try:
    return int(row.get("step") or 0)
  except ValueError:
    return 0

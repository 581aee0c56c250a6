"""What a training run tells the person watching it.

* A start line with the plan: network, steps and epochs, global and
  per-replica batch, replicas, workers and devices, dtype, XLA.
* "compiling the first step ..." before the first host call (tracing, and
  with XLA compilation, takes from seconds to minutes) and its time after.
* At each log step one line: step, % done, epoch, the train metrics,
  images/s, elapsed time and ETA (left out until a steady rate is known).
  The line starts ``step N/TOTAL`` so log scrapers keep working.
* At each epoch's end one line: epoch k/N, its time and images/s, its train
  metrics and the evaluation at its last step (``epoch_log``).
* On a terminal, between log lines, a one-line bar redrawn after every host
  call (as data_prep's converters draw theirs); in a pipe or a log file
  only the plain lines, so logs stay readable.
* A closing summary: wall time and images/s, the last and best evaluation
  (with where the best checkpoint is), the paper's published error when
  the run is one of its rows, the newest checkpoint and the TensorBoard
  command.
* ``EvalProgress``: a line every so often while a long evaluation runs.

The ETA divides the steps left by the steady rate since the first call
ended (evaluations and checkpoints included, compilation not).
"""

import logging
import sys
import time
from typing import Callable, Optional, TextIO


def duration(seconds: float) -> str:
  """``H:MM:SS`` of a number of seconds."""
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{seconds:02d}"


def epochs_text(epochs: float) -> str:
  """An epoch count with the decimals a short run needs (0.013, 2.5, 300)."""
  if epochs >= 10 or epochs == int(epochs):
    return f"{epochs:.1f}" if epochs != int(epochs) else f"{int(epochs)}"
  return f"{epochs:.2g}" if epochs < 0.1 else f"{epochs:.2f}"


class TrainProgress:
  """Progress lines of one training run (the chief's; others stay quiet)."""

  def __init__(self, *, run, stream: Optional[TextIO] = None,
               clock: Callable[[], float] = time.monotonic,
               enabled: bool = True, jit_compile: bool = False):
    """Starts the clock.

    Args:
      run: the run plan (``run_plan.RunPlan``): the step the run starts
        (or resumes) at, the step it ends at, steps per epoch, images per
        step (all replicas together) and the schedule step minus the step
        counter (a run re-based on examples seen, ``training.resume``:
        epochs are counted from the schedule step).
      stream: where the terminal bar is drawn (default: standard error);
        the bar is drawn only when it is a terminal.
      clock: seconds, for tests.
      enabled: False on non-chief workers: no bar and no lines.
      jit_compile: the step is XLA-compiled (said while compiling).
    """
    self.start_step = run.start_step
    self.total_steps = run.total_steps
    self.steps_per_epoch = run.steps_per_epoch
    self.global_batch = run.global_batch
    self.enabled = enabled
    self.jit_compile = jit_compile
    self.step_offset = run.step_offset
    self._stream = stream if stream is not None else sys.stderr
    self.tty = bool(enabled and hasattr(self._stream, "isatty") and
                    self._stream.isatty())
    self._clock = clock
    self._start = clock()
    self._steady_start: Optional[float] = None
    self._steady_step = run.start_step
    self._bar_shown = False
    self.compile_seconds: Optional[float] = None

  def _info(self, message: str) -> None:
    if self.enabled:
      self.clear()
      logging.info("%s", message)

  def compiling(self) -> None:
    """Says the first host call is starting (it traces and compiles)."""
    what = "tracing and XLA-compiling" if self.jit_compile else "tracing"
    self._info(f"compiling the first step ({what}; this can take a while)")

  def first_call_done(self, step: int) -> None:
    """The first host call ended at ``step``; it says how long it took."""
    now = self._clock()
    self.compile_seconds = now - self._start
    self._steady_start = now
    self._steady_step = step
    self._info(f"first step ready after {self.compile_seconds:.1f} s; "
               "training")

  def eta_seconds(self, step: int) -> Optional[float]:
    """Seconds to ``total_steps`` at the steady rate; None before it is known."""
    if self._steady_start is None or step <= self._steady_step:
      return None
    per_step = (self._clock() - self._steady_start) / (step - self._steady_step)
    return per_step * (self.total_steps - step)

  def status(self, step: int) -> str:
    """``step N/TOTAL (P%, epoch E/EPOCHS)``."""
    percent = 100.0 * step / max(self.total_steps, 1)
    epoch = (step + self.step_offset) / max(self.steps_per_epoch, 1)
    epochs = (self.total_steps + self.step_offset) / max(
        self.steps_per_epoch, 1)
    return (f"step {step}/{self.total_steps} ({percent:.0f}%, epoch "
            f"{epochs_text(epoch)}/{epochs_text(epochs)})")

  def timing(self, step: int) -> str:
    """``elapsed H:MM:SS, ETA H:MM:SS`` (no ETA before a rate is known)."""
    eta = 0.0 if step >= self.total_steps else self.eta_seconds(step)
    elapsed = duration(self._clock() - self._start)
    return f"elapsed {elapsed}" + (f", ETA {duration(eta)}"
                                   if eta is not None else "")

  def log_line(self, step: int, scalars: dict) -> str:
    """The log step's line (also returned, for tests)."""
    parts = [f"loss {scalars['loss']:.4g}",
             f"top-1 error {scalars['top1_error']:.2f}%",
             f"top-5 error {scalars['top5_error']:.2f}%",
             f"lr {scalars['learning_rate']:.4g}"]
    if "examples_per_sec" in scalars:
      parts.append(f"{scalars['examples_per_sec']:,.1f} img/s")
    line = f"{self.status(step)}: {', '.join(parts)} | {self.timing(step)}"
    self._info(line)
    return line

  def epoch_line(self, row: dict) -> str:
    """The line of an epoch's record (``epoch_log``; also returned)."""
    epochs = self.total_steps / max(self.steps_per_epoch, 1)
    parts = []
    if row.get("images_per_sec"):
      parts.append(f"{row['images_per_sec']:,.1f} img/s")
    head = (f"epoch {epochs_text(row['epoch'])}/{epochs_text(epochs)} in "
            f"{duration(row['epoch_seconds'])}"
            + (f" ({', '.join(parts)})" if parts else ""))
    metrics = []
    if row.get("train_loss") is not None:
      metrics.append(f"train loss {row['train_loss']:.4g}, top-1 error "
                     f"{row['train_top1_error']:.2f}%")
    if row.get("eval_top1_error") is not None:
      metrics.append(f"eval loss {row['eval_loss']:.4g}, top-1 error "
                     f"{row['eval_top1_error']:.2f}%, top-5 error "
                     f"{row['eval_top5_error']:.2f}%")
    line = head + (": " + "; ".join(metrics) if metrics else "")
    self._info(line)
    return line

  def update(self, step: int) -> None:
    """After each host call: redraws the terminal bar."""
    if not self.tty:
      return
    width = 24
    filled = int(width * step / max(self.total_steps, 1))
    bar = "#" * filled + "." * (width - filled)
    self._stream.write(f"\r[{bar}] {self.status(step)} {self.timing(step)}"
                       "\x1b[K")
    self._stream.flush()
    self._bar_shown = True

  def clear(self) -> None:
    """Removes the terminal bar, so that other lines start clean."""
    if self._bar_shown:
      self._stream.write("\r\x1b[K")
      self._stream.flush()
      self._bar_shown = False

  def summary(self, *, final_step: int, last_eval: Optional[dict],
              best_eval: Optional[dict], checkpoint: Optional[str],
              model_dir: str, best_checkpoint: Optional[str] = None,
              published: Optional[str] = None,
              images_per_sec: Optional[float] = None) -> str:
    """The closing lines (also returned, for tests).

    Args:
      final_step: the step training ended at.
      last_eval: the last evaluation's metrics (with step and split).
      best_eval: the lowest top-1 error so far.
      checkpoint: the newest checkpoint.
      model_dir: the run's directory (the TensorBoard command).
      best_checkpoint: where the best evaluation's weights are kept.
      published: the paper's error for this network and data, if the run
        is one of the paper's rows (e.g. "4.58 %").
      images_per_sec: training throughput (compilation, evaluation and
        checkpoints excluded), if measured.
    """
    wall = self._clock() - self._start
    trained = final_step - self.start_step
    rate = (f", {images_per_sec:,.1f} img/s training" if images_per_sec
            else "")
    lines = [f"done: step {final_step}/{self.total_steps} in {duration(wall)}"
             + (f" ({trained:,} steps, first step "
                f"{self.compile_seconds:.1f} s{rate})"
                if self.compile_seconds is not None else "")]
    if last_eval:
      lines.append(f"  last eval (step {last_eval['step']}, "
                   f"{last_eval['split']}): top-1 error "
                   f"{last_eval['top1_error']:.2f}%, top-5 error "
                   f"{last_eval['top5_error']:.2f}%, loss "
                   f"{last_eval['loss']:.4g} on {last_eval['examples']:,} "
                   "images")
    if best_eval and (best_checkpoint or not last_eval or
                      best_eval["step"] != last_eval["step"]):
      lines.append(f"  best eval (step {best_eval['step']}): top-1 error "
                   f"{best_eval['top1_error']:.2f}%" +
                   (f", kept in {best_checkpoint} (--checkpoint=best)"
                    if best_checkpoint else ""))
    if published and last_eval:
      lines.append(f"  paper: {published} top-1 error for this network "
                   f"(this run: {last_eval['top1_error']:.2f}%)")
    if checkpoint:
      lines.append(f"  checkpoint: {checkpoint}")
    lines.append(f"  TensorBoard: tensorboard --logdir {model_dir}")
    text = "\n".join(lines)
    self._info(text)
    return text


class EvalProgress:
  """Lines while an evaluation runs: one at most every ``every_s`` seconds.

  Short evaluations print nothing; a 50,000-image ImageNet pass prints how
  far it is, its rate and an ETA. The first chunk of batches, which traces
  the eval step, starts the clock instead of counting towards the rate.
  """

  def __init__(self, split: str, total_images: int, *, enabled: bool = True,
               every_s: float = 10.0,
               clock: Callable[[], float] = time.monotonic):
    """Configures; the clock starts at the first ``update``.

    Args:
      split: the split evaluated (named in the line).
      total_images: images of the whole pass.
      enabled: False on non-chief workers.
      every_s: the least seconds between two lines.
      clock: monotonic seconds (tests inject one).
    """
    self.split = split
    self.total_images = total_images
    self.enabled = enabled
    self.every_s = every_s
    self._clock = clock
    self._start: Optional[float] = None
    self._start_images = 0
    self._last = 0.0

  def update(self, done_images: int) -> Optional[str]:
    """After each chunk of batches; returns the line if one was printed."""
    now = self._clock()
    if self._start is None:
      self._start = self._last = now
      self._start_images = done_images
      return None
    if (not self.enabled or now - self._last < self.every_s or
        done_images >= self.total_images):
      return None
    self._last = now
    elapsed = now - self._start
    rate = (done_images - self._start_images) / elapsed if elapsed > 0 else 0
    eta = (self.total_images - done_images) / rate if rate > 0 else None
    line = (f"evaluating {self.split}: {done_images:,}/{self.total_images:,} "
            f"images ({100.0 * done_images / max(self.total_images, 1):.0f}%)"
            f", {rate:,.1f} img/s" +
            (f", ETA {duration(eta)}" if eta is not None else ""))
    logging.info("%s", line)
    return line

"""What a training run tells the person watching it.

* A start line with the plan: network, steps and epochs, global and
  per-replica batch, replicas, workers and devices, dtype, XLA.
* "compiling the first step ..." before the first host call (tracing, and
  with XLA compilation, takes from seconds to minutes) and its time after.
* At each log step one line: step, % done, epoch, the train metrics,
  images/s, elapsed time and ETA. The line starts ``step N/TOTAL`` so log
  scrapers keep working.
* On a terminal, between log lines, a one-line bar redrawn after every host
  call (as data_prep's converters draw theirs); in a pipe or a log file
  only the plain lines, so logs stay readable.
* A closing summary: wall time, the last and best evaluation, the newest
  checkpoint and the TensorBoard command.

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

  def __init__(self, *, start_step: int, total_steps: int,
               steps_per_epoch: int, global_batch: int,
               stream: Optional[TextIO] = None,
               clock: Callable[[], float] = time.monotonic,
               enabled: bool = True, jit_compile: bool = False,
               step_offset: int = 0):
    """Starts the clock.

    Args:
      start_step: the step the run starts (or resumes) at.
      total_steps: the step it ends at.
      steps_per_epoch: steps in one epoch of the train split.
      global_batch: images per step, all replicas together.
      stream: where the terminal bar is drawn (default: standard error);
        the bar is drawn only when it is a terminal.
      clock: seconds, for tests.
      enabled: False on non-chief workers: no bar and no lines.
      jit_compile: the step is XLA-compiled (said while compiling).
      step_offset: schedule step minus step counter (a run re-based on
        examples seen, ``training.resume``): epochs are counted from the
        schedule step.
    """
    self.start_step = start_step
    self.total_steps = total_steps
    self.steps_per_epoch = steps_per_epoch
    self.global_batch = global_batch
    self.enabled = enabled
    self.jit_compile = jit_compile
    self.step_offset = step_offset
    self._stream = stream if stream is not None else sys.stderr
    self.tty = bool(enabled and hasattr(self._stream, "isatty") and
                    self._stream.isatty())
    self._clock = clock
    self._start = clock()
    self._steady_start: Optional[float] = None
    self._steady_step = start_step
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
    """``elapsed H:MM:SS, ETA H:MM:SS``."""
    eta = self.eta_seconds(step)
    elapsed = duration(self._clock() - self._start)
    return (f"elapsed {elapsed}, ETA "
            f"{duration(eta) if eta is not None else '?'}")

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
              model_dir: str) -> str:
    """The closing lines (also returned, for tests)."""
    wall = self._clock() - self._start
    lines = [f"done: step {final_step}/{self.total_steps} in {duration(wall)}"
             + (f" (first step {self.compile_seconds:.1f} s)"
                if self.compile_seconds is not None else "")]
    if last_eval:
      lines.append(f"  last eval (step {last_eval['step']}, "
                   f"{last_eval['split']}): top-1 error "
                   f"{last_eval['top1_error']:.2f}%, top-5 error "
                   f"{last_eval['top5_error']:.2f}%, loss "
                   f"{last_eval['loss']:.4g} on {last_eval['examples']:,} "
                   "images")
    if best_eval and last_eval and best_eval["step"] != last_eval["step"]:
      lines.append(f"  best eval (step {best_eval['step']}): top-1 error "
                   f"{best_eval['top1_error']:.2f}%")
    if checkpoint:
      lines.append(f"  checkpoint: {checkpoint}")
    lines.append(f"  TensorBoard: tensorboard --logdir {model_dir}")
    text = "\n".join(lines)
    self._info(text)
    return text

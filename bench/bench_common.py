"""What the step benchmarks share: the configs of the README's speed tables, one
way to build and time the trainer's step (so their numbers compare), the
PyTorch reference step, and the fresh-process-per-measurement runner.

Timing follows the trainer: ``TrainStep.loop`` runs N steps in one host call
(``--steps_per_loop``); the first call includes tracing and compilation.
Nothing here imports TensorFlow or PyTorch at module level: a benchmark's
parent process (which may run where only one of them is installed) imports
this module too, and each measurement imports its framework in its child.
"""

import ctypes
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import time

from absl import app

# The configs of the README's speed tables (c20: a small one for quick checks; c8
# and i14: the smallest CIFAR / ImageNet-stem nets, for rehearsals of the
# GPU suite on a CPU).
CONFIGS = {
    "c8": dict(dataset="cifar10", depth=8, alpha=12, bottleneck=False,
               batch=4, size=16),
    "i14": dict(dataset="imagenet", depth=14, alpha=12, bottleneck=True,
                batch=4, size=32),
    "c20": dict(dataset="cifar10", depth=20, alpha=24, bottleneck=False,
                batch=32, size=32),
    "c110": dict(dataset="cifar10", depth=110, alpha=48, bottleneck=False,
                 batch=128, size=32),
    "c164": dict(dataset="cifar10", depth=164, alpha=48, bottleneck=True,
                 batch=128, size=32),
    "c272": dict(dataset="cifar100", depth=272, alpha=200, bottleneck=True,
                 batch=128, size=32),
    "i200": dict(dataset="imagenet", depth=200, alpha=300, bottleneck=True,
                 batch=64, size=224),
}

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}

# Schedule arguments of the benchmarks' steps (the CIFAR recipe's shape).
SCHEDULE_ARGS = ("step", 0.1, 390, 10 ** 6, (150, 225))

# TF logs a persistent-cache hit as this line when its executable persistor
# logs at VLOG 1 (``cache_log_env``): the count of hits of a process.
CACHE_HIT_LINE = re.compile(r"Loading cached entry for:")


def check_choices(flag: str, values, allowed) -> list:
  """``values`` of ``--flag`` as a list; a usage error names the first one
  not in ``allowed``."""
  for value in values:
    if value not in allowed:
      raise app.UsageError(f"--{flag}: unknown {value!r}; choose from "
                           f"{', '.join(allowed)}")
  return list(values)


def cache_log_env(environ) -> dict:
  """``environ`` with TF's persistent-cache hits logged (CACHE_HIT_LINE)."""
  env = dict(environ)
  env["TF_CPP_VMODULE"] = "device_executable_persistor=1"
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  return env


def synthetic_iterator(tf, strategy, size: int, num_classes: int,
                       global_batch: int):
  """An iterator over the trainer's synthetic data, distributed."""
  from pyramidnet_tf.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  del tf  # the caller has imported TensorFlow already
  dataset = strategy.distribute_datasets_from_function(
      lambda ctx: input_pipeline.synthetic_dataset(
          size, num_classes, ctx.get_per_replica_batch_size(global_batch), 0))
  return iter(dataset)


def time_train_loop(tf, train_step, iterator, global_batch: int, steps: int,
                    warmup: int, on_first_step=None) -> dict:
  """First call (1 step), ``warmup`` untimed steps, then ``steps`` timed.

  Returns first_step_s, img_per_s, first_loss (the first step's summed
  loss over the batch, to compare paths) and first_done (time.time() when
  the first step had finished). ``on_first_step(first_step_s)``, if given,
  runs right after the first step (a caller reports progress there, so a
  measurement killed later still tells its compile time).
  """
  start = time.time()
  totals = train_step.loop(iterator, tf.constant(1))[0].numpy()
  first_done = time.time()
  first = first_done - start
  if on_first_step is not None:
    on_first_step(round(first, 2))
  if warmup:
    train_step.loop(iterator, tf.constant(warmup))[0].numpy()
  start = time.time()
  train_step.loop(iterator, tf.constant(steps))[0].numpy()
  elapsed = time.time() - start
  return {"first_step_s": round(first, 2),
          "img_per_s": round(global_batch * steps / elapsed, 2),
          "first_loss": float(totals[0]), "first_done": first_done}


def peak_memory_mb(tf) -> tuple:
  """(peak MB, what it counts) of this process: the GPU allocator's peak
  when TF sees a GPU, else the process's peak RSS."""
  if tf.config.list_physical_devices("GPU"):
    return (tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2 ** 20,
            "gpu_peak")
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_rss"


def build_tf_train_step(tf, strategy, cfg: dict, dtype: str, xla: bool,
                        multiple: int, batch: int):
  """The trainer's step on the config's network: (TrainStep, model).

  The network has the config's exact logical widths (``multiple`` only pads
  the tensors it carries, ``channel_alignment``); the optimizer is the
  trainer's Nesterov SGD with coupled L2 1e-4 and the loss its mean cross
  entropy, as in the PyTorch reference step below.
  """
  from pyramidnet_tf.model import network as model_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import optim
  from pyramidnet_tf.training import schedules  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import step as step_lib
  from pyramidnet_tf.training import loss_scale as loss_scale_lib  # pylint: disable=g-import-not-at-top
  with strategy.scope():
    model = model_lib.PyramidNet(cfg["dataset"], cfg["depth"], cfg["alpha"],
                                 cfg["bottleneck"],
                                 channel_multiple=multiple)
    global_step = tf.Variable(0, dtype=tf.int64)
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
    scaler = (loss_scale_lib.DynamicLossScale() if dtype == "float16"
              else None)
  schedule = schedules.Schedule(*SCHEDULE_ARGS)
  train_step = step_lib.TrainStep(strategy=strategy, model=model, optimizer=opt,
                                  schedule=schedule, global_step=global_step,
                                  global_batch=batch, dtype=dtype,
                                  jit_compile=xla,
                                  loss_scale=scaler)
  return train_step, model


def tf_train_row(tf, strategy, cfg: dict, dtype: str, xla: bool,
                 multiple: int, batch: int, steps: int, warmup: int,
                 on_first_step=None) -> dict:
  """Times the trainer's step (``build_tf_train_step``) on synthetic data.

  Returns batch, first_step_s, img_per_s, first_loss, peak_mem_mb and
  mem_kind (``peak_memory_mb``); the GPU peak counts from this call.
  """
  if tf.config.list_physical_devices("GPU"):
    tf.config.experimental.reset_memory_stats("GPU:0")
  train_step, model = build_tf_train_step(tf, strategy, cfg, dtype, xla,
                                          multiple, batch)
  iterator = synthetic_iterator(tf, strategy, cfg["size"], model.num_classes,
                                batch)
  timing = time_train_loop(tf, train_step, iterator, batch, steps, warmup,
                           on_first_step)
  peak, kind = peak_memory_mb(tf)
  return {"batch": batch, "first_step_s": timing["first_step_s"],
          "img_per_s": timing["img_per_s"],
          "first_loss": timing["first_loss"], "peak_mem_mb": round(peak),
          "mem_kind": kind}


def torch_train_row(cfg: dict, dtype: str, batch: int, steps: int,
                    warmup: int, channels_last: bool = False,
                    compile_model: bool = False, on_first_step=None) -> dict:
  """The same step in the PyTorch reference model (tests/torch_pyramidnet).

  Forward, mean cross entropy, backward, SGD with Nesterov momentum 0.9 and
  weight decay 1e-4 on every parameter (the authors' recipe, which the TF
  step implements). ``dtype="bfloat16"``: ``torch.autocast``;
  ``channels_last``: NHWC memory format for the model and the batch;
  ``compile_model``: ``torch.compile`` (its compilation is in the first
  step). On CUDA, cuDNN autotuning is on (``cudnn.benchmark``, as in the
  authors' train.py), as TF's is. Returns the keys of ``tf_train_row``.
  """
  import torch  # pylint: disable=g-import-not-at-top
  from tests.torch_pyramidnet import TorchPyramidNet  # pylint: disable=g-import-not-at-top
  device = "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda":
    torch.backends.cudnn.benchmark = True
    torch.cuda.reset_peak_memory_stats()
  memory_format = (torch.channels_last if channels_last else
                   torch.contiguous_format)
  model = TorchPyramidNet(cfg["dataset"], cfg["depth"], cfg["alpha"],
                          cfg["bottleneck"]).to(device,
                                                memory_format=memory_format)
  model.train()
  opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9,
                        weight_decay=1e-4, nesterov=True)
  x = torch.randn(batch, 3, cfg["size"], cfg["size"], device=device).to(
      memory_format=memory_format)
  y = torch.randint(0, NUM_CLASSES[cfg["dataset"]], (batch,), device=device)
  use_bf16 = dtype == "bfloat16"
  forward = torch.compile(model) if compile_model else model

  def sync():
    if device == "cuda":
      torch.cuda.synchronize()

  def one():
    opt.zero_grad(set_to_none=True)
    with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
      loss = torch.nn.functional.cross_entropy(forward(x), y)
    loss.backward()
    opt.step()
    return loss

  start = time.time()
  first_loss = float(one().detach()) * batch  # a host read: step finished
  first = time.time() - start
  if on_first_step is not None:
    on_first_step(round(first, 2))
  for _ in range(warmup):
    one()
  sync()
  start = time.time()
  for _ in range(steps):
    one()
  sync()
  elapsed = time.time() - start
  if device == "cuda":
    peak, kind = torch.cuda.max_memory_allocated() / 2 ** 20, "gpu_peak"
  else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kind = "cpu_rss"
  return {"batch": batch, "first_step_s": round(first, 2),
          "img_per_s": round(batch * steps / elapsed, 2),
          "first_loss": first_loss, "peak_mem_mb": round(peak),
          "mem_kind": kind}


def _child_setup():
  """In the child, before exec: its own process group (so a time box kills
  what it started too, e.g. torch.compile's workers) and death with its
  parent (a killed benchmark leaves no measurement running on the GPU)."""
  os.setpgid(0, 0)
  try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # DEATHSIG
  except (OSError, AttributeError):  # not Linux: the group kill still works
    pass


def run_row_process(cmd, prefix: str, timeout_s=None, env=None, cwd=None,
                    log_path=None, clock=time.monotonic, box_from=None,
                    poll_s: float = 0.2) -> dict:
  """Runs one measurement in a fresh interpreter and collects its lines.

  A fresh process per measurement keeps one framework's thread pools,
  caches and allocator out of the other's timing (PyTorch timed after a TF
  step in the same process ran at half its own speed here) and makes the
  peak-memory figure that measurement's own. The child prints JSON objects
  on lines starting with ``prefix``: progress lines (with a "progress" key)
  and, last, its row. A child still running when its time box is over is
  killed with everything it started; what it printed until then is kept.

  Args:
    cmd: the child's command line.
    prefix: the start of the child's JSON lines.
    timeout_s: the time box, in seconds of ``clock`` (None: no box).
    env: the child's environment (None: this process's).
    cwd: the child's working directory.
    log_path: the child's stdout and stderr go to ``log_path`` + ".out" /
      ".err" (None: temporary files).
    clock: seconds for the time box and the wall; a test passes a fake one
      (a stalled clock never ends a box, a jumping one ends it at once).
    box_from: a progress kind (the "progress" value of a progress line):
      the box counts from the child's first such line instead of from its
      start (the GPU suite's rehearsed hangs count from the hang).
    poll_s: how often a running child is looked at, in real seconds.

  Returns:
    {"row": the last row or None, "progress": merged progress dicts,
    "returncode", "timed_out", "wall_s", "stdout", "stderr"}.
  """
  scratch = None
  if not log_path:
    scratch = tempfile.mkdtemp(prefix="row_process.")
    log_path = os.path.join(scratch, "row")
  try:
    with open(log_path + ".out", "w+b") as out, \
        open(log_path + ".err", "w+b") as err:
      start = clock()
      proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd,
                              preexec_fn=_child_setup)
      watch = _ProgressWatch(log_path + ".out", prefix) if box_from else None
      box_start = None if box_from else start
      timed_out = False
      while True:
        try:
          proc.wait(timeout=poll_s)
          break
        except subprocess.TimeoutExpired:
          pass
        if timeout_s is None:
          continue
        if box_start is None and box_from in watch.kinds():
          box_start = clock()
        if box_start is not None and clock() - box_start >= timeout_s:
          timed_out = True
          try:
            os.killpg(proc.pid, signal.SIGKILL)
          except ProcessLookupError:
            pass
          proc.wait()
          break
      wall = clock() - start
      out.seek(0)
      err.seek(0)
      stdout = out.read().decode("utf-8", "replace")
      stderr = err.read().decode("utf-8", "replace")
  finally:
    if scratch:
      shutil.rmtree(scratch, ignore_errors=True)
  row, progress = None, {}
  for record in _prefixed_records(stdout, prefix):
    if "progress" in record:
      progress.update(record)
    else:
      row = record
  return {"row": row, "progress": progress, "returncode": proc.returncode,
          "timed_out": timed_out, "wall_s": round(wall, 1),
          "stdout": stdout, "stderr": stderr}


def _prefixed_records(text: str, prefix: str):
  """The JSON objects of ``text``'s lines that start with ``prefix``."""
  for line in text.splitlines():
    if not line.startswith(prefix):
      continue
    try:
      yield json.loads(line[len(prefix):])
    except ValueError:
      continue  # a line cut off by a kill


class _ProgressWatch:
  """The progress kinds a running child has printed so far, read from its
  stdout file through a handle of our own (the child's shares no offset
  with it)."""

  def __init__(self, path: str, prefix: str):
    self._path, self._prefix = path, prefix
    self._seen, self._partial, self._offset = set(), b"", 0

  def kinds(self) -> set:
    with open(self._path, "rb") as f:
      f.seek(self._offset)
      data = f.read()
    self._offset += len(data)
    lines = (self._partial + data).split(b"\n")
    self._partial = lines.pop()  # no newline yet: read again next time
    text = b"\n".join(lines).decode("utf-8", "replace")
    self._seen.update(r["progress"] for r in _prefixed_records(text,
                                                               self._prefix)
                      if isinstance(r, dict) and "progress" in r)
    return self._seen


def error_tail(result: dict) -> str:
  """The last line of a failed child's stderr (usually the exception)."""
  lines = [l for l in result["stderr"].strip().splitlines() if l.strip()]
  return lines[-1] if lines else "(no output)"

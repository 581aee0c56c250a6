"""Peak memory and step time of a training step, with and without recompute.

    python bench/memory_bench.py                         # the big paper rows
    python bench/memory_bench.py --rows=c272 --batch=8 --steps=2

Each (row, --recompute) measurement runs in a fresh process of its own, the
settings alternating (none, unit, none, unit, ... with --repeats), so that
one process's allocator never serves the other's. A child builds the
network, Nesterov SGD and one ``tf.function`` train step (forward, backward,
update; float32, the trainer's CPU channel alignment), runs it once (tracing
included) and then ``--steps`` timed steps, and reports its peak RSS (CPU)
or TF's peak allocator bytes (GPU). ``baseline`` is the RSS of the same process
after importing TensorFlow and creating the input batch, before the network
exists (the peak is reset there, so a higher transient peak of TensorFlow's
start-up does not count): peak minus baseline is what the step itself used, which
``pyramidnet_tf.model.memory.estimate`` (``describe --batch_size``) predicts
(``estimate`` column).

Rows: c272 = CIFAR-100 PyramidNet-272 a=200 bottleneck, c110 = CIFAR-100
PyramidNet-110 a=270 basic (the paper's batch 128 each), i200 = ImageNet
PyramidNet-200 a=450 (+ dropout 0.5; batch 64 in the paper).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

ROWS = {
    "c272": dict(dataset="cifar100", depth=272, alpha=200, bottleneck=True,
                 image_size=32, batch=128),
    "c110": dict(dataset="cifar100", depth=110, alpha=270, bottleneck=False,
                 image_size=32, batch=128),
    "i200": dict(dataset="imagenet", depth=200, alpha=450, bottleneck=True,
                 image_size=224, batch=64, drop_rate=0.5),
}


def _reset_peak_rss() -> None:
  """Lowers this process's peak RSS to its current RSS (Linux >= 4.0).

  Importing TensorFlow can pass through a higher peak than where it settles
  (how high depends on the host); without the reset that transient peak
  would hide the step's own growth. Where the kernel does not allow it the
  peak counts from process start.
  """
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
  except OSError:
    pass


def _peak_rss_mb() -> float:
  """Peak RSS since start or since the last ``_reset_peak_rss``, in MB."""
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(dataset: str, depth: int, alpha: float, bottleneck: bool,
            image_size: int, batch: int, recompute: str, steps: int,
            drop_rate: float = 0.0) -> dict:
  """One measurement in this process (call it in a fresh one).

  Args:
    dataset, depth, alpha, bottleneck, drop_rate: the network.
    image_size: input side in pixels.
    batch: examples per step.
    recompute: "none" or "unit".
    steps: timed steps after the first (traced) one.

  Returns:
    baseline_mb, peak_mb, step_mb (peak - baseline), first_step_s,
    step_s (mean of the timed steps), estimate_mb (the model's prediction
    of step_mb) and the estimate's parts in MB.
  """
  import pyramidnet_tf  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model import channel_alignment  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model import memory  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model import network  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import optim  # pylint: disable=g-import-not-at-top

  images = tf.random.stateless_normal([batch, image_size, image_size, 3],
                                      seed=[0, 1])
  num_classes = network.widths_lib.NUM_CLASSES[dataset]
  labels = tf.random.stateless_uniform([batch], [0, 2], maxval=num_classes,
                                       dtype=tf.int32)
  multiple = channel_alignment.resolve(0, "float32",
                                       channel_alignment.local_device_type())
  _reset_peak_rss()
  baseline = _peak_rss_mb()
  model = network.PyramidNet(dataset, depth, alpha, bottleneck,
                             drop_rate=drop_rate, channel_multiple=multiple)
  model.set_recompute(recompute)
  variables = list(model.trainable_variables)
  optimizer = optim.NesterovSGD(variables)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(
          tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    optimizer.apply(tape.gradient(loss, variables), tf.constant(0.1))
    return loss

  start = time.perf_counter()
  step().numpy()
  first = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps):
    step().numpy()
  step_s = (time.perf_counter() - start) / max(steps, 1)
  peak = _peak_rss_mb()
  est = memory.estimate(model.arch, model.num_classes, image_size, batch,
                        "float32", recompute, multiple)
  return {"baseline_mb": baseline, "peak_mb": peak,
          "step_mb": peak - baseline, "first_step_s": first,
          "step_s": step_s if steps else None,
          "estimate_mb": est.total / 2 ** 20,
          "estimate_parts_mb": {k: v / 2 ** 20
                                for k, v in est.as_dict().items()}}


def run_isolated(row: dict, recompute: str, steps: int,
                 timeout_s: float = 3600, env: dict = None) -> dict:
  """``measure`` in a fresh Python process; its result, or {"error": ...}.

  Args:
    row: keyword arguments of ``measure`` except recompute and steps.
    recompute: "none" or "unit".
    steps: timed steps.
    timeout_s: the child's time limit.
    env: environment variables set for the child on top of this process's
      (e.g. TF_NUM_INTRAOP_THREADS).
  """
  args = dict(row, recompute=recompute, steps=steps)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **(env or {}))
  proc = subprocess.run(
      [sys.executable, os.path.abspath(__file__), "--child", json.dumps(args)],
      capture_output=True, text=True, timeout=timeout_s, check=False, env=env,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  for line in reversed(proc.stdout.splitlines()):
    if line.startswith("RESULT "):
      return json.loads(line[len("RESULT "):])
  return {"error": (proc.stderr or proc.stdout)[-1500:],
          "returncode": proc.returncode}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rows", default="c272,c110,i200",
                      help=f"comma-separated subset of {', '.join(ROWS)}")
  parser.add_argument("--batch", type=int, default=0,
                      help="override every row's batch size (0: the paper's)")
  parser.add_argument("--steps", type=int, default=2, help="timed steps")
  parser.add_argument("--repeats", type=int, default=1,
                      help="rounds of (none, unit)")
  parser.add_argument("--child", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print("RESULT " + json.dumps(measure(**json.loads(args.child))),
          flush=True)
    return
  names = [n for n in args.rows.split(",") if n]
  unknown = [n for n in names if n not in ROWS]
  if unknown:
    parser.error(f"--rows: unknown {', '.join(unknown)}; valid: "
                 f"{', '.join(ROWS)}")
  if args.batch < 0 or args.steps < 0 or args.repeats < 1:
    parser.error("--batch and --steps must be >= 0, --repeats >= 1")
  print(f"{'row':5} {'batch':>5} {'recompute':9} {'baseline MB':>11} "
        f"{'peak MB':>8} {'step MB':>8} {'estimate MB':>11} "
        f"{'first s':>8} {'step s':>7}", flush=True)
  for name in names:
    row = dict(ROWS[name])
    if args.batch:
      row["batch"] = args.batch
    for _ in range(args.repeats):
      for recompute in ("none", "unit"):
        r = run_isolated(row, recompute, args.steps)
        if "error" in r:
          print(f"{name:5} {row['batch']:5} {recompute:9} failed "
                f"(rc {r['returncode']}): {r['error'].splitlines()[-1:]}",
                flush=True)
          continue
        step_s = f"{r['step_s']:7.2f}" if r["step_s"] is not None else "      -"
        print(f"{name:5} {row['batch']:5} {recompute:9} "
              f"{r['baseline_mb']:11.0f} {r['peak_mb']:8.0f} "
              f"{r['step_mb']:8.0f} {r['estimate_mb']:11.0f} "
              f"{r['first_step_s']:8.1f} {step_s}", flush=True)


if __name__ == "__main__":
  main()

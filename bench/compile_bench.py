"""XLA compile-time benchmark: compile scopes x persistent cache (a table).

    python bench/compile_bench.py --configs=c110 --batch=32 --steps=3
    python bench/compile_bench.py --configs=c272,i200      # on a GPU

Every measurement is a fresh subprocess (what a user pays on start, resume or
evaluation): it configures ``compile_cache`` from --compile_cache_dir while
absl parses its flags (as the trainer does, before TensorFlow lists its
devices), builds the model and ``step.TrainStep`` on synthetic data, and reports the
first train step (tracing + XLA compilation or cache load + one step) and the
steady images/s over --steps steps in one host call, as train_bench does.

Paths: ``none`` (no XLA), ``step`` (--jit_scope=step: whole forward/backward
one XLA program), ``unit`` (--jit_scope=unit: one program per residual unit,
``compile_units``). Caches: ``cold`` (empty cache directory) then ``warm``
(a second process on the same directory). Entries are the TF cache files
written by the run; hits are TF's "Loading cached entry" log lines (its
VLOG, switched on in the child for that purpose).
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from pyramidnet_tf.cli import compile_cache_flags  # pylint: disable=g-import-not-at-top,wrong-import-position  (defines --compile_cache_dir)
from pyramidnet_tf.runtime import compile_cache  # pylint: disable=g-import-not-at-top,wrong-import-position

from bench.bench_common import CONFIGS, SCHEDULE_ARGS  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position
PATHS = ("none", "step", "unit")

flags.DEFINE_list("configs", ["c110"], f"Subset of {list(CONFIGS)}.")
flags.DEFINE_list("paths", list(PATHS), f"Subset of {list(PATHS)}.")
flags.DEFINE_integer("batch", 32, "Batch size (0 = the config's own).")
flags.DEFINE_integer("steps", 3, "Timed steps after one warm-up step.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
flags.DEFINE_string("cache_root", "", "Where the cache directories go "
                    "(default: a temporary directory, removed at the end).")
flags.DEFINE_integer("timeout", 1800, "Seconds per subprocess.")
flags.DEFINE_string("worker", "", "Internal: run one measurement as JSON "
                    "{config, path} and print one JSON line (the cache is "
                    "--compile_cache_dir).")
FLAGS = flags.FLAGS


def measure(config: str, path: str) -> dict:
  """One measurement in this (fresh) process."""
  start_all = time.time()
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import config as config_lib  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy(
      config_lib.RuntimeConfig(distribution="one_device"))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.runtime import compile_units  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import optim
  from pyramidnet_tf.model import network as model_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import schedules
  from pyramidnet_tf.training import step as step_lib
  cfg = CONFIGS[config]
  batch = FLAGS.batch or cfg["batch"]
  tf.random.set_seed(1)
  with strategy.scope():
    model = model_lib.PyramidNet(cfg["dataset"], cfg["depth"], cfg["alpha"],
                                 cfg["bottleneck"])
    global_step = tf.Variable(0, dtype=tf.int64)
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
  if path == "unit":
    compile_units.jit_units(model)
  schedule = schedules.Schedule(*SCHEDULE_ARGS)
  train_step = step_lib.TrainStep(strategy=strategy, model=model, optimizer=opt,
                                  schedule=schedule, global_step=global_step,
                                  global_batch=batch, dtype=FLAGS.dtype,
                                  jit_compile=(path == "step"))
  iterator = bench_common.synthetic_iterator(tf, strategy, cfg["size"],
                                             model.num_classes, batch)
  timing = bench_common.time_train_loop(tf, train_step, iterator, batch,
                                        FLAGS.steps, warmup=1)
  to_first = timing["first_done"] - start_all
  return {"first_step_s": timing["first_step_s"],
          "build_and_first_s": round(to_first, 2),
          "img_per_s": timing["img_per_s"],
          "first_loss": timing["first_loss"], "batch": batch,
          "distinct_units": compile_units.distinct_unit_signatures(
              model, cfg["size"]),
          "units": sum(len(s) for s in model.stages)}


def run_child(config: str, path: str, cache_dir: str) -> dict:
  """Runs ``measure`` in a fresh Python process; adds cache counts."""
  env = bench_common.cache_log_env(os.environ)
  before = compile_cache.stats(cache_dir)
  spec = json.dumps({"config": config, "path": path})
  argv = [sys.executable, os.path.abspath(__file__), f"--worker={spec}",
          f"--compile_cache_dir={cache_dir if path != 'none' else 'none'}",
          f"--batch={FLAGS.batch}", f"--steps={FLAGS.steps}",
          f"--dtype={FLAGS.dtype}"]
  start = time.time()
  proc = subprocess.run(argv, env=env, capture_output=True, text=True,
                        timeout=FLAGS.timeout, cwd=_ROOT, check=False)
  wall = time.time() - start
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{config}/{path} failed ({proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  row = json.loads(lines[-1])
  after = compile_cache.stats(cache_dir)
  row.update({"config": config, "path": path, "process_s": round(wall, 1),
              "entries_new": compile_cache.new_entries(before, after),
              "entries_total": after["tf_entries"],
              "cache_mb": round(after["tf_bytes"] / 2 ** 20, 1),
              "hits": len(bench_common.CACHE_HIT_LINE.findall(proc.stderr))})
  return row


def main(argv):
  del argv
  if FLAGS.worker:
    spec = json.loads(FLAGS.worker)
    print(json.dumps(measure(spec["config"], spec["path"])), flush=True)
    return
  bench_common.check_choices("configs", FLAGS.configs, list(CONFIGS))
  for path in FLAGS.paths:
    if path not in PATHS:
      raise app.UsageError(f"--paths: unknown {path!r}; choose from "
                           f"{', '.join(PATHS)}")
  root = FLAGS.cache_root or tempfile.mkdtemp(prefix="compile_bench_")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  device = ("GPU" if tf.config.list_physical_devices("GPU") else
            f"CPU x{os.cpu_count()}")
  print(f"# compile_bench on {device}; TF {tf.__version__}; batch "
        f"{FLAGS.batch or 'config'}, {FLAGS.steps} timed steps; caches in "
        f"{root}", flush=True)
  rows = []
  try:
    for name in FLAGS.configs:
      for path in FLAGS.paths:
        cache_dir = os.path.join(root, f"{name}_{path}")
        shutil.rmtree(cache_dir, ignore_errors=True)
        for cache in (("cold",) if path == "none" else ("cold", "warm")):
          row = run_child(name, path, cache_dir)
          row["cache"] = cache
          rows.append(row)
          print(json.dumps(row), flush=True)
  finally:
    if not FLAGS.cache_root:
      shutil.rmtree(root, ignore_errors=True)
  print("\n| config | path | cache | batch | first step s | steady img/s | "
        "process s | entries new | hits | cache MB |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['config']} | {r['path']} | {r['cache']} | {r['batch']} | "
          f"{r['first_step_s']} | {r['img_per_s']} | {r['process_s']} | "
          f"{r['entries_new']} | {r['hits']} | {r['cache_mb']} |")
  if rows:
    r = rows[0]
    print(f"units: {r['units']}, distinct unit shapes: {r['distinct_units']}")


if __name__ == "__main__":
  app.run(main, flags_parser=compile_cache_flags.parse_flags_and_configure)

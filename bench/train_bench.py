"""Training-step and input-pipeline benchmarks (prints tables; not a test).

    python bench/train_bench.py                       # everything
    python bench/train_bench.py --configs=c110 --steps=20 --dtypes=float32
    python bench/train_bench.py --configs=c110 --xla=false --repeats=3

For each config (c110: CIFAR PyramidNet-110 a=48, batch 128; c272: CIFAR-100
PyramidNet-272 a=200 bottleneck, batch 128; i200: ImageNet PyramidNet-200
a=300, batch 64) and each dtype x XLA setting: time to first step (tracing
and compilation included), steady-state images/s over --steps steps run in
one host call (as the trainer does with --steps_per_loop), and peak memory
(GPU: TF's peak allocator bytes; CPU: the peak RSS of the process that
made the measurement). The same step (forward, backward, Nesterov SGD with
weight decay) in the PyTorch reference model of tests/torch_pyramidnet.py
gives the TF/PyTorch ratio.
Every measurement runs in a fresh process of its own (--isolate, the
default) and, with --repeats=N, N times in interleaved rounds; the table
gives the median rate, every run's rate and the ratios of the medians and
of the best runs (on a shared machine the spread between runs can exceed
the difference being measured: look at both).
Then the input pipeline alone (decode + augmentation) in images/s per core,
from CIFAR-like raw and ImageNet-like JPEG TFRecords it writes (or from
--cifar_data_dir / --imagenet_data_dir).
"""

import io
import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.bench_common import CONFIGS  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list("configs", ["c110", "c272", "i200"],
                  f"Subset of {list(CONFIGS)}.")
flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
flags.DEFINE_list("xla", ["false", "true"], "XLA settings to try.")
flags.DEFINE_list("channel_multiples", ["1", "auto"],
                  "Channel alignments to try (pyramidnet_tf.model.channel_alignment):"
                  " 1 = the logical widths, auto = the trainer's default for "
                  "the dtype and device, or a positive integer.")
flags.DEFINE_integer("steps", 10, "Timed steps per measurement.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after the first.")
flags.DEFINE_integer("batch", 0, "Override every config's batch size.")
flags.DEFINE_bool("torch", True, "Also time the PyTorch reference step.")
flags.DEFINE_bool("pipeline", True, "Also time the input pipeline alone.")
flags.DEFINE_string("cifar_data_dir", "", "Real CIFAR records (optional).")
flags.DEFINE_string("imagenet_data_dir", "", "Real ImageNet records.")
flags.DEFINE_integer("pipeline_seconds", 10, "Seconds per pipeline run.")
flags.DEFINE_integer("repeats", 1, "Runs of every measurement, in rounds; "
                     "the table gives the median rate and every run's.")
flags.DEFINE_bool("isolate", True, "Run every measurement in its own fresh "
                  "process (the default: frameworks do not share thread "
                  "pools, caches or the peak-memory counter).")
flags.DEFINE_string("row", "", "Internal (--isolate): the JSON spec of the "
                    "one measurement this child process makes.")
FLAGS = flags.FLAGS

_ROW_PREFIX = "TRAIN_BENCH_ROW "


def _channel_multiple(value, dtype):
  from pyramidnet_tf.model import channel_alignment  # pylint: disable=g-import-not-at-top
  try:
    flag = channel_alignment.AUTO if value == "auto" else int(value)
    return channel_alignment.resolve(flag, dtype,
                                     channel_alignment.local_device_type())
  except ValueError:
    raise app.UsageError(f"--channel_multiples: {value!r} is neither 'auto' "
                         "nor a positive integer") from None


def tf_step(tf, strategy, name, cfg, dtype, xla, multiple):
  row = bench_common.tf_train_row(tf, strategy, cfg, dtype, xla, multiple,
                                  FLAGS.batch or cfg["batch"], FLAGS.steps,
                                  FLAGS.warmup)
  return {"config": name, "framework": "tf", "dtype": dtype, "xla": xla,
          "channel_multiple": multiple, "batch": row["batch"],
          "first_step_s": row["first_step_s"], "img_per_s": row["img_per_s"],
          "peak_mem_mb": row["peak_mem_mb"]}


def torch_step(name, cfg, dtype):
  row = bench_common.torch_train_row(cfg, dtype, FLAGS.batch or cfg["batch"],
                                     FLAGS.steps, FLAGS.warmup)
  return {"config": name, "framework": "torch", "dtype": dtype, "xla": False,
          "channel_multiple": 1, "batch": row["batch"],
          "first_step_s": row["first_step_s"], "img_per_s": row["img_per_s"],
          "peak_mem_mb": row["peak_mem_mb"]}


def _write_records(tf, directory, kind, count):
  """CIFAR-like raw 32x32 or ImageNet-like JPEG records + manifest."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  name = "train-00000-of-00001.tfrecord"
  with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
    for i in range(count):
      if kind == "cifar":
        h = w = 32
        encoded, fmt = rng.integers(0, 255, (32, 32, 3), np.uint8).tobytes(), b"RAW"
      else:
        h, w = 375, 500
        # Smooth content so JPEG sizes resemble photos (~50-100 KB).
        base = rng.integers(0, 255, (h // 8, w // 8, 3), np.uint8)
        image = Image.fromarray(base).resize((w, h), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        encoded, fmt = buffer.getvalue(), b"JPEG"
      feature = {
          "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[encoded])),
          "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(
              value=[fmt])),
          "image/height": tf.train.Feature(int64_list=tf.train.Int64List(
              value=[h])),
          "image/width": tf.train.Feature(int64_list=tf.train.Int64List(
              value=[w])),
          "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(
              value=[i % 10])),
      }
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=feature)).SerializeToString())
  manifest = {"dataset": "cifar10" if kind == "cifar" else "imagenet2012",
              "converter": "data_prep.cifar" if kind == "cifar" else
                           "data_prep.imagenet",
              "label_base": 0, "class_names": [str(i) for i in range(10)],
              "splits": {"train": {"num_examples": count, "shards": [
                  {"file": name, "num_examples": count}]}}}
  with open(os.path.join(directory, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  return directory


def pipeline(tf, kind, data_dir):
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top
  info = manifest_lib.read_manifest(data_dir)
  if kind == "cifar":
    pre = preprocessing_lib.Preprocessing("cifar", 32, "cifar10", "pt")
  else:
    pre = preprocessing_lib.Preprocessing("imagenet", 224)
  batch = 128 if kind == "cifar" else 64
  ds = input_pipeline.train_dataset(info, pre, batch, seed=1,
                                    cache=(kind == "cifar"))
  it = iter(ds)
  for _ in range(3):
    next(it)
  images, start = 0, time.time()
  while time.time() - start < FLAGS.pipeline_seconds:
    next(it)
    images += batch
  rate = images / (time.time() - start)
  cores = os.cpu_count()
  return {"pipeline": kind, "records": info.num_examples("train"),
          "img_per_s": round(rate, 1), "cores": cores,
          "img_per_s_per_core": round(rate / cores, 1)}


def _one_row_here(tf, strategy, spec):
  """One measurement in this process (--noisolate: all of them, in turn)."""
  cfg = CONFIGS[spec["config"]]
  if spec["framework"] == "torch":
    return dict(torch_step(spec["config"], cfg, spec["dtype"]),
                pid=os.getpid())
  return dict(tf_step(tf, strategy, spec["config"], cfg, spec["dtype"],
                      spec["xla"], spec["channel_multiple"]),
              pid=os.getpid())


def _one_row(spec):
  """--row: the one measurement of this child process (see --isolate)."""
  if spec["framework"] == "torch":
    return _one_row_here(None, None, spec)  # no TF in a PyTorch child
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import config as config_lib  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy(
      config_lib.RuntimeConfig(distribution="one_device"))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return _one_row_here(tf, strategy, spec)


def _row_in_subprocess(spec):
  """Runs _one_row in a fresh interpreter (``bench_common.run_row_process``)
  and returns its row. A failed child (out of memory, a crash) gives a row
  with "error" instead of numbers, never a silent gap."""
  cmd = [sys.executable, os.path.abspath(__file__),
         "--row=" + json.dumps(spec), f"--steps={FLAGS.steps}",
         f"--warmup={FLAGS.warmup}", f"--batch={FLAGS.batch}"]
  result = bench_common.run_row_process(cmd, _ROW_PREFIX)
  if result["row"] is not None:
    return result["row"]
  return dict(spec, error=f"exit {result['returncode']}: "
              f"{bench_common.error_tail(result)}")


def _specs():
  """The measurements asked for, PyTorch's before TF's for each setting."""
  specs = []
  for name in FLAGS.configs:
    if name not in CONFIGS:
      raise app.UsageError(f"--configs: unknown {name!r}; choose from "
                           f"{', '.join(CONFIGS)}")
    for dtype in FLAGS.dtypes:
      if dtype not in ("float32", "bfloat16", "float16"):
        raise app.UsageError(f"--dtypes: unknown {dtype!r}; choose from "
                             "float32, bfloat16, float16")
      if FLAGS.torch:
        specs.append(dict(config=name, framework="torch", dtype=dtype,
                          xla=False, channel_multiple=1))
      multiples = sorted({_channel_multiple(value, dtype)
                          for value in FLAGS.channel_multiples})
      for xla in FLAGS.xla:
        if xla not in ("true", "false"):
          raise app.UsageError(f"--xla: {xla!r} is neither true nor false")
        for multiple in multiples:
          specs.append(dict(config=name, framework="tf", dtype=dtype,
                            xla=xla == "true", channel_multiple=multiple))
  return specs


def _median(values):
  ordered = sorted(values)
  mid = len(ordered) // 2
  return (ordered[mid] if len(ordered) % 2 else
          (ordered[mid - 1] + ordered[mid]) / 2)


def _merge(spec, samples):
  """One table row from a spec's repeats: median rate, all rates kept."""
  good = [s for s in samples if "error" not in s]
  if not good:
    return dict(spec, error=samples[-1]["error"])
  row = dict(good[0])
  row["img_per_s"] = round(_median([s["img_per_s"] for s in good]), 2)
  row["img_per_s_runs"] = [s["img_per_s"] for s in good]
  row["img_per_s_best"] = max(row["img_per_s_runs"])
  row["first_step_s"] = round(_median([s["first_step_s"] for s in good]), 2)
  row["peak_mem_mb"] = max(s["peak_mem_mb"] for s in good)
  if len(good) < len(samples):
    row["failed_runs"] = [s["error"] for s in samples if "error" in s]
  return row


def main(argv):
  del argv
  if FLAGS.row:
    print(_ROW_PREFIX + json.dumps(_one_row(json.loads(FLAGS.row))),
          flush=True)
    return
  if FLAGS.repeats < 1:
    raise app.UsageError(f"--repeats must be >= 1, got {FLAGS.repeats}")
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import config as config_lib  # pylint: disable=g-import-not-at-top
  # --noisolate: the strategy comes before any other TF op (_specs lists
  # devices to resolve the channel multiples).
  strategy = None if FLAGS.isolate else distribute.create_strategy(
      config_lib.RuntimeConfig(distribution="one_device"))
  specs = _specs()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  device = ("GPU " + tf.config.experimental.get_device_details(
      tf.config.list_physical_devices("GPU")[0]).get("device_name", "")
            if tf.config.list_physical_devices("GPU") else
            f"CPU x{os.cpu_count()}")
  print(f"# train_bench on {device}; TF {tf.__version__}; steps "
        f"{FLAGS.steps}, warmup {FLAGS.warmup}, repeats {FLAGS.repeats}, "
        f"{'a process per run' if FLAGS.isolate else 'one process'}")
  samples = [[] for _ in specs]
  # Rounds over all specs (not all repeats of one spec, then the next), so
  # a slow patch of a shared machine lands on both frameworks alike.
  for _ in range(FLAGS.repeats):
    for spec, runs in zip(specs, samples):
      if FLAGS.isolate:
        run = _row_in_subprocess(spec)
      else:
        try:
          run = _one_row_here(tf, strategy, spec)
        except Exception as e:  # pylint: disable=broad-except
          # Reported as the child's failures are (a row, exit 1 at the end).
          run = dict(spec, error=f"{type(e).__name__}: {e}")
      runs.append(run)
      print(json.dumps(run), flush=True)
  rows = [_merge(spec, runs) for spec, runs in zip(specs, samples)]
  torch_rate = {}
  for row in rows:
    key = (row["config"], row["dtype"])
    if row["framework"] == "torch" and "error" not in row:
      torch_rate[key] = (row["img_per_s"], row["img_per_s_best"])
    elif "error" not in row and key in torch_rate:
      row["tf_over_torch"] = round(row["img_per_s"] / torch_rate[key][0], 2)
      row["tf_over_torch_best"] = round(
          row["img_per_s_best"] / torch_rate[key][1], 2)
  if FLAGS.pipeline:
    with tempfile.TemporaryDirectory() as tmp:
      cifar = FLAGS.cifar_data_dir or _write_records(
          tf, os.path.join(tmp, "cifar"), "cifar", 10000)
      imagenet = FLAGS.imagenet_data_dir or _write_records(
          tf, os.path.join(tmp, "imagenet"), "imagenet", 400)
      for kind, data_dir in (("cifar", cifar), ("imagenet", imagenet)):
        row = pipeline(tf, kind, data_dir)
        rows.append(row)
        print(json.dumps(row), flush=True)
  print("\n| config | framework | dtype | xla | channel multiple | batch | "
        "first step s | img/s (median) | runs | peak MB | TF/PyTorch "
        "(medians) | TF/PyTorch (bests) |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    if "config" not in r:
      continue
    if "error" in r:
      print(f"| {r['config']} | {r['framework']} | {r['dtype']} | {r['xla']} "
            f"| {r['channel_multiple']} | | | FAILED: {r['error']} | | | | |")
      continue
    runs = " ".join(map(str, r["img_per_s_runs"]))
    if "failed_runs" in r:
      runs += f" + {len(r['failed_runs'])} failed"
    print(f"| {r['config']} | {r['framework']} | {r['dtype']} | {r['xla']} "
          f"| {r['channel_multiple']} | {r['batch']} | {r['first_step_s']} "
          f"| {r['img_per_s']} | {runs} "
          f"| {r['peak_mem_mb']} | {r.get('tf_over_torch', '')} "
          f"| {r.get('tf_over_torch_best', '')} |")
  for r in rows:
    if "pipeline" in r:
      print(f"pipeline {r['pipeline']}: {r['img_per_s']} img/s on "
            f"{r['cores']} cores = {r['img_per_s_per_core']} img/s/core")
  failed = sum("error" in run for runs in samples for run in runs)
  if failed:
    print(f"# {failed} of {sum(map(len, samples))} runs failed (their JSON "
          "lines above give each error)")
    sys.exit(1)


if __name__ == "__main__":
  app.run(main)

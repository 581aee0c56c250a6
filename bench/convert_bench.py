"""Benchmarks data_prep: ImageNet-style conversion speed, and CIFAR read speed (raw vs PNG).

    python bench/convert_bench.py                      # everything, default sizes
    python bench/convert_bench.py --only=convert --num_images=5000 --workers=1,2
    python bench/convert_bench.py --only=cifar_read

convert: builds a synthetic ILSVRC2012_img_train.tar (a tar of per-synset tars) of JPEGs with
ImageNet-like sizes (about 500x375, ~110 KB), converts it with data_prep.imagenet and prints
images/s in total and per worker, for clean JPEGs (header-only: no decode, no re-encode) and
for inputs that all need repair (CMYK, grayscale, PNG named .JPEG: decoded and re-encoded).
Workers=1 runs in this process (TensorFlow imported beforehand, so the time is conversion
only); more workers run in a process pool whose wall time includes their start-up (each
imports TensorFlow). "images/CPU-s" divides by the CPU time of the processes doing the work
(for a pool including the workers' start-up), a per-core rate that stays meaningful on a
shared machine. Target: >= 1,000 clean images/s per core.

cifar_read: writes 20,000 CIFAR-like records once as raw bytes and once as PNG, then times the
trainer's read path (TFRecordDataset -> parse -> decode -> batch 256) on one thread and with
AUTOTUNE parallelism. This is the measurement behind data_prep.cifar storing raw pixels.

Never run by CI; prints a table.
"""

import contextlib
import io
import os
import resource
import shutil
import sys
import tempfile
import time

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app  # pylint: disable=wrong-import-position
from absl import flags  # pylint: disable=wrong-import-position
from absl import logging  # pylint: disable=wrong-import-position
from PIL import Image  # pylint: disable=wrong-import-position

from data_prep import imagenet  # pylint: disable=wrong-import-position
from data_prep import shards  # pylint: disable=wrong-import-position
from data_prep import tf_import  # pylint: disable=wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_enum("only", "all", ["all", "convert", "cifar_read"], "Which benchmark.")
flags.DEFINE_integer("num_images", 4000, "Clean JPEGs in the synthetic training tar.")
flags.DEFINE_integer("repair_images", 400, "Images needing repair in the second tar.")
flags.DEFINE_integer("distinct_images", 200,
                     "Distinct JPEGs generated (cycled to reach --num_images, to keep the "
                     "set-up short; the converter does not deduplicate).")
flags.DEFINE_string("workers", "1,2", "Comma-separated worker counts to time.")
flags.DEFINE_integer("shards", 16, "Train shards.")
flags.DEFINE_string("work_dir", "", "Scratch folder (default: a temporary one, removed).")
flags.DEFINE_integer("cifar_records", 20000, "Records for the CIFAR read benchmark.")


def _photo(rng, height, width) -> np.ndarray:
  """Smooth colour fields plus mild noise: JPEG sizes like real photos."""
  small = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3)).astype(np.uint8)
  base = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))
  noise = rng.normal(0, 20, size=(height, width, 3))
  return np.clip(base + noise, 0, 255).astype(np.uint8)


def _encode(array, mode=None, fmt="JPEG", **kw) -> bytes:
  image = Image.fromarray(array)
  if mode:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, format=fmt, **kw)
  return out.getvalue()


def _tar_of_tars(path, per_synset):
  import tarfile  # pylint: disable=g-import-not-at-top

  def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
  with tarfile.open(path, "w") as outer:
    for synset, files in per_synset.items():
      buf = io.BytesIO()
      with tarfile.open(fileobj=buf, mode="w") as inner:
        for name, data in files:
          add(inner, name, data)
      add(outer, f"{synset}.tar", buf.getvalue())


def build_inputs(work: str):
  rng = np.random.default_rng(0)
  sizes = [(375, 500), (500, 375), (333, 500), (500, 500), (281, 500), (400, 300)]
  t0 = time.time()
  clean = []
  for i in range(FLAGS.distinct_images):
    h, w = sizes[i % len(sizes)]
    clean.append(_encode(_photo(rng, h, w), quality=90))
  repair = []
  kinds = ["CMYK", "L", "PNG"]
  for i in range(min(FLAGS.distinct_images, FLAGS.repair_images)):
    h, w = sizes[i % len(sizes)]
    kind = kinds[i % 3]
    array = _photo(rng, h, w)
    repair.append(_encode(array, fmt="PNG") if kind == "PNG"
                  else _encode(array, mode=kind, quality=90))

  def layout(blobs, count):
    per_synset = {}
    for i in range(count):
      synset = f"n{1440764 + i % 50:08d}"
      per_synset.setdefault(synset, []).append((f"{synset}_{i}.JPEG", blobs[i % len(blobs)]))
    return per_synset
  clean_tar = os.path.join(work, "clean_train.tar")
  repair_tar = os.path.join(work, "repair_train.tar")
  _tar_of_tars(clean_tar, layout(clean, FLAGS.num_images))
  _tar_of_tars(repair_tar, layout(repair, FLAGS.repair_images))
  mean_kb = np.mean([len(b) for b in clean]) / 1024
  print(f"set-up: {FLAGS.num_images} clean JPEGs (mean {mean_kb:.0f} KB, "
        f"{os.path.getsize(clean_tar) / 2**20:.0f} MiB tar), {FLAGS.repair_images} to repair; "
        f"generated in {time.time() - t0:.1f} s")
  return clean_tar, repair_tar


def _children_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def time_convert(tar, workers, out, shard_count):
  """(images, index s, write s wall, write CPU s of the processes doing the work)."""
  shutil.rmtree(out, ignore_errors=True)
  t0 = time.perf_counter()
  info, splits = imagenet.plan(train=tar)
  t1 = time.perf_counter()
  count = min(shard_count, len(splits["train"]))
  cpu0, children0 = time.process_time(), _children_cpu()
  with contextlib.redirect_stdout(io.StringIO()):  # the converter's summary
    summary = shards.convert(info, splits, {"train": (count, "--train_shards")}, out,
                             workers=workers, max_rejected=0)
  t2 = time.perf_counter()
  cpu = time.process_time() - cpu0 if workers == 1 else _children_cpu() - children0
  assert summary.exit_code == 0, summary
  return len(splits["train"]), t1 - t0, t2 - t1, cpu


def worker_startup():
  """(wall s, CPU s) of a fresh process that imports TensorFlow as a worker does."""
  import subprocess  # pylint: disable=g-import-not-at-top
  before = _children_cpu()
  t0 = time.perf_counter()
  subprocess.run([sys.executable, "-c", "from data_prep import tf_import; tf_import.tensorflow()"],
                 check=True, capture_output=True, cwd=_REPO,
                 env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=_REPO))
  return time.perf_counter() - t0, _children_cpu() - before


def bench_convert(work):
  clean_tar, repair_tar = build_inputs(work)
  tf_import.tensorflow()  # import TF outside the timings
  startup_wall, startup_cpu = worker_startup()
  print(f"one worker's start-up (python + import tensorflow): {startup_wall:.1f} s wall, "
        f"{startup_cpu:.1f} s CPU")
  print(f"load average before the runs: {os.getloadavg()[0]:.1f} "
        f"on {len(os.sched_getaffinity(0))} cores")
  print()
  print(f"{'input':<7} {'workers':>7} {'images':>6} {'index s':>7} {'write s':>7} "
        f"{'images/s':>8} {'/worker':>7} {'CPU s':>6} {'images/CPU-s':>12}  note")
  for name, tar in (("clean", clean_tar), ("repair", repair_tar)):
    for workers in [int(w) for w in FLAGS.workers.split(",")]:
      n, index_s, write_s, cpu = time_convert(tar, workers, os.path.join(work, "out"),
                                              FLAGS.shards)
      note = ("in this process" if workers == 1 else
              f"process pool; wall and CPU include {workers} worker start-ups")
      rate = n / write_s
      print(f"{name:<7} {workers:>7} {n:>6} {index_s:>7.2f} {write_s:>7.2f} {rate:>8.0f} "
            f"{rate / workers:>7.0f} {cpu:>6.2f} {n / cpu:>12.0f}  {note}")


def bench_cifar_read(work):
  tf = tf_import.tensorflow()
  rng = np.random.default_rng(0)
  n = FLAGS.cifar_records
  # CIFAR-like content: 4x4 colour blocks upsampled plus noise (PNG sizes like real CIFAR).
  base = np.repeat(np.repeat(rng.integers(0, 256, (n, 4, 4, 3)), 8, 1), 8, 2)
  pixels = np.clip(base + rng.integers(-20, 21, (n, 32, 32, 3)), 0, 255).astype(np.uint8)

  def record(encoded, fmt):
    feature = {
        "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
        "image/format": tf.train.Feature(bytes_list=tf.train.BytesList(value=[fmt])),
        "image/height": tf.train.Feature(int64_list=tf.train.Int64List(value=[32])),
        "image/width": tf.train.Feature(int64_list=tf.train.Int64List(value=[32])),
        "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1])),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
  paths = {}
  for fmt in ("raw", "png"):
    paths[fmt] = os.path.join(work, f"cifar_{fmt}.tfrecord")
    with tf.io.TFRecordWriter(paths[fmt]) as writer:
      for image in pixels:
        if fmt == "raw":
          writer.write(record(image.tobytes(), b"RAW"))
        else:
          writer.write(record(_encode(image, fmt="PNG"), b"PNG"))
  spec = {"image/encoded": tf.io.FixedLenFeature([], tf.string),
          "image/height": tf.io.FixedLenFeature([], tf.int64),
          "image/width": tf.io.FixedLenFeature([], tf.int64),
          "image/class/label": tf.io.FixedLenFeature([], tf.int64)}

  def raw(serialized):
    f = tf.io.parse_single_example(serialized, spec)
    image = tf.reshape(tf.io.decode_raw(f["image/encoded"], tf.uint8),
                       tf.stack([f["image/height"], f["image/width"], 3]))
    return image, f["image/class/label"]

  def png(serialized):
    f = tf.io.parse_single_example(serialized, spec)
    return tf.io.decode_png(f["image/encoded"], channels=3), f["image/class/label"]

  print()
  print(f"CIFAR read path, {n} records (TFRecordDataset -> parse -> decode -> batch 256); "
        "best of 3 passes")
  print(f"{'storage':<8} {'bytes/record':>12} {'1 thread img/s':>15} {'AUTOTUNE img/s':>15}")
  for fmt, fn in (("raw", raw), ("png", png)):
    rates = []
    for parallel in (1, tf.data.AUTOTUNE):
      best = 0.0
      for _ in range(3):
        ds = tf.data.TFRecordDataset(paths[fmt]).map(fn, num_parallel_calls=parallel)
        ds = ds.batch(256)
        if parallel == 1:
          options = tf.data.Options()
          options.threading.private_threadpool_size = 1
          ds = ds.with_options(options)
        t0 = time.perf_counter()
        count = sum(int(images.shape[0]) for images, _ in ds)
        best = max(best, count / (time.perf_counter() - t0))
      rates.append(best)
    size = os.path.getsize(paths[fmt]) / n
    print(f"{fmt:<8} {size:>12.0f} {rates[0]:>15.0f} {rates[1]:>15.0f}")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="convert_bench_")
  os.makedirs(work, exist_ok=True)
  try:
    print(f"cores available: {len(os.sched_getaffinity(0))}")
    if FLAGS.only in ("all", "convert"):
      bench_convert(work)
    if FLAGS.only in ("all", "cifar_read"):
      bench_cifar_read(work)
  finally:
    if not FLAGS.work_dir:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)

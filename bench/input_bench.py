"""ImageNet input-pipeline throughput per CPU core, train and eval, A/B.

    python bench/input_bench.py                               # this tree only
    mkdir -p /tmp/before && git archive be6b296 pyramidnet_tf | tar -x -C /tmp/before
    python bench/input_bench.py --before_root=/tmp/before --rounds=5

Writes synthetic ImageNet-like JPEG shards once (photo-like content, about
400x350 pixels, quality 90; sizes vary around that like ImageNet's), then
times the trainer's own pipelines on them: ``pipeline.train_dataset`` (shuffle,
parse, crop-decode, resize, flip, colour jitter, PCA lighting, normalise,
batch 64) and ``pipeline.eval_dataset`` (decode, short side 256, centre 224,
normalise). Each timing runs in a fresh process pinned to one core
(``taskset -c --cpu``) with tf.data on a private pool of one thread, so the
number is one core's throughput. With ``--before_root`` (a directory holding
another version of the ``pyramidnet_tf`` package) every round times that code
and this tree's alternately, so both see the same machine load; the table
gives the median of the rounds per code and pipeline.
"""

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.DEFINE_integer("rounds", 3, "Timed rounds per code and pipeline.")
flags.DEFINE_float("seconds", 8.0, "Timed seconds per row.")
flags.DEFINE_integer("records", 384, "Synthetic JPEG records per split.")
flags.DEFINE_integer("batch", 64, "Per-replica batch.")
flags.DEFINE_string("before_root", "", "Directory holding the pyramidnet_tf "
                    "package to compare against (e.g. an older commit's, "
                    "from git archive); empty = time this tree only.")
flags.DEFINE_list("pipelines", ["train", "eval"], "Pipelines to time: train, "
                  "eval.")
flags.DEFINE_string("cpu", "0", "taskset CPU list each timing is pinned to; "
                    "empty = no pinning.")
flags.DEFINE_integer("threads", 1, "tf.data private thread pool size.")
flags.DEFINE_string("data_dir", "", "Use these shards instead of writing "
                    "synthetic ones (manifest.json with train and "
                    "validation splits).")
# Internal: one timing in this process.
flags.DEFINE_string("child_root", "", "(internal) code root of a child run.")
flags.DEFINE_string("child_pipeline", "", "(internal) pipeline of a child.")
FLAGS = flags.FLAGS

PIPELINES = ("train", "eval")


def write_jpeg_shards(directory: str, count: int, shards: int = 2) -> dict:
  """Synthetic ImageNet-like JPEG shards and their manifest.

  Args:
    directory: where to write (created).
    count: records per split (train and validation).
    shards: shard files per split.

  Returns:
    {"mean_bytes": mean JPEG size, "mean_hw": mean (height, width)}.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  os.makedirs(directory, exist_ok=True)
  sizes, shapes, splits = [], [], {}
  for split in ("train", "validation"):
    entries = []
    per_shard = -(-count // shards)
    for s in range(shards):
      name = f"{split}-{s:05d}-of-{shards:05d}.tfrecord"
      n = min(per_shard, count - s * per_shard)
      with tf.io.TFRecordWriter(os.path.join(directory, name)) as writer:
        for i in range(n):
          h = int(rng.integers(300, 400))
          w = int(rng.integers(350, 500))
          # Smooth shapes plus fine texture: file sizes like photos'.
          base = rng.integers(0, 255, (h // 16 + 1, w // 16 + 1, 3), np.uint8)
          image = np.asarray(Image.fromarray(base).resize((w, h),
                                                          Image.BICUBIC))
          noise = rng.normal(0, 12, image.shape)
          image = np.clip(image + noise, 0, 255).astype(np.uint8)
          buffer = io.BytesIO()
          Image.fromarray(image).save(buffer, format="JPEG", quality=90)
          encoded = buffer.getvalue()
          sizes.append(len(encoded))
          shapes.append((h, w))
          feature = {
              "image/encoded": tf.train.Feature(
                  bytes_list=tf.train.BytesList(value=[encoded])),
              "image/format": tf.train.Feature(
                  bytes_list=tf.train.BytesList(value=[b"JPEG"])),
              "image/height": tf.train.Feature(
                  int64_list=tf.train.Int64List(value=[h])),
              "image/width": tf.train.Feature(
                  int64_list=tf.train.Int64List(value=[w])),
              "image/class/label": tf.train.Feature(
                  int64_list=tf.train.Int64List(value=[i % 10])),
          }
          writer.write(tf.train.Example(features=tf.train.Features(
              feature=feature)).SerializeToString())
      entries.append({"file": name, "num_examples": n})
    splits[split] = {"num_examples": count, "shards": entries}
  manifest = {"dataset": "imagenet2012", "converter": "data_prep.imagenet",
              "label_base": 0, "class_names": [str(i) for i in range(10)],
              "splits": splits}
  with open(os.path.join(directory, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  mean_hw = np.mean(np.array(shapes), axis=0)
  return {"mean_bytes": int(np.mean(sizes)),
          "mean_hw": (int(mean_hw[0]), int(mean_hw[1]))}


def _child(root: str, pipeline_name: str, data_dir: str) -> dict:
  """Times one pipeline of the package under ``root`` in this process."""
  sys.path.insert(0, root)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top
  assert os.path.dirname(os.path.dirname(os.path.dirname(
      input_pipeline.__file__))) == os.path.abspath(root), (
          input_pipeline.__file__, root)
  tf.random.set_seed(1)
  info = manifest_lib.read_manifest(data_dir)
  pre = preprocessing_lib.Preprocessing("imagenet", 224)
  batch = FLAGS.batch
  options = tf.data.Options()
  options.threading.private_threadpool_size = FLAGS.threads

  def pull(ds, limit=None):
    n = 0
    for images, _ in ds:
      images.numpy()
      n += batch
      if limit is not None and n >= limit:
        break
    return n

  if pipeline_name == "train":
    ds = input_pipeline.train_dataset(info, pre, batch, seed=1)
    it = iter(ds.with_options(options))
    for _ in range(3):  # tracing, autotune warm-up
      next(it)
    images, start = 0, time.time()
    while time.time() - start < FLAGS.seconds:
      next(it)[0].numpy()
      images += batch
    elapsed = time.time() - start
  else:
    steps = info.num_examples("validation") // batch

    def one_pass():
      ds = input_pipeline.eval_dataset(info, pre, batch, steps, "validation")
      return pull(ds.with_options(options))
    one_pass()  # warm-up: tracing, file cache
    images, start = 0, time.time()
    while time.time() - start < FLAGS.seconds:
      images += one_pass()
    elapsed = time.time() - start
  return {"img_per_s": images / elapsed}


def _time(root: str, pipeline_name: str, data_dir: str) -> float:
  cmd = [sys.executable, os.path.abspath(__file__), f"--child_root={root}",
         f"--child_pipeline={pipeline_name}", f"--data_dir={data_dir}",
         f"--seconds={FLAGS.seconds}", f"--batch={FLAGS.batch}",
         f"--threads={FLAGS.threads}"]
  if FLAGS.cpu:
    cmd = ["taskset", "-c", FLAGS.cpu] + cmd
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
  env["PYTHONPATH"] = root
  result = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          check=False)
  lines = [l for l in result.stdout.splitlines() if l.startswith("{")]
  if result.returncode or not lines:
    raise SystemExit(f"input_bench: timing {pipeline_name} of {root} failed "
                     f"(exit {result.returncode}):\n{result.stderr[-3000:]}")
  return json.loads(lines[-1])["img_per_s"]


def main(argv):
  del argv
  if FLAGS.child_root:
    print(json.dumps(_child(FLAGS.child_root, FLAGS.child_pipeline,
                            FLAGS.data_dir)), flush=True)
    return
  bad = [p for p in FLAGS.pipelines if p not in PIPELINES]
  if bad:
    raise SystemExit(f"--pipelines: unknown {', '.join(bad)}; choose from "
                     f"{', '.join(PIPELINES)}")
  if FLAGS.cpu and not shutil.which("taskset"):
    raise SystemExit("--cpu needs taskset (util-linux); pass --cpu= to run "
                     "unpinned")
  codes = [("after", ROOT)]
  if FLAGS.before_root:
    before = os.path.abspath(FLAGS.before_root)
    if not os.path.isfile(os.path.join(before, "pyramidnet_tf", "data",
                                       "pipeline.py")):
      raise SystemExit(f"--before_root={FLAGS.before_root}: no "
                       "pyramidnet_tf/data/pipeline.py there (extract one "
                       "with git archive COMMIT pyramidnet_tf | tar -x -C "
                       "DIR)")
    codes.insert(0, ("before", before))
  tmp = tempfile.mkdtemp(prefix="input_bench_")
  try:
    data_dir = FLAGS.data_dir
    if not data_dir:
      data_dir = os.path.join(tmp, "jpeg")
      stats = write_jpeg_shards(data_dir, FLAGS.records)
      print(f"# {FLAGS.records} JPEG records per split, mean "
            f"{stats['mean_hw'][0]}x{stats['mean_hw'][1]} px, mean "
            f"{stats['mean_bytes'] / 1000:.0f} KB (quality 90)")
    print(f"# {FLAGS.rounds} rounds x {FLAGS.seconds:g} s, batch "
          f"{FLAGS.batch}, taskset -c {FLAGS.cpu or '(none)'}, tf.data "
          f"private pool {FLAGS.threads} thread(s)", flush=True)
    samples = {}
    for r in range(FLAGS.rounds):
      for pipeline_name in FLAGS.pipelines:
        for code, root in codes:
          rate = _time(root, pipeline_name, data_dir)
          samples.setdefault((pipeline_name, code), []).append(rate)
          print(json.dumps({"round": r, "pipeline": pipeline_name,
                            "code": code, "img_per_s": round(rate, 1)}),
                flush=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  cores = len(FLAGS.cpu.split(",")) if FLAGS.cpu and "-" not in FLAGS.cpu \
      else None
  print("\n| pipeline | code | median img/s | img/s per core | rounds |\n"
        "|---|---|---|---|---|")
  for pipeline_name in FLAGS.pipelines:
    for code, _ in codes:
      values = samples[(pipeline_name, code)]
      median = statistics.median(values)
      per_core = f"{median / cores:.1f}" if cores else "-"
      print(f"| {pipeline_name} | {code} | {median:.1f} | {per_core} | "
            f"{', '.join(f'{v:.0f}' for v in values)} |")
    if len(codes) == 2:
      ratio = (statistics.median(samples[(pipeline_name, "after")]) /
               statistics.median(samples[(pipeline_name, "before")]))
      print(f"| {pipeline_name} | after / before | {ratio:.2f}x | | |")


if __name__ == "__main__":
  app.run(main)

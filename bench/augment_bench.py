"""Input-pipeline throughput with and without AutoAugment / RandAugment.

    python bench/augment_bench.py                      # CIFAR, 10 s per row
    python bench/augment_bench.py --seconds=5 --randaugment=2,9 --imagenet

Writes a CIFAR-like record set (32x32 RAW, data_prep's contract, via
tests/train_fixtures.py) unless --cifar_data_dir is given, then times the
trainer's own training pipeline (input_pipeline.train_dataset: shuffle,
decode, pad-crop-flip, policy, normalise, batch 128, records cached) for
plain augmentation, --autoaugment=cifar10 and --randaugment=N,M. Prints
images/s per core: by default tf.data runs on a private pool of --threads=1
thread, which measures one core's work and is less disturbed by other load
on the machine; --threads=0 uses every core and divides by os.cpu_count().
--imagenet adds the same rows (with --autoaugment=imagenet) for the
ImageNet-style pipeline on JPEGs (320x320 -> 224x224, batch 64).
"""

import json
import os
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

flags.DEFINE_integer("seconds", 10, "Timed seconds per configuration.")
flags.DEFINE_integer("records", 5000, "Generated CIFAR records.")
flags.DEFINE_list("randaugment", ["2", "9"], "N,M of the RandAugment row.")
flags.DEFINE_string("cifar_data_dir", "", "Real CIFAR records (optional).")
flags.DEFINE_bool("imagenet", False, "Also time ImageNet-style rows.")
flags.DEFINE_integer("threads", 1, "tf.data private thread pool size; 0 = "
                     "TF's default (every core).")
FLAGS = flags.FLAGS


def _rate(tf, info, pre, batch):
  from pyramidnet_tf.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  ds = input_pipeline.train_dataset(info, pre, batch, seed=1,
                                    cache=pre.kind == "cifar")
  if FLAGS.threads:
    options = tf.data.Options()
    options.threading.private_threadpool_size = FLAGS.threads
    ds = ds.with_options(options)
  it = iter(ds)
  for _ in range(5):  # tracing, cache fill, autotune warm-up
    next(it)
  images, start = 0, time.time()
  while time.time() - start < FLAGS.seconds:
    tf.nest.map_structure(lambda t: t.numpy(), next(it))
    images += batch
  return images / (time.time() - start)


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import autoaugment  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top
  from tests import train_fixtures  # pylint: disable=g-import-not-at-top
  randaugment = autoaugment.parse_randaugment(FLAGS.randaugment)
  policies = [("plain", {}), ("autoaugment=cifar10",
                              {"autoaugment": "cifar10"}),
              (f"randaugment={randaugment[0]},{randaugment[1]}",
               {"randaugment": randaugment})]
  cores = FLAGS.threads or os.cpu_count()
  print(f"# augment_bench: TF {tf.__version__}, {cores} of "
        f"{os.cpu_count()} cores, {FLAGS.seconds} s per row")
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    sets = [("cifar", FLAGS.cifar_data_dir or train_fixtures.write_dataset(
        os.path.join(tmp, "cifar"), "cifar10", num_classes=10,
        train_per_class=FLAGS.records // 10, eval_per_class=1, size=32,
        shards=4))]
    if FLAGS.imagenet:
      sets.append(("imagenet", train_fixtures.write_dataset(
          os.path.join(tmp, "imagenet"), "imagenet", num_classes=10,
          train_per_class=40, eval_per_class=1, size=320, encoding="jpeg",
          shards=2)))
    for kind, data_dir in sets:
      info = manifest_lib.read_manifest(data_dir)
      for name, policy in policies:
        if kind == "cifar":
          pre = preprocessing_lib.Preprocessing("cifar", 32, "cifar10", "pt",
                                             **policy)
          batch = 128
        else:
          if policy.get("autoaugment"):
            name, policy = "autoaugment=imagenet", {"autoaugment": "imagenet"}
          pre = preprocessing_lib.Preprocessing("imagenet", 224, **policy)
          batch = 64
        rate = _rate(tf, info, pre, batch)
        row = {"pipeline": kind, "policy": name, "batch": batch,
               "img_per_s": round(rate, 1), "cores": cores,
               "img_per_s_per_core": round(rate / cores, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
  print("\n| pipeline | policy | img/s | img/s/core |\n|---|---|---|---|")
  for r in rows:
    print(f"| {r['pipeline']} | {r['policy']} | {r['img_per_s']} | "
          f"{r['img_per_s_per_core']} |")


if __name__ == "__main__":
  app.run(main)

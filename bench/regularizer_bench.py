"""Train-step cost of each regulariser and of the EMA against plain training.

    python bench/regularizer_bench.py                     # c110, batch 64
    python bench/regularizer_bench.py --batch=128 --steps=10 --xla

Times the trainer's own ``step.TrainStep`` (forward, backward, Nesterov SGD)
on synthetic CIFAR data for PyramidNet-110 a=48 (or --depth/--alpha), once
per option: plain, ShakeDrop at each level, CutMix (prob 1, so every step
pays for it), Mixup, Cutout 16, weight EMA, clipping by global norm, and
everything at once. Each row runs in a fresh model and step so that one
option's graph never leaks into the next; "plain" runs first and last, and
the cost column compares with their mean, so drift of a shared machine
shows up as the difference between the two plain rows. The input-pipeline
side (AutoAugment / RandAugment) is bench/augment_bench.py.
"""

import json
import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench.bench_common import SCHEDULE_ARGS  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("batch", 64, "Global batch size.")
flags.DEFINE_integer("steps", 6, "Timed steps per option (one host call).")
flags.DEFINE_integer("warmup", 2, "Untimed steps after the first.")
flags.DEFINE_integer("depth", 110, "CIFAR PyramidNet depth.")
flags.DEFINE_float("alpha", 48, "Widening factor.")
flags.DEFINE_bool("bottleneck", None, "Unit type; unset: the paper's choice.")
flags.DEFINE_bool("xla", False, "XLA-compile the forward/backward.")
flags.DEFINE_string("dtype", "float32", "Compute dtype.")
FLAGS = flags.FLAGS

# name -> (model keyword arguments, Regularization arguments, EMA decay)
OPTIONS = {
    "plain": ({}, {}, 0.0),
    "shakedrop batch": ({"shakedrop": True, "shakedrop_level": "batch"},
                        {}, 0.0),
    "shakedrop sample": ({"shakedrop": True, "shakedrop_level": "sample"},
                         {}, 0.0),
    "shakedrop pixel": ({"shakedrop": True, "shakedrop_level": "pixel"},
                        {}, 0.0),
    "cutmix (prob 1)": ({}, {"cutmix_prob": 1.0, "cutmix_beta": 1.0}, 0.0),
    "mixup 1.0": ({}, {"mixup_alpha": 1.0}, 0.0),
    "cutout 16": ({}, {"cutout_size": 16}, 0.0),
    "ema 0.9999": ({}, {}, 0.9999),
    "clip 5": ({}, {"clip_grad_norm": 5.0}, 0.0),
    "all": ({"shakedrop": True, "shakedrop_level": "sample"},
            {"cutmix_prob": 0.5, "cutmix_beta": 1.0, "mixup_alpha": 0.2,
             "cutout_size": 16, "clip_grad_norm": 5.0}, 0.9999),
}


def measure(tf, name):
  from pyramidnet_tf.model_dir import ema as ema_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model import network as model_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import optim
  from pyramidnet_tf.training import schedules  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import step as step_lib
  model_kwargs, reg_kwargs, ema_decay = OPTIONS[name.replace(" (again)", "")]
  strategy = tf.distribute.OneDeviceStrategy(
      "/gpu:0" if tf.config.list_physical_devices("GPU") else "/cpu:0")
  with strategy.scope():
    model = model_lib.PyramidNet("cifar10", FLAGS.depth, FLAGS.alpha,
                                 FLAGS.bottleneck, **model_kwargs)
    global_step = tf.Variable(0, dtype=tf.int64)
    opt = optim.NesterovSGD(model.trainable_variables, 0.9, True, 1e-4)
    averages = (ema_lib.Ema(ema_lib.averaged_variables(model), ema_decay)
                if ema_decay else None)
  schedule = schedules.Schedule(*SCHEDULE_ARGS)
  train_step = step_lib.TrainStep(
      strategy=strategy, model=model, optimizer=opt, schedule=schedule,
      global_step=global_step, global_batch=FLAGS.batch, dtype=FLAGS.dtype,
      jit_compile=FLAGS.xla,
      regularization=step_lib.Regularization(**reg_kwargs), ema=averages)
  iterator = bench_common.synthetic_iterator(tf, strategy, 32,
                                             model.num_classes, FLAGS.batch)
  timing = bench_common.time_train_loop(tf, train_step, iterator,
                                        FLAGS.batch, FLAGS.steps,
                                        FLAGS.warmup)
  return {"option": name, "first_step_s": round(timing["first_step_s"], 1),
          "img_per_s": timing["img_per_s"]}


def main(argv):
  del argv
  import pyramidnet_tf  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names = list(OPTIONS) + ["plain (again)"]
  rows = []
  for name in names:
    rows.append(measure(tf, name))
    print(json.dumps(rows[-1]), flush=True)
  plain = [r["img_per_s"] for r in rows if r["option"].startswith("plain")]
  base = sum(plain) / len(plain)
  device = "GPU" if tf.config.list_physical_devices("GPU") else (
      f"CPU ({os.cpu_count()} cores)")
  print(f"\nPyramidNet-{FLAGS.depth} a={FLAGS.alpha:g}, batch {FLAGS.batch}, "
        f"{FLAGS.dtype}{', XLA' if FLAGS.xla else ''}, {device}; plain = "
        f"mean of the two plain rows ({base:.1f} img/s)")
  print(f"{'option':<18} {'img/s':>8} {'vs plain':>9} {'first step s':>13}")
  for row in rows:
    cost = 100.0 * (row["img_per_s"] / base - 1.0)
    print(f"{row['option']:<18} {row['img_per_s']:>8.1f} {cost:>+8.1f}% "
          f"{row['first_step_s']:>13.1f}")


if __name__ == "__main__":
  app.run(main)

"""Evaluates a model directory on a prepared data split; prints JSON.

    python -m pyramidnet_tf.evaluate --model_dir=DIR --data_dir=DATA

Works on trainer output and on directories written by import_torch. Every
example of the split is counted exactly once (the last batch is padded and
the padding masked), on one device or under any strategy. The records are
counted from the shard files, so a manifest that disagrees is only warned
about; a damaged shard ends the run with one line naming it.

The default checkpoint is the newest intact one: a damaged newer one
(truncated, corrupted, NaN/Inf) is skipped with a warning naming it.
Scores that would silently be wrong are refused: CIFAR-style data whose
image size differs from the one the model expects when the model records
none (an import without export_torch's record; pass --image_size), and
data whose class names are the model's in another order. A model that
records its size and differs from the data's gets a warning.
"""

import dataclasses
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import paths as paths_lib
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import usage
from pyramidnet_tf.cli import common_flags  # pylint: disable=unused-import # noqa: F401

flags.DEFINE_string("split", None, "Split to evaluate; default: validation "
                    "or test, whichever the manifest has.")
flags.DEFINE_string("checkpoint", None, "Checkpoint path, or best (the "
                    "best evaluation's, kept in --model_dir/best); default: "
                    "the newest intact one in --model_dir.")
flags.DEFINE_enum("use_ema", "auto", ["auto", "yes", "no"],
                  "Evaluate the EMA of the weights instead of the raw ones. "
                  "auto: when the training run kept one (--ema_decay > 0, "
                  "recorded in model_config.json).")

FLAGS = flags.FLAGS


def evaluate() -> dict:
  """Evaluates --model_dir on --data_dir's split; returns the JSON record."""
  if not FLAGS.model_dir:
    raise cli.FlagError("--model_dir is required (written by "
                        "pyramidnet_tf.train or pyramidnet_tf.import_torch)")
  if not FLAGS.data_dir:
    raise cli.FlagError("--data_dir is required: a directory written by "
                        "data_prep (manifest.json + TFRecords)")
  # Before TensorFlow starts (seconds): what is wrong on disk.
  problems = [p for p in (
      paths_lib.model_dir_problem(FLAGS.model_dir,
                                  checkpoint=FLAGS.checkpoint),
      paths_lib.data_dir_problem(FLAGS.data_dir)) if p]
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  from pyramidnet_tf.runtime import cluster_env  # pylint: disable=g-import-not-at-top
  if FLAGS.cluster_resolver != "k8s_indexed":
    cluster_env.tf_config()  # a bad TF_CONFIG: one line, before TensorFlow
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy(FLAGS.distribution, FLAGS.cpu_devices,
                                        FLAGS.collective_timeout,
                                        FLAGS.cluster_resolver,
                                        FLAGS.slurm_port_base,
                                        k8s_num_workers=FLAGS.k8s_num_workers,
                                        k8s_port=FLAGS.k8s_port,
                                        k8s_service=FLAGS.k8s_service,
                                        k8s_job_name=FLAGS.k8s_job_name)
  from pyramidnet_tf.model import channel_alignment  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import records as records_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store as model_io  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top

  info = manifest_lib.read_manifest(FLAGS.data_dir)
  split = FLAGS.split or info.eval_split
  # Counted from the shards: the padding to equal steps on every replica
  # follows from the counts, and a wrong manifest would drop records.
  info, mismatches = records_lib.recount(info, [split])
  if split in mismatches:
    logging.warning("%s; evaluating all %d of them", mismatches[split],
                    info.num_examples(split))
  with strategy.scope():
    opened = model_io.open_model(FLAGS.model_dir, FLAGS.checkpoint,
                                 warn=logging.warning, use_ema=FLAGS.use_ema)
    model, metadata = opened.model, opened.metadata
    checkpoint, use_ema = opened.checkpoint, opened.ema
    model.set_channel_multiple(channel_alignment.resolve(
        FLAGS.channel_multiple, FLAGS.dtype,
        channel_alignment.local_device_type()))
  if model.num_classes != info.num_classes:
    raise ValueError(f"the model in {FLAGS.model_dir} has {model.num_classes}"
                     f" classes but {FLAGS.data_dir}/manifest.json lists "
                     f"{info.num_classes}")
  order = model_dir_lib.class_order_problem(metadata.get("class_names"),
                                            info.class_names)
  if order is not None and order[0]:
    raise ValueError(f"--model_dir={FLAGS.model_dir}, --data_dir="
                     f"{FLAGS.data_dir}: {order[1]}")
  if order is not None:
    logging.warning("%s; the scores are only meaningful if the classes are "
                    "the same", order[1])
  model_config = opened.config["model"]
  cli.check_image_size("image_size", FLAGS.image_size,
                       model_config.get("dataset", "cifar10"),
                       "the model's size")
  preprocessing = model_dir_lib.preprocessing_of(
      metadata, model_config, FLAGS.image_size, FLAGS.cifar_convention,
      info)
  if FLAGS.image_size:
    preprocessing = dataclasses.replace(preprocessing,
                                        image_size=FLAGS.image_size)
  else:
    size = model_dir_lib.image_size_problem(
        preprocessing, "preprocessing" in metadata,
        records_lib.first_image_size(info, split), FLAGS.model_dir,
        FLAGS.data_dir)
    if size is not None and size[0]:
      raise ValueError(size[1])
    if size is not None:
      logging.warning("%s", size[1])
  evaluator = evaluator_lib.Evaluator(
      strategy=strategy, model=model, info=info, preprocessing=preprocessing,
      split=split, dtype=FLAGS.dtype,
      global_batch=evaluator_lib.batch_for_replicas(
          FLAGS.eval_batch_size, strategy.num_replicas_in_sync))
  logging.info("evaluating %s (%s%s) on %s: %d images, global batch %d, "
               "%d replica(s)", FLAGS.model_dir, os.path.basename(checkpoint),
               ", EMA weights" if use_ema else "", split,
               info.num_examples(split), evaluator.global_batch,
               strategy.num_replicas_in_sync)
  from pyramidnet_tf.training import progress as progress_lib  # pylint: disable=g-import-not-at-top
  begin = time.monotonic()
  metrics = evaluator.run(progress_lib.EvalProgress(
      split, info.num_examples(split),
      enabled=distribute.is_chief(strategy)))
  seconds = time.monotonic() - begin
  logging.info("evaluated %d images in %.1f s (%.1f img/s, tracing included): "
               "top-1 error %.2f%%, top-5 error %.2f%%, loss %.4g",
               metrics["examples"], seconds,
               metrics["examples"] / max(seconds, 1e-9),
               metrics["top1_error"], metrics["top5_error"], metrics["loss"])
  return {"model_dir": FLAGS.model_dir, "data_dir": FLAGS.data_dir,
          "split": split, "checkpoint": checkpoint, "ema": use_ema,
          **metrics}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  try:
    result = evaluate()
  except cli.FlagError:
    raise   # exit status 2 (errors.guard)
  except (ValueError, FileNotFoundError, cli.UserError) as e:
    sys.exit(f"pyramidnet_tf.evaluate: error: {e}")
  print(json.dumps(result, indent=2))


def run():
  console.run("pyramidnet_tf.evaluate", main, doc=__doc__,
              groups=usage.EVALUATE_GROUPS, knobs=usage.EVALUATE_KNOBS)


if __name__ == "__main__":
  run()

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

from absl import logging

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import evaluate_config
from pyramidnet_tf.cli import usage


def evaluate(config: evaluate_config.EvaluateConfig) -> dict:
  """Evaluates a model directory on a data split; returns the JSON record.

  Args:
    config: the evaluation (``evaluate_config.from_flags``).
  """
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy(config.runtime)
  from pyramidnet_tf.model import channel_alignment  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import records as records_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store as model_io  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top

  model_dir, data_dir = config.model_dir, config.data.data_dir
  info = manifest_lib.read_manifest(data_dir)
  split = config.split or info.eval_split
  # Counted from the shards: the padding to equal steps on every replica
  # follows from the counts, and a wrong manifest would drop records.
  info, mismatches = records_lib.recount(info, [split])
  if split in mismatches:
    logging.warning("%s; evaluating all %d of them", mismatches[split],
                    info.num_examples(split))
  with strategy.scope():
    opened = model_io.open_model(model_dir, config.checkpoint,
                                 warn=logging.warning,
                                 use_ema=config.use_ema)
    model, metadata = opened.model, opened.metadata
    checkpoint, use_ema = opened.checkpoint, opened.ema
    model.set_channel_multiple(channel_alignment.resolve(
        config.runtime.channel_multiple, config.runtime.dtype,
        channel_alignment.local_device_type()))
  if model.num_classes != info.num_classes:
    raise cli.FlagError(f"the model in {model_dir} has {model.num_classes}"
                     f" classes but {data_dir}/manifest.json lists "
                     f"{info.num_classes}")
  order = model_dir_lib.class_order_problem(metadata.get("class_names"),
                                            info.class_names)
  if order is not None and order[0]:
    raise cli.FlagError(f"--model_dir={model_dir}, --data_dir="
                     f"{data_dir}: {order[1]}")
  if order is not None:
    logging.warning("%s; the scores are only meaningful if the classes are "
                    "the same", order[1])
  model_config = opened.config["model"]
  cli.check_image_size("image_size", config.data.image_size,
                       model_config.get("dataset", "cifar10"),
                       "the model's size")
  preprocessing = model_dir_lib.preprocessing_of(
      metadata, model_config, config.data.image_size,
      config.data.cifar_convention, info)
  if config.data.image_size:
    preprocessing = dataclasses.replace(preprocessing,
                                        image_size=config.data.image_size)
  else:
    size = model_dir_lib.image_size_problem(
        preprocessing, "preprocessing" in metadata,
        records_lib.first_image_size(info, split), model_dir,
        data_dir)
    if size is not None and size[0]:
      raise cli.FlagError(size[1])
    if size is not None:
      logging.warning("%s", size[1])
  evaluator = evaluator_lib.Evaluator(
      strategy=strategy, model=model, info=info, preprocessing=preprocessing,
      split=split, dtype=config.runtime.dtype,
      global_batch=config.eval_batch)
  logging.info("evaluating %s (%s%s) on %s: %d images, global batch %d, "
               "%d replica(s)", model_dir, os.path.basename(checkpoint),
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
  return {"model_dir": model_dir, "data_dir": data_dir,
          "split": split, "checkpoint": checkpoint, "ema": use_ema,
          **metrics}


def main(argv):
  del argv  # console_base.run refuses positional arguments
  try:
    result = evaluate(evaluate_config.from_flags())
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

"""One evaluation of a model directory on a prepared data split: what
``pyramidnet_tf.evaluate`` runs (``evaluator.Evaluator`` is its loop).

Every example of the split is counted exactly once, on one device or under
any strategy: the records are counted from the shard files (a manifest that
disagrees is only warned about). Scores that would silently be wrong are
refused with ``errors.FlagError`` naming the flags to change: another class
count, the model's classes in another order, and CIFAR-style data whose image
size differs from the one a model that records none expects.
"""

import dataclasses
import os
import time
from typing import Optional

from absl import logging

from pyramidnet_tf import errors
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import records as records_lib
from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.model_dir import access as model_dir_lib
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import evaluator as evaluator_lib
from pyramidnet_tf.training import progress as progress_lib


def evaluate_model_dir(*, model_dir: str, data: config_lib.DataConfig,
                       runtime: config_lib.RuntimeConfig, eval_batch: int,
                       checkpoint: Optional[str] = None,
                       split: Optional[str] = None,
                       use_ema: str = "auto") -> dict:
  """Evaluates a model directory on a data split; returns the JSON record.

  Creates the strategy first (before any other TensorFlow work).

  Args:
    model_dir: a model directory of the trainer or import_torch.
    data: --data_dir, --image_size (0: the model's), --cifar_convention.
    runtime: distribution, devices, --dtype, --channel_multiple.
    eval_batch: the global batch (rounded up to the replicas).
    checkpoint: a checkpoint path, "best", or None for the newest intact.
    split: the split; None for the manifest's eval split.
    use_ema: "auto", "yes" or "no".

  Returns:
    model_dir, data_dir, split, checkpoint, ema and the metrics (loss,
    top1_error, top5_error in %, examples).

  Raises:
    errors.FlagError: scores that would be wrong with these flags.
    ValueError, FileNotFoundError: a model or data directory that cannot
      be used, one line naming it.
  """
  strategy = distribute.create_strategy(runtime)
  data_dir = data.data_dir
  info = manifest_lib.read_manifest(data_dir)
  split = split or info.eval_split
  # Counted from the shards: the padding to equal steps on every replica
  # follows from the counts, and a wrong manifest would drop records.
  info, mismatches = records_lib.recount(info, [split])
  if split in mismatches:
    logging.warning("%s; evaluating all %d of them", mismatches[split],
                    info.num_examples(split))
  with strategy.scope():
    opened = model_io.open_model(model_dir, checkpoint,
                                 warn=logging.warning, use_ema=use_ema)
    model, metadata = opened.model, opened.metadata
    checkpoint, use_ema = opened.checkpoint, opened.ema
    model.set_channel_multiple(channel_alignment.resolve(
        runtime.channel_multiple, runtime.dtype,
        channel_alignment.local_device_type()))
  _check_classes(model, metadata, info, model_dir, data_dir)
  preprocessing = _preprocessing(opened, info, split, data, model_dir)
  evaluator = evaluator_lib.Evaluator(
      strategy=strategy, model=model, info=info, preprocessing=preprocessing,
      split=split, dtype=runtime.dtype, global_batch=eval_batch)
  logging.info("evaluating %s (%s%s) on %s: %d images, global batch %d, "
               "%d replica(s)", model_dir, os.path.basename(checkpoint),
               ", EMA weights" if use_ema else "", split,
               info.num_examples(split), evaluator.global_batch,
               strategy.num_replicas_in_sync)
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


def _check_classes(model, metadata: dict, info, model_dir: str,
                   data_dir: str) -> None:
  """Refuses another class count or the model's classes in another order
  (errors.FlagError); warns when names differ otherwise."""
  if model.num_classes != info.num_classes:
    raise errors.FlagError(
        f"the model in {model_dir} has {model.num_classes} classes but "
        f"{data_dir}/manifest.json lists {info.num_classes}")
  order = model_dir_lib.class_order_problem(metadata.get("class_names"),
                                            info.class_names)
  if order is not None and order[0]:
    raise errors.FlagError(
        f"--model_dir={model_dir}, --data_dir={data_dir}: {order[1]}")
  if order is not None:
    logging.warning("%s; the scores are only meaningful if the classes are "
                    "the same", order[1])


def _preprocessing(opened, info, split: str, data: config_lib.DataConfig,
                   model_dir: str):
  """The evaluation preprocessing of the opened model on ``split``: the
  recorded one, at --image_size when given; a size that would silently
  change the scores is refused (errors.FlagError) or warned about."""
  metadata, model_config = opened.metadata, opened.config["model"]
  errors.check_image_size("image_size", data.image_size,
                          model_config.get("dataset", "cifar10"),
                          "the model's size")
  preprocessing = model_dir_lib.preprocessing_of(
      metadata, model_config, data.image_size, data.cifar_convention, info)
  if data.image_size:
    return dataclasses.replace(preprocessing, image_size=data.image_size)
  size = model_dir_lib.image_size_problem(
      preprocessing, "preprocessing" in metadata,
      records_lib.first_image_size(info, split), model_dir, data.data_dir)
  if size is not None and size[0]:
    raise errors.FlagError(size[1])
  if size is not None:
    logging.warning("%s", size[1])
  return preprocessing

"""What a training run reads: the data plan and the training input.

``plan_data`` reads and recounts the data directory (or sizes the synthetic
data) and decides the preprocessing; ``train_input_fn`` builds each input
pipeline of the run (from the data dir, the tf.data service or synthetic
data) at the run's input position (``run_plan.RunPlan.start_examples``).
"""

import dataclasses
import hashlib
import os
from typing import Any, Dict, Optional

from absl import logging

from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import pipeline as input_pipeline
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.data import records as records_lib
from pyramidnet_tf.model import complexity
from pyramidnet_tf.runtime import service_address
from pyramidnet_tf.runtime import watchdog as watchdog_lib
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import errors
from pyramidnet_tf.training import finetune_run
from pyramidnet_tf.training import resume as resume_lib
from pyramidnet_tf.training import run_plan as run_plan_lib

# Examples per epoch of --dataset=synthetic (the real train split's size).
SYNTHETIC_TRAIN_EXAMPLES = complexity.TRAIN_IMAGES


@dataclasses.dataclass(frozen=True)
class DataPlan:
  """What the run reads: the data dir (recounted), sizes and preprocessing."""
  info: Any                    # manifest_lib.DataInfo; None: synthetic
  train_examples: int
  num_classes: Optional[int]   # None: the model's default
  kind: str                    # the data's kind (cifar10, imagenet, folder)
  preprocessing: Any           # preprocessing_lib.Preprocessing
  eval_split: Optional[str]    # None: no evaluation


def plan_data(config: config_lib.TrainConfig,
              fine_tuning: finetune_run.FineTuning) -> DataPlan:
  """Reads and recounts the data dir; checks it against the config.

  Args:
    config: the run's configuration.
    fine_tuning: the run's fine-tuning (an ``--init_from`` source's input
      normalisation is kept).

  Raises:
    TrainError: unreadable or miscounted data, or a class count that
      disagrees with ``num_classes``.
  """
  data = config.data
  info = None
  eval_split = None
  if config.synthetic:
    train_examples = SYNTHETIC_TRAIN_EXAMPLES[config.model_dataset]
    num_classes = config.model.num_classes
    kind = config.model_dataset
  else:
    try:
      info = manifest_lib.read_manifest(data.data_dir)
      eval_split = info.find_eval_split()
      # Counted from the shards (their framing): steps per epoch, resume
      # positions and the eval padding follow from the counts.
      info, mismatches = records_lib.recount(
          info, ["train"] + ([eval_split] if eval_split else []))
    except manifest_lib.DataError as e:
      raise errors.TrainError(str(e)) from None
    if "train" in mismatches:
      # An error, not a warning: the schedule and every resume position of
      # the run would follow from a count nobody can vouch for (a shard
      # replaced, cut at a record boundary, or the manifest edited).
      raise errors.TrainError(
          f"{mismatches['train']}: the directory changed after data_prep "
          f"wrote it; {manifest_lib.repair_advice(data.data_dir)}")
    for split, mismatch in mismatches.items():
      logging.warning("%s; evaluation uses all %d of them", mismatch,
                      info.num_examples(split))
    if eval_split is None:
      logging.warning("%s has no evaluation split (%s): training without "
                      "evaluation", info.manifest_path,
                      ", ".join(manifest_lib.EVAL_SPLITS))
    train_examples = info.num_examples("train")
    num_classes = config.model.num_classes or info.num_classes
    if num_classes != info.num_classes:
      raise errors.TrainError(
          f"--num_classes={config.model.num_classes} but {data.data_dir}/"
          f"manifest.json lists {info.num_classes} classes; drop "
          "--num_classes to use the manifest's")
    kind = info.kind
  preprocessing = preprocessing_lib.preprocessing_for(
      kind, config.model_dataset, data.image_size, data.cifar_convention,
      data.augment, data.autoaugment, data.randaugment)
  preprocessing = fine_tuning.preprocessing(
      preprocessing, data.image_size, data.cifar_convention)
  return DataPlan(info=info, train_examples=train_examples,
                  num_classes=num_classes, kind=kind,
                  preprocessing=preprocessing, eval_split=eval_split)


def data_identity(config: config_lib.TrainConfig,
                  plan: DataPlan) -> Dict[str, Any]:
  """``resume.data_identity`` of the run's training data."""
  if plan.info is None:
    return resume_lib.data_identity(f"synthetic-{config.model_dataset}",
                                    plan.train_examples, plan.num_classes, ())
  return resume_lib.data_identity(
      plan.kind, plan.train_examples, plan.num_classes,
      [(os.path.basename(shard.path), shard.num_examples)
       for shard in plan.info.shards("train")])


def service_job_name(config: config_lib.TrainConfig, start_step: int) -> str:
  """The tf.data service job every trainer worker of this run joins.

  ``--data_service_job_name``, or one derived from ``--model_dir`` (the same
  on every worker), plus the resume step: a resumed run starts a fresh job
  instead of joining the interrupted run's, whose position is lost.

  Args:
    config: the run's configuration.
    start_step: the global step the run resumes at.
  """
  name = config.data.data_service_job_name or (
      "pyramidnet-" + hashlib.sha256(
          config.output.model_dir.encode()).hexdigest()[:16])
  return f"{name}-from-step-{start_step}"


def train_input_fn(config: config_lib.TrainConfig, plan: DataPlan,
                   run: run_plan_lib.RunPlan, num_classes: int,
                   job_suffix: str = ""):
  """The dataset function of ``distribute_datasets_from_function``.

  Args:
    config: the run's configuration.
    plan: the data plan (``plan_data``).
    run: the run plan: the global batch, the step the run resumes at and
      its input position (examples seen before it, all replicas).
    num_classes: classes of the model (synthetic labels).
    job_suffix: appended to the tf.data service job's name (a probe reads
      its own job, so it takes nothing from the run's).
  """
  batch, seed = run.global_batch, config.runtime.seed
  start_examples = run.start_examples

  def train_input(context):
    pipelines = context.num_input_pipelines
    per_replica = context.get_per_replica_batch_size(batch)
    if config.synthetic:
      size = (224 if config.model_dataset == "imagenet"
              else (config.data.image_size or 32))
      return input_pipeline.synthetic_dataset(size, num_classes, per_replica,
                                              seed)
    if config.data.data_service:
      return input_pipeline.service_train_dataset(
          plan.info, plan.preprocessing, per_replica, seed,
          service=config.data.data_service,
          mode=config.data.data_service_mode,
          job_name=service_job_name(config, run.start_step) + job_suffix,
          start_epoch=start_examples // plan.train_examples,
          shuffle_buffer=config.data.shuffle_buffer or None)
    return input_pipeline.train_dataset(
        plan.info, plan.preprocessing, per_replica, seed,
        start_examples=start_examples, num_pipelines=pipelines,
        pipeline_id=context.input_pipeline_id,
        replicas_per_pipeline=context.num_replicas_in_sync // pipelines,
        cache=(plan.info.is_cifar if config.data.cache_data is None
               else config.data.cache_data),
        deterministic=config.runtime.deterministic,
        shuffle_buffer=config.data.shuffle_buffer or None)
  return train_input


def service_watchdog(config: config_lib.TrainConfig, global_step,
                     model_dir: str):
  """Checks the tf.data service's dispatcher; returns the run's watchdog.

  The dispatcher must accept a TCP connection within --data_service_timeout
  (it may start after the trainers). The returned ``ProgressWatchdog`` ends
  the run with one line when, while armed, the global step does not move
  for that long: the service's workers are gone or cannot read the data.

  Raises:
    TrainError: the dispatcher never answered.
  """
  data = config.data
  host, _, port = service_address.parse_address(
      "data_service", data.data_service).rpartition(":")
  if not watchdog_lib.wait_for_port(host, int(port), data.data_service_timeout):
    raise errors.TrainError(
        f"--data_service={data.data_service}: no dispatcher answered at "
        f"{host}:{port} within {data.data_service_timeout:g} s "
        "(--data_service_timeout); start one there (python -m "
        f"pyramidnet_tf.data_service --role=dispatcher --port={port} "
        "--work_dir=...), or check the address and that the port is open "
        "from this host")
  return watchdog_lib.ProgressWatchdog(
      data.data_service_timeout, lambda: int(global_step.numpy()),
      f"error: no training input from the tf.data service at "
      f"{data.data_service} for {data.data_service_timeout:g} s "
      "(--data_service_timeout): check that its workers (python -m "
      "pyramidnet_tf.data_service --role=worker "
      f"--dispatcher={host}:{port}) are running and can read "
      f"{data.data_dir}; rerun the same command to resume from the newest "
      f"checkpoint in {model_dir} (exit code 1)")

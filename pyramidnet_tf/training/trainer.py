"""One training run from a ``TrainConfig``: the trainer's whole story.

Read top to bottom (big_vision style): create the strategy (the first
TensorFlow op, as MultiWorkerMirroredStrategy requires), plan the data,
build model, optimizer and checkpoint under the strategy, resume, then hand
over to the outer loop (``loop.Controller``), which calls the inner step
(``step.TrainStep``) and its actions (log, evaluate, checkpoint, ...).

Works on one CPU/GPU, several GPUs (mirrored) and several hosts (TF_CONFIG +
distribution multi_worker or auto). Rerunning with the same model dir
resumes from its newest intact checkpoint. Nothing here reads command-line
flags; error messages name settings by their flag names, which are the
config's field names.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, Optional, Tuple

from absl import logging

from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.model import complexity
from pyramidnet_tf import recipe_book as paper_rows
from pyramidnet_tf.runtime import compile_cache
from pyramidnet_tf.runtime import compile_units
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import best_checkpoint as best_checkpoint_lib
from pyramidnet_tf.training import epoch_log as epoch_log_lib
from pyramidnet_tf.training import finetune
from pyramidnet_tf.training import preemption
from pyramidnet_tf.training import progress as progress_lib
from pyramidnet_tf.training import resume as resume_lib

# Examples per epoch of --dataset=synthetic (the real train split's size).
SYNTHETIC_TRAIN_EXAMPLES = complexity.TRAIN_IMAGES


# The float16 loss scale's key in the checkpoint (absent in other dtypes).
LOSS_SCALE_KEY = "loss_scale"


class TrainError(ValueError):
  """A problem the user can fix; printed without a traceback."""


class EvaluationError(TrainError):
  """The evaluation split could not be read; the training state is intact
  (at a step boundary), so the run saves it before stopping."""


def _state_after_failed_eval(checkpointer, num_workers: int) -> str:
  """Saves the run's state after an evaluation that could not read its
  split (one worker: the others of a cluster may be inside the evaluation,
  where a save would wait for them); says where the state is."""
  from pyramidnet_tf.model_dir import store as model_io  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  step = int(checkpointer.global_step.numpy())
  latest = checkpointer.latest()
  if latest is not None and model_io.step_of(latest) == step:
    return f"the run's state at step {step} is in {latest}"
  if num_workers == 1:
    return (f"saved the run's state at step {step} in {checkpointer.save()} "
            "first, so that is where it resumes")
  return checkpointing.last_good_text(checkpointer.model_dir)


def weights_fingerprint(model) -> str:
  """SHA-256 of the trainable weights: equal on workers that agree."""
  digest = hashlib.sha256()
  for variable in model.trainable_variables:
    digest.update(variable.numpy().tobytes())
  return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class DataPlan:
  """What the run reads: the data dir (recounted), sizes and preprocessing."""
  info: Any                    # manifest_lib.DataInfo; None: synthetic
  train_examples: int
  num_classes: Optional[int]   # None: the model's default
  kind: str                    # the data's kind (cifar10, imagenet, folder)
  preprocessing: Any           # preprocessing_lib.Preprocessing
  eval_split: Optional[str]    # None: no evaluation


def plan_data(config: config_lib.TrainConfig) -> DataPlan:
  """Reads and recounts the data dir; checks it against the config.

  Raises:
    TrainError: unreadable or miscounted data, or a class count that
      disagrees with ``num_classes``.
  """
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import preprocessing as preprocessing_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import records as records_lib  # pylint: disable=g-import-not-at-top
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
      raise TrainError(str(e)) from None
    if "train" in mismatches:
      # An error, not a warning: the schedule and every resume position of
      # the run would follow from a count nobody can vouch for (a shard
      # replaced, cut at a record boundary, or the manifest edited).
      raise TrainError(
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
      raise TrainError(
          f"--num_classes={config.model.num_classes} but {data.data_dir}/"
          f"manifest.json lists {info.num_classes} classes; drop "
          "--num_classes to use the manifest's")
    kind = info.kind
  preprocessing = preprocessing_lib.preprocessing_for(
      kind, config.model_dataset, data.image_size, data.cifar_convention,
      data.augment, data.autoaugment, data.randaugment)
  if config.finetune.init_from:
    # Fed as the source was fed, so its features mean what they meant.
    preprocessing = dataclasses.replace(
        preprocessing, **finetune.source_normalisation(
            finetune.source_preprocessing(finetune.settings_source(
                config.finetune.init_from, config.output.model_dir),
                                          data.image_size,
                                          data.cifar_convention)))
  return DataPlan(info=info, train_examples=train_examples,
                  num_classes=num_classes, kind=kind,
                  preprocessing=preprocessing, eval_split=eval_split)


def _check_batches(config: config_lib.TrainConfig, replicas: int) -> None:
  """The training batch against the replica count, XLA against sync BN
  (the eval batch is rounded up to fit, ``evaluator.batch_for_replicas``)."""
  batch = config.schedule.batch_size
  if batch % replicas:
    raise TrainError(f"--batch_size={batch} must be a multiple of the "
                     f"{replicas} replicas (per-replica batch = global / "
                     "replicas)")
  if config.runtime.jit_compile and config.runtime.sync_bn and replicas > 1:
    raise TrainError(
        "--jit_compile cannot be combined with --sync_bn on more than one "
        f"replica ({replicas} here): the sync-BN all-reduce cannot run inside "
        "the XLA-compiled forward/backward. Drop one of the two flags.")


def build_model(config: config_lib.TrainConfig, num_classes, strategy):
  """The network of ``config.model`` (call under ``strategy.scope()``)."""
  from pyramidnet_tf.model import network  # pylint: disable=g-import-not-at-top
  kwargs = dataclasses.asdict(config.model)
  kwargs.update(dataset=config.model_dataset, num_classes=num_classes)
  try:
    model = network.PyramidNet(**kwargs)
  except ValueError as e:
    raise TrainError(f"invalid model flags: {e}") from None
  model.set_sync_batch_norm(config.runtime.sync_bn)
  model.set_channel_multiple(channel_alignment.resolve(
      config.runtime.channel_multiple, config.runtime.dtype,
      channel_alignment.local_device_type()))
  model.set_recompute(config.runtime.recompute)
  if config.jit_units:
    try:
      compile_units.jit_units(model, strategy.num_replicas_in_sync)
    except ValueError as e:
      raise TrainError(str(e)) from None
  return model


def model_metadata(config: config_lib.TrainConfig, plan: DataPlan,
                   class_names) -> Dict[str, Any]:
  """The metadata of ``model_config.json`` (what evaluate/export/predict
  need besides the weights), derived from the config."""
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  return {
      "source": checkpointing.TRAINER_SOURCE,
      "data_dir": config.data.data_dir,
      "data": plan.kind,
      "preprocessing": plan.preprocessing.to_json(),
      "class_names": class_names,
      "ema_decay": config.schedule.ema_decay,
      "flags": config.flat(),
  }


@dataclasses.dataclass(frozen=True)
class TrainState:
  """What a checkpoint holds, built under the strategy's scope."""
  model: Any
  global_step: Any             # int64 tf.Variable
  optimizer: Any               # optim.NesterovSGD
  loss_scale: Any              # loss_scale.DynamicLossScale; None but float16
  averages: Any                # ema.Ema; None without --ema_decay
  checkpoint: Any              # tf.train.Checkpoint over all of the above


def build_state(config: config_lib.TrainConfig, plan: DataPlan,
                strategy) -> TrainState:
  """Model, step counter, optimizer, loss scale, EMA and their checkpoint.

  Raises:
    TrainError: an invalid model or optimizer setting.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import ema as ema_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loss_scale as loss_scale_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import optim  # pylint: disable=g-import-not-at-top
  schedule = config.schedule
  with strategy.scope():
    model = build_model(config, plan.num_classes, strategy)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name="global_step")
    decay_filter = (optim.default_decay_filter if schedule.decay_bn_and_bias
                    else optim.no_bn_no_bias_filter)
    try:
      frozen = finetune.freeze(model, config.finetune.freeze)
      scales = finetune.lr_scales(model, frozen,
                                  config.finetune.backbone_lr_scale)
    except finetune.FinetuneError as e:
      raise TrainError(str(e)) from None
    if (config.finetune.freeze == "backbone" and
        config.finetune.backbone_lr_scale != 1.0):
      logging.warning("--backbone_lr_scale=%g has no effect with "
                      "--freeze=backbone (the backbone is not trained)",
                      config.finetune.backbone_lr_scale)
    if frozen:
      logging.info("--freeze=%s: %d of %d trainable variables frozen (their "
                   "BNs in inference mode)", config.finetune.freeze,
                   len(frozen), len(model.trainable_variables))
    try:
      optimizer = optim.NesterovSGD(
          model.trainable_variables, schedule.momentum, schedule.nesterov,
          schedule.weight_decay, decay_filter, name="optimizer",
          lr_scale=lambda v: scales[id(v)])
    except ValueError as e:
      raise TrainError(f"optimizer flags: {e}") from None
    scaler = (loss_scale_lib.DynamicLossScale(name="loss_scale")
              if config.runtime.dtype == "float16" else None)
    # Frozen weights and their BN statistics: their averages stay exact.
    frozen_state = [v for m in finetune.frozen_modules(
        model, config.finetune.freeze) for v in m.variables]
    averages = (ema_lib.Ema(ema_lib.averaged_variables(model),
                            schedule.ema_decay, name="ema",
                            fixed=frozen_state)
                if schedule.ema_decay > 0 else None)
  objects = {"model": model, "optimizer": optimizer,
             "global_step": global_step}
  if scaler is not None:
    objects[LOSS_SCALE_KEY] = scaler
  if averages is not None:
    objects[ema_lib.CHECKPOINT_KEY] = averages
  return TrainState(model=model, global_step=global_step,
                    optimizer=optimizer, loss_scale=scaler,
                    averages=averages,
                    checkpoint=tf.train.Checkpoint(**objects))


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


def initialise_from(directory: str, model, averages, class_names,
                    regularisers: Optional[Dict[str, Any]] = None) -> None:
  """Copies the source's weights and BN statistics into a fresh run.

  Args:
    directory: the ``--init_from`` model directory.
    model: the run's network (built under the strategy's scope).
    averages: the run's ``ema.Ema`` or None; restarted from the copied
      weights.
    class_names: the data's class names (its manifest), or None.
    regularisers: the run's dropout and ShakeDrop settings (names of
      ``finetune.REGULARISER_FIELDS``), logged against the source's.

  Raises:
    TrainError: the source cannot be read or does not fit the model.
  """
  try:
    source, metadata, path, used_ema = finetune.load_source(directory)
    new_head = finetune.needs_new_head(
        source.num_classes, metadata.get("class_names"), model.num_classes,
        class_names)
    copied = finetune.copy_weights(source, model, new_head, directory)
  except finetune.FinetuneError as e:
    raise TrainError(str(e)) from None
  if averages is not None:
    averages.reset()
  logging.info(
      "initialised from %s%s: %d variables (weights and BN statistics; "
      "optimiser state and step start fresh); classes %d -> %d: %s",
      path, " (its EMA weights)" if used_ema else "", copied,
      source.num_classes, model.num_classes,
      "new classifier" if new_head else "classifier kept")
  if regularisers is not None:
    from pyramidnet_tf.model import network as network_lib  # pylint: disable=g-import-not-at-top
    logging.info("regularisers: %s", finetune.regularisers_text(
        regularisers, network_lib.config_of(source)))


def train_input_fn(config: config_lib.TrainConfig, plan: DataPlan,
                   num_classes: int, start_step: int,
                   start_examples: Optional[int] = None, job_suffix: str = ""):
  """The dataset function of ``distribute_datasets_from_function``.

  Args:
    config: the run's configuration.
    plan: the data plan (``plan_data``).
    num_classes: classes of the model (synthetic labels).
    start_step: the global step the run resumes at.
    start_examples: training examples seen before it, all replicas (the
      input position; default: ``start_step`` x the batch size).
    job_suffix: appended to the tf.data service job's name (a probe reads
      its own job, so it takes nothing from the run's).
  """
  from pyramidnet_tf.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  batch, seed = config.schedule.batch_size, config.runtime.seed
  if start_examples is None:
    start_examples = start_step * batch

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
          job_name=service_job_name(config, start_step) + job_suffix,
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


def build_train_step(config: config_lib.TrainConfig, state: TrainState,
                     strategy, schedule, stop_flag=None):
  """The inner loop (``step.TrainStep``) of the run's settings.

  Args:
    config: the run's configuration.
    state: model, optimizer, step counter, loss scale and EMA.
    strategy: the strategy they were built under.
    schedule: the learning-rate schedule.
    stop_flag: the host variable of stop requests (``preemption``), if any.
  """
  from pyramidnet_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
  settings = config.schedule
  return step_lib.TrainStep(
      strategy=strategy, model=state.model, optimizer=state.optimizer,
      schedule=schedule, global_step=state.global_step,
      global_batch=settings.batch_size, dtype=config.runtime.dtype,
      label_smoothing=settings.label_smoothing, jit_compile=config.jit_step,
      loss_scale=state.loss_scale,
      regularization=step_lib.Regularization(
          cutmix_prob=settings.cutmix_prob, cutmix_beta=settings.cutmix_beta,
          mixup_alpha=settings.mixup_alpha, cutout_size=settings.cutout_size,
          clip_grad_norm=settings.clip_grad_norm, seed=config.runtime.seed),
      ema=state.averages, stop_flag=stop_flag)


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
  from pyramidnet_tf.runtime import service_address  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.runtime import watchdog as watchdog_lib  # pylint: disable=g-import-not-at-top
  data = config.data
  host, _, port = service_address.parse_address(
      "data_service", data.data_service).rpartition(":")
  if not watchdog_lib.wait_for_port(host, int(port), data.data_service_timeout):
    raise TrainError(
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


def _count(n: int) -> str:
  """1.73M, 253.1G, 22.5k: a count with three significant digits."""
  for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
    if n >= scale:
      return f"{n / scale:.3g}{suffix}"
  return str(n)


def published_error(model, plan: DataPlan) -> Optional[str]:
  """The paper's error for this network on this data (one of its rows:
  the same architecture, trained on the dataset the row is for), else
  None."""
  row = paper_rows.find(model.arch)
  if row is None or plan.kind != row.dataset:
    return None
  return row.published


def data_identity(config: config_lib.TrainConfig,
                  plan: DataPlan) -> Dict[str, Any]:
  """``resume.data_identity`` of the run's training data."""
  import os  # pylint: disable=g-import-not-at-top
  if plan.info is None:
    return resume_lib.data_identity(f"synthetic-{config.model_dataset}",
                                    plan.train_examples, plan.num_classes, ())
  return resume_lib.data_identity(
      plan.kind, plan.train_examples, plan.num_classes,
      [(os.path.basename(shard.path), shard.num_examples)
       for shard in plan.info.shards("train")])


def plan_resume(config: config_lib.TrainConfig, plan: DataPlan,
                start_step: int, restored: Optional[str]
                ) -> Tuple[resume_lib.ResumePlan, list]:
  """Checks this launch against the launches that trained the checkpoint
  (``training.resume``) and says what it changes.

  Args:
    config: the run's configuration.
    plan: the data plan.
    start_step: the step counter restored (0: fresh).
    restored: the checkpoint resumed from, or None.

  Returns:
    (the launch's ``resume.ResumePlan``, the launches recorded before it).

  Raises:
    TrainError: the launch changes what a step means without
      --rebase_resume, or train_config.json cannot be read.
  """
  model_dir = config.output.model_dir
  launches = []
  if restored:
    try:
      launches = resume_lib.launches_of(config_lib.read_json(model_dir))
    except config_lib.ConfigError as e:
      raise TrainError(str(e)) from None
    if not launches:
      logging.warning(
          "%s has no %s: the settings that trained %s are unknown, so "
          "this launch cannot be checked against them; it resumes at "
          "example %d (step %d x --batch_size=%d)", model_dir,
          config_lib.CONFIG_FILE, restored, start_step *
          config.schedule.batch_size, start_step, config.schedule.batch_size)
  try:
    result = resume_lib.plan(
        launches, start_step, config.flat(), data_identity(config, plan),
        model_dir=model_dir, rebase=config.output.rebase_resume)
  except resume_lib.ResumeRefused as e:
    raise TrainError(str(e)) from None
  if result.changed:
    logging.info("resuming with changed settings: %s",
                 ", ".join(result.changed))
  if result.rebase_text:
    logging.info("%s", result.rebase_text)
  elif config.output.rebase_resume and restored:
    logging.info("%s: nothing to re-base (the settings that change what a "
                 "step means are those the run was trained with)",
                 resume_lib.REBASE_FLAG)
  return result, [launch.to_json() for launch in launches]


def _devices_text(strategy) -> str:
  """``2 x GPU`` style summary of the local worker's replica devices."""
  counts: Dict[str, int] = {}
  for device in strategy.extended.worker_devices:
    kind = device.rsplit("device:", 1)[-1].split(":")[0] or device
    counts[kind] = counts.get(kind, 0) + 1
  return ", ".join(f"{n} x {kind}" for kind, n in counts.items())


def plan_line(config: config_lib.TrainConfig, model, strategy, *,
              num_workers: int, steps_per_epoch: int, start_step: int,
              total_steps: int, step_offset: int = 0) -> str:
  """The run's start line: network, length, batch, devices, precision.

  Args:
    config: the run's configuration.
    model: the built PyramidNet.
    strategy: the strategy it trains under.
    num_workers: hosts taking part.
    steps_per_epoch: steps per epoch of the train split.
    start_step: the step training starts or resumes at.
    total_steps: the step it ends at.
    step_offset: schedule step minus step counter (a re-based run).
  """
  arch = model.arch
  units = "bottleneck" if arch.bottleneck else "basic"
  size = config.data.image_size or (224 if arch.dataset == "imagenet" else 32)
  parts = complexity.report(arch, model.num_classes, size)
  replicas = strategy.num_replicas_in_sync
  batch = config.schedule.batch_size
  runtime = config.runtime
  resumed = f", resuming at step {start_step}" if start_step else ""
  if step_offset:
    resumed += (f" (schedule step {start_step + step_offset}: steps "
                "re-based on examples seen)")
  xla = f"on ({runtime.jit_scope})" if runtime.jit_compile else "off"
  epochs = (total_steps + step_offset) / steps_per_epoch
  return (
      f"training {config.model_dataset} PyramidNet-{arch.depth} "
      f"({arch.mode} alpha={arch.alpha:g}, {units} units, "
      f"{model.num_classes} classes, "
      f"{_count(complexity.total_params(parts))} parameters, "
      f"{_count(complexity.total_macs(parts))} MACs at {size} px): "
      f"{total_steps} steps = "
      f"{progress_lib.epochs_text(epochs)} epochs of {steps_per_epoch} "
      f"steps{resumed}; global batch {batch} = {replicas} "
      f"replica{'s' if replicas > 1 else ''} x {batch // replicas} on "
      f"{num_workers} worker{'s' if num_workers > 1 else ''} "
      f"({_devices_text(strategy)} each); {runtime.dtype}, XLA {xla}, "
      f"channel multiple {model.channel_multiple}")


def train(config: config_lib.TrainConfig, *,
          stop: Optional[preemption.StopSignals] = None) -> Dict[str, Any]:
  """Runs training; returns a result dict (also logged as JSON).

  A stop request (SIGTERM, SIGINT, SIGUSR1) ends training after the step in
  progress on every worker, with a checkpoint of that step; the result then
  has ``preempted`` (and ``signal``), and the tool exits with
  ``exit_codes.PREEMPTED``.

  Args:
    config: the validated run configuration (``cli.train_config``).
    stop: stop signals already installed by the caller (as early as
      possible); None installs them here, for the run's duration.

  Raises:
    TrainError: a problem of the settings or data, named.
    checkpointing.CheckpointError, loop.NonFiniteLossError,
    model_dir.ModelDirError: see those modules.
  """
  own_stop = stop is None
  if own_stop:
    stop = preemption.StopSignals()
    stop.install()
  claims = []
  try:
    return _train(config, stop, claims)
  except BaseException:
    # Refused or failed before it saved anything: leave no empty model dir
    # or stray lock behind.
    for claim in claims:
      claim.abandon()
    raise
  finally:
    if own_stop:
      stop.uninstall()


def _train(config: config_lib.TrainConfig, stop: preemption.StopSignals,
           claims: list) -> Dict[str, Any]:
  """``train`` with its stop signals installed; appends the chief's
  ``access.RunClaim`` of the model dir to ``claims``."""
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  runtime, schedule_config, output = (config.runtime, config.schedule,
                                      config.output)
  strategy = distribute.create_strategy(runtime)
  stop.reclaim()
  # Everything TensorFlow comes after the strategy.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import records as records_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store as model_io  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import ema as ema_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import evaluator as evaluator_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loop  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import schedules  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import summaries as summaries_lib  # pylint: disable=g-import-not-at-top

  # Outside the strategy's scope: one plain host variable per worker, read
  # by the compiled loops at every step (``step.with_stop_request``).
  stop_flag = tf.Variable(0.0, trainable=False, name="stop_requested")
  if runtime.deterministic:
    tf.config.experimental.enable_op_determinism()
  # Never global seed 0: tf.data's seed helper then compares our per-epoch
  # shuffle seed (a tensor) with 0 in Python and fails.
  tf.random.set_seed(runtime.seed + 1)
  replicas = strategy.num_replicas_in_sync
  num_workers = distribute.num_workers(strategy)
  chief = distribute.is_chief(strategy)
  # Held until the process exits (the kernel drops it even on SIGKILL).
  claim = model_dir_lib.RunClaim(output.model_dir) if chief else None
  if claim is not None:
    claims.append(claim)
  _check_batches(config, replicas)
  batch = schedule_config.batch_size

  plan = plan_data(config)
  info = plan.info
  steps_per_epoch = plan.train_examples // batch
  if steps_per_epoch < 1:
    raise TrainError(f"the train split has {plan.train_examples} examples, "
                     f"fewer than one --batch_size={batch}")
  total_steps = schedule_config.train_steps or max(
      1, int(round(schedule_config.epochs * steps_per_epoch)))
  try:
    schedule = schedules.Schedule(
        schedule_config.lr_schedule, schedule_config.lr, steps_per_epoch,
        total_steps, schedule_config.lr_decay_epochs,
        schedule_config.lr_decay_factor, schedule_config.warmup_epochs)
  except ValueError as e:
    raise TrainError(str(e)) from None

  state = build_state(config, plan, strategy)
  model, global_step, averages = state.model, state.global_step, state.averages
  stop.attach(stop_flag, step=global_step)
  try:
    checkpointing.check_config(output.model_dir, model)
  except checkpointing.ConfigMismatchError as e:
    raise TrainError(str(e)) from None
  # Guards every float variable of the checkpoint against NaN/Inf.
  checkpointer = checkpointing.Checkpointer(
      output.model_dir, strategy, state.checkpoint, global_step,
      output.keep_checkpoints,
      optional=(ema_lib.CHECKPOINT_KEY, LOSS_SCALE_KEY))
  restored = checkpointer.restore()
  if averages is not None and (ema_lib.CHECKPOINT_KEY in
                               checkpointer.missing_optional):
    logging.info("%s has no EMA: starting it from the restored weights",
                 restored)
    averages.reset()
  if LOSS_SCALE_KEY in checkpointer.missing_optional:
    logging.info("%s has no float16 loss scale (trained in another dtype): "
                 "starting it at its initial value", restored)
  start_step = int(global_step.numpy())
  class_names = manifest_lib.class_names_list(info, model.num_classes)
  if restored:
    logging.info("resumed from %s at step %d%s", restored, start_step,
                 f" (--init_from={config.finetune.init_from} not applied: "
                 "the run's own checkpoint wins)"
                 if config.finetune.init_from else "")
  elif config.finetune.init_from:
    initialise_from(config.finetune.init_from, model, averages,
                    info.class_names if info is not None else None,
                    {name: getattr(config.model, name)
                     for name in finetune.REGULARISER_FIELDS})
  resume_plan, launches = plan_resume(config, plan, start_step, restored)
  step_offset = resume_plan.step_offset
  # The counter runs to where the schedule (in steps of this batch) ends.
  schedule = dataclasses.replace(schedule, step_offset=step_offset)
  total_steps -= step_offset

  def write_configs():
    model_io.write_config(output.model_dir, model,
                          model_metadata(config, plan, class_names))
    config_lib.write(output.model_dir, config,
                     launches + [resume_plan.launch.to_json()])
  # A fresh run writes its configs after its first checkpoint, so a model
  # dir with a config always had one (see checkpointing: such a dir without
  # an intact checkpoint is refused instead of restarted).
  if chief and restored:
    write_configs()
  elif chief:
    checkpointer.after_first_save(write_configs)

  input_watchdog = None
  first = None
  def check_model_dir():
    """Before each save and at the end: the run still owns --model_dir."""
    problem = model_dir_lib.ownership_problem(output.model_dir,
                                              claim.lock if claim else None)
    if problem is not None:
      raise model_dir_lib.ModelDirError(
          f"{problem}: stopped at step {int(global_step.numpy())} without "
          "writing there again (its checkpoints went with it, and another "
          "trainer may use the path now); put it back to resume from its "
          "last checkpoint, or run the command again to start over")

  def restore_configs():
    """After each save and at the end: the configs the checkpoints need."""
    gone = [name for name in (model_io.CONFIG_FILE, config_lib.CONFIG_FILE)
            if not tf.io.gfile.exists(os.path.join(output.model_dir, name))]
    if gone:
      logging.warning("%s deleted from %s during the run: writing %s again",
                      " and ".join(gone), output.model_dir,
                      "them" if len(gone) > 1 else "it")
      write_configs()
  if chief:
    checkpointer.around_saves(check_model_dir, restore_configs)

  if config.data.data_service:
    logging.info("training input from the tf.data service at %s (%s, job %s)",
                 config.data.data_service, config.data.data_service_mode,
                 service_job_name(config, start_step))
    input_watchdog = service_watchdog(config, global_step, output.model_dir)
    # A first batch from a job of its own, on every start (so fresh and
    # resumed runs build the same datasets): a service without workers
    # ends the run here instead of hanging inside the first compiled call.
    probe = strategy.distribute_datasets_from_function(train_input_fn(
        config, plan, model.num_classes, start_step,
        resume_plan.start_examples, job_suffix="-probe"))
    with input_watchdog.armed():
      first = strategy.experimental_local_results(next(iter(probe)))
  train_input = train_input_fn(config, plan, model.num_classes, start_step,
                               resume_plan.start_examples)
  dataset = strategy.distribute_datasets_from_function(train_input)
  iterator = iter(dataset)
  summaries = summaries_lib.Summaries(summaries_lib.logdir(output.model_dir),
                                      chief)
  if start_step == 0:
    summaries.flags(config.flat(), config.experiment_values())
    # A second iterator over the same dataset: building another dataset
    # would trace its functions on fresh starts only, shifting TF's function
    # names and so missing the persistent XLA cache on the first resume.
    if first is None:
      with records_lib.named_read_errors(info, ["train"], TrainError):
        first = strategy.experimental_local_results(next(iter(dataset)))
    summaries.images(first[0][0], 0)

  evaluator = None
  if plan.eval_split is not None:
    evaluator = evaluator_lib.Evaluator(
        strategy=strategy, model=model, info=info,
        preprocessing=plan.preprocessing, split=plan.eval_split,
        global_batch=config.eval_batch, dtype=runtime.dtype,
        averages=averages, error_class=EvaluationError,
        stop_flag=stop_flag)

  train_step = build_train_step(config, state, strategy, schedule,
                                stop_flag)
  best_checkpoint = None
  if evaluator is not None:
    best_checkpoint = best_checkpoint_lib.BestCheckpoint(
        model_dir=output.model_dir, strategy=strategy,
        checkpoint=state.checkpoint, uses_ema=averages is not None)
  checkpoint_every = output.checkpoint_every_steps or steps_per_epoch
  eval_every = int(round(output.eval_every_epochs * steps_per_epoch))
  cadence = loop.Cadence(
      total_steps=total_steps, steps_per_loop=runtime.steps_per_loop,
      log_every=output.log_every_steps, checkpoint_every=checkpoint_every,
      eval_every=eval_every if evaluator else 0,
      histogram_every=output.histogram_every_steps,
      profile=output.profile_steps, epoch_every=steps_per_epoch)
  progress = progress_lib.TrainProgress(
      start_step=start_step, total_steps=total_steps,
      steps_per_epoch=steps_per_epoch, global_batch=batch,
      jit_compile=runtime.jit_compile, step_offset=step_offset)
  epochs = epoch_log_lib.EpochLog(
      model_dir=output.model_dir, enabled=chief,
      steps_per_epoch=steps_per_epoch, total_steps=total_steps,
      start_step=start_step, global_batch=batch, schedule=schedule,
      progress=progress, step_offset=step_offset)
  controller = loop.Controller(
      strategy=strategy, train_step=train_step, iterator=iterator,
      cadence=cadence, global_batch=batch, num_workers=num_workers,
      summaries=summaries, checkpointer=checkpointer, schedule=schedule,
      evaluate=(loop.EvalAction(evaluator, summaries, global_step,
                                plan.eval_split, best_checkpoint,
                                progress=chief)
                if evaluator else None),
      stop=stop, profile_dir=summaries.run_dir(summaries_lib.TRAIN),
      progress=progress, input_watchdog=input_watchdog, epoch_log=epochs)
  logging.info("%s", plan_line(config, model, strategy, num_workers=num_workers,
                               steps_per_epoch=steps_per_epoch,
                               start_step=start_step, total_steps=total_steps,
                               step_offset=step_offset))
  if num_workers > 1:
    logging.info("%s", distribute.cluster_text(strategy))
  if compile_cache.resolve_cache_dir(runtime.compile_cache_dir,
                                     output.model_dir, runtime.jit_compile):
    compile_cache.align_function_names()
  try:
    with records_lib.named_read_errors(info, ["train"], TrainError):
      train_metrics = controller.run()
  except EvaluationError as e:
    raise TrainError(f"{e}; {_state_after_failed_eval(checkpointer, num_workers)}"
                     ) from None
  finally:
    if input_watchdog is not None:
      input_watchdog.close()
  final_step = int(global_step.numpy())
  preempted = controller.preempted
  eval_metrics = controller.last_eval
  finished_before = start_step >= total_steps
  if finished_before:
    # A rerun of a finished run: its final evaluation is on record.
    eval_metrics = epoch_log_lib.final_eval(output.model_dir, final_step)
    if eval_metrics is not None and plan.eval_split:
      eval_metrics["split"] = plan.eval_split
    will_evaluate = (eval_metrics is None and output.eval_at_end and
                     evaluator is not None)
    logging.info(
        "already finished at step %d/%d%s", final_step, total_steps,
        ": evaluating it (no final evaluation on record)" if will_evaluate
        else ("; its final evaluation is on record in metrics.csv"
              if eval_metrics is not None else ": nothing to do"))
  if not preempted:
    if final_step > start_step and not loop.Cadence.hit(final_step,
                                                        checkpoint_every):
      checkpointer.save()
    if (controller.evaluate is not None and output.eval_at_end and
        (eval_metrics is None or eval_metrics["step"] != final_step)):
      try:
        eval_metrics = controller.evaluate()
      except evaluator_lib.EvaluationStopped:
        logging.info("final evaluation abandoned: stop requested (the "
                     "checkpoint of step %d is saved)", final_step)
        preempted = True
      except EvaluationError as e:
        raise TrainError(
            f"{e}; {_state_after_failed_eval(checkpointer, num_workers)}"
        ) from None
  if not preempted and (final_step > start_step or (
      finished_before and eval_metrics is not None and
      epoch_log_lib.final_eval(output.model_dir, final_step) is None)):
    epochs.write(final_step, eval_metrics)
  if preempted:
    result = {"preempted": True, "signal": stop.signal_name,
              "step": final_step, "total_steps": total_steps,
              "checkpoint": checkpointer.latest() if chief else None}
  else:
    result = {"step": final_step, "train": train_metrics,
              "eval": eval_metrics}
  summaries.flush()
  if chief:
    # Never "done" for a directory that lost its configs or went away.
    check_model_dir()
    restore_configs()
  if claim is not None:
    claim.release()
  result["weights_fingerprint"] = weights_fingerprint(model)
  if chief and not preempted:
    best = controller.evaluate.best if controller.evaluate else None
    progress.summary(
        final_step=final_step, last_eval=result["eval"], best_eval=best,
        checkpoint=checkpointer.latest(), model_dir=output.model_dir,
        best_checkpoint=best_checkpoint.prefix if best_checkpoint else None,
        published=published_error(model, plan),
        images_per_sec=epochs.images_per_sec)
  logging.info("result: %s", json.dumps(result))
  if num_workers > 1:
    # Who this is, so the tool can end the workers in order
    # (``distribute.leave_cluster``).
    result["worker"] = distribute.task(strategy)[1]
    result["workers"] = num_workers
  return result

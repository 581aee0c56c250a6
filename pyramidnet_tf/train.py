"""Trains a PyramidNet: ``python -m pyramidnet_tf.train --flagfile=flags/...``.

One readable trainer (big_vision style): validate flags, create the strategy
(first TensorFlow op, as MultiWorkerMirroredStrategy requires), build data,
model, optimizer and checkpoint, resume, then hand over to the outer loop
(``loop.Controller``) which calls the inner step (``step.TrainStep``).

Works on one CPU/GPU, several GPUs (mirrored) and several hosts
(TF_CONFIG + --distribution=multi_worker or auto). Rerunning with the same
--model_dir resumes from its latest checkpoint.
"""

import hashlib
import json
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging

from pyramidnet_tf.cli import train_flags  # pylint: disable=unused-import
from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.runtime import compile_cache
from pyramidnet_tf.runtime import compile_units
from pyramidnet_tf.cli import model_flags

FLAGS = flags.FLAGS

SYNTHETIC_TRAIN_EXAMPLES = {"cifar10": 50000, "cifar100": 50000,
                            "imagenet": 1281167}


class TrainError(ValueError):
  """A problem the user can fix; printed without a traceback."""


def _int_list(name, values):
  try:
    return [int(v) for v in values]
  except ValueError:
    raise TrainError(f"--{name} takes comma-separated integers; got "
                     f"{','.join(values)!r}") from None


def _augment_policy():
  """(--autoaugment, parsed --randaugment); TrainError naming the flag."""
  from pyramidnet_tf.data import autoaugment  # pylint: disable=g-import-not-at-top
  try:
    randaugment = autoaugment.parse_randaugment(FLAGS.randaugment)
    autoaugment.make_policy(FLAGS.autoaugment, randaugment)
  except ValueError as e:
    raise TrainError(str(e)) from None
  return FLAGS.autoaugment, randaugment


def _validate_flags():
  """Checks that need no TensorFlow op (the strategy must come first).

  Returns the parsed values: (profile steps, lr decay epochs, (autoaugment,
  randaugment)).
  """
  if not FLAGS.model_dir:
    raise TrainError("--model_dir is required (checkpoints, "
                     "model_config.json and TensorBoard events go there)")
  if FLAGS.dataset != "synthetic" and not FLAGS.data_dir:
    raise TrainError(
        "--data_dir is required: prepare data first, e.g. `python -m "
        "data_prep.cifar --dataset=cifar10 --source=cifar-10-python.tar.gz "
        "--output_dir=DIR` (or data_prep.imagenet / data_prep.folder), or "
        "pass --dataset=synthetic to benchmark without data")
  if FLAGS.batch_size < 1:
    raise TrainError(f"--batch_size must be >= 1; got {FLAGS.batch_size}")
  if FLAGS.train_steps is not None and FLAGS.train_steps < 1:
    raise TrainError(f"--train_steps must be >= 1; got {FLAGS.train_steps}")
  # Finite even when --train_steps overrides it; > 0 when it is used.
  epochs = dict(low=0, low_open=True) if FLAGS.train_steps is None else {}
  problem = (cli.number_problem("epochs", FLAGS.epochs, **epochs) or
             train_flags.number_problem())
  if problem:
    raise TrainError(problem)
  if FLAGS.steps_per_loop < 1:
    raise TrainError(f"--steps_per_loop must be >= 1; got "
                     f"{FLAGS.steps_per_loop}")
  if not 0.0 <= FLAGS.label_smoothing < 1.0:
    raise TrainError(f"--label_smoothing must be in [0, 1); got "
                     f"{FLAGS.label_smoothing}")
  if not 0.0 <= FLAGS.cutmix_prob <= 1.0:
    raise TrainError(f"--cutmix_prob must be in [0, 1] (0 = off); got "
                     f"{FLAGS.cutmix_prob}")
  if FLAGS.cutout_size < 0:
    raise TrainError(f"--cutout_size must be >= 0 (0 = off); got "
                     f"{FLAGS.cutout_size}")
  try:  # the device only matters for auto, which is always valid
    channel_alignment.resolve(FLAGS.channel_multiple, FLAGS.dtype, "CPU")
  except ValueError as e:
    raise TrainError(str(e)) from None
  if not 0.0 <= FLAGS.ema_decay < 1.0:
    raise TrainError(f"--ema_decay must be in [0, 1) (0 = off); got "
                     f"{FLAGS.ema_decay}")
  policy = _augment_policy()
  profile = _int_list("profile_steps", FLAGS.profile_steps)
  if profile and (len(profile) != 2 or not 0 <= profile[0] < profile[1]):
    raise TrainError("--profile_steps takes START,STOP with 0 <= START < STOP;"
                     f" got {','.join(FLAGS.profile_steps)!r}")
  decay_epochs = _int_list("lr_decay_epochs", FLAGS.lr_decay_epochs)
  if any(epoch < 0 for epoch in decay_epochs):
    raise TrainError("--lr_decay_epochs takes 0-based epochs >= 0; got "
                     f"{','.join(FLAGS.lr_decay_epochs)!r}")
  synthetic = FLAGS.dataset == "synthetic"
  try:
    cli.check_image_size(
        "image_size", FLAGS.image_size,
        FLAGS.synthetic_like if synthetic else FLAGS.dataset,
        "32 for CIFAR-architecture data, 224 for ImageNet")
    if not synthetic:
      model_flags.architecture()  # UsageError naming the bad model flag
  except (cli.UserError, app.UsageError) as e:
    raise TrainError(str(e)) from None
  return (tuple(profile) if profile else (0, 0)), decay_epochs, policy


def _flag_values():
  names = set(model_flags.MODEL_FLAG_NAMES)
  for module in ("pyramidnet_tf.cli.train_flags", "pyramidnet_tf.cli.common_flags",
                 "pyramidnet_tf.runtime.compile_cache", "pyramidnet_tf.runtime.compile_units"):
    names.update(f.name for f in FLAGS.get_flags_for_module(module))
  return {name: FLAGS[name].value for name in sorted(names)}


def _check_checkpoint_flags():
  """Checkpoint flags and --model_dir, before TensorFlow builds anything."""
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  if FLAGS.keep_checkpoints < 1:
    raise TrainError(f"--keep_checkpoints must be >= 1 (the newest N are "
                     f"kept); got {FLAGS.keep_checkpoints}")
  if FLAGS.checkpoint_every_steps < 0:
    raise TrainError(f"--checkpoint_every_steps must be >= 0 (0 = once per "
                     f"epoch); got {FLAGS.checkpoint_every_steps}")
  try:
    model_dir_lib.check_writable(FLAGS.model_dir)
  except model_dir_lib.ModelDirError as e:
    raise TrainError(str(e)) from None


def weights_fingerprint(model) -> str:
  """SHA-256 of the trainable weights: equal on workers that agree."""
  digest = hashlib.sha256()
  for variable in model.trainable_variables:
    digest.update(variable.numpy().tobytes())
  return digest.hexdigest()


def train():
  """Runs training from FLAGS; returns a result dict (also logged as JSON)."""
  profile, decay_epochs, augment_policy = _validate_flags()
  _check_checkpoint_flags()

  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy(FLAGS.distribution, FLAGS.cpu_devices,
                                        FLAGS.collective_timeout,
                                        FLAGS.cluster_resolver,
                                        FLAGS.slurm_port_base)
  # Everything TensorFlow comes after the strategy.
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import ema as ema_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.data import pipeline as input_pipeline  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loop  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loss_scale as loss_scale_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store as model_io  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import optim  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import schedules  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import step as step_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import summaries as summaries_lib  # pylint: disable=g-import-not-at-top

  if FLAGS.deterministic:
    tf.config.experimental.enable_op_determinism()
  # Never global seed 0: tf.data's seed helper then compares our per-epoch
  # shuffle seed (a tensor) with 0 in Python and fails.
  tf.random.set_seed(FLAGS.seed + 1)
  replicas = strategy.num_replicas_in_sync
  num_workers = distribute.num_workers(strategy)
  chief = distribute.is_chief(strategy)
  # Held until the process exits (the kernel drops it even on SIGKILL).
  model_dir_lock = model_dir_lib.lock(FLAGS.model_dir) if chief else None
  if FLAGS.batch_size % replicas:
    raise TrainError(f"--batch_size={FLAGS.batch_size} must be a multiple of "
                     f"the {replicas} replicas (per-replica batch = global / "
                     "replicas)")
  per_replica_batch = FLAGS.batch_size // replicas
  if FLAGS.jit_compile and FLAGS.sync_bn and replicas > 1:
    raise TrainError(
        "--jit_compile cannot be combined with --sync_bn on more than one "
        f"replica ({replicas} here): the sync-BN all-reduce cannot run inside "
        "the XLA-compiled forward/backward. Drop one of the two flags.")
  eval_batch = FLAGS.eval_batch_size or FLAGS.batch_size
  if eval_batch % replicas:
    raise TrainError(f"--eval_batch_size={eval_batch} must be a multiple of "
                     f"the {replicas} replicas")

  synthetic = FLAGS.dataset == "synthetic"
  model_dataset = FLAGS.synthetic_like if synthetic else FLAGS.dataset
  info = None
  if synthetic:
    train_examples = SYNTHETIC_TRAIN_EXAMPLES[model_dataset]
    num_classes = FLAGS.num_classes
    data_kind = model_dataset
  else:
    try:
      info = input_pipeline.read_manifest(FLAGS.data_dir)
      # Counted from the shards (their framing): steps per epoch, resume
      # positions and the eval padding follow from the counts.
      info, mismatches = input_pipeline.recount(info, ["train"] + (
          [info.find_eval_split()] if info.find_eval_split() else []))
    except input_pipeline.DataError as e:
      raise TrainError(str(e)) from None
    if "train" in mismatches:
      # An error, not a warning: the schedule and every resume position of
      # the run would follow from a count nobody can vouch for (a shard
      # replaced, cut at a record boundary, or the manifest edited).
      raise TrainError(
          f"{mismatches['train']}: the directory changed after data_prep "
          f"wrote it; {input_pipeline.repair_advice(FLAGS.data_dir)}")
    for split, mismatch in mismatches.items():
      logging.warning("%s; evaluation uses all %d of them", mismatch,
                      info.num_examples(split))
    train_examples = info.num_examples("train")
    num_classes = FLAGS.num_classes or info.num_classes
    if num_classes != info.num_classes:
      raise TrainError(
          f"--num_classes={FLAGS.num_classes} but {FLAGS.data_dir}/manifest"
          f".json lists {info.num_classes} classes; drop --num_classes to use "
          "the manifest's")
    data_kind = info.kind
  preprocessing = input_pipeline.preprocessing_for(
      data_kind, model_dataset, FLAGS.image_size, FLAGS.cifar_convention,
      FLAGS.augment, *augment_policy)
  steps_per_epoch = train_examples // FLAGS.batch_size
  if steps_per_epoch < 1:
    raise TrainError(f"the train split has {train_examples} examples, fewer "
                     f"than one --batch_size={FLAGS.batch_size}")
  total_steps = FLAGS.train_steps or max(
      1, int(round(FLAGS.epochs * steps_per_epoch)))
  try:
    schedule = schedules.Schedule(
        FLAGS.lr_schedule, FLAGS.lr, steps_per_epoch, total_steps,
        tuple(decay_epochs), FLAGS.lr_decay_factor, FLAGS.warmup_epochs)
  except ValueError as e:
    raise TrainError(str(e)) from None

  with strategy.scope():
    model = model_flags.build_model(dataset=model_dataset,
                                    num_classes=num_classes)
    model.set_sync_batch_norm(FLAGS.sync_bn)
    model.set_channel_multiple(channel_alignment.resolve(
        FLAGS.channel_multiple, FLAGS.dtype,
        channel_alignment.local_device_type()))
    if FLAGS.jit_compile and FLAGS.jit_scope == "unit":
      try:
        compile_units.jit_units(model, strategy.num_replicas_in_sync)
      except ValueError as e:
        raise TrainError(str(e)) from None
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name="global_step")
    decay_filter = (optim.default_decay_filter if FLAGS.decay_bn_and_bias
                    else optim.no_bn_no_bias_filter)
    try:
      optimizer = optim.NesterovSGD(
          model.trainable_variables, FLAGS.momentum, FLAGS.nesterov,
          FLAGS.weight_decay, decay_filter, name="optimizer")
    except ValueError as e:
      raise TrainError(f"optimizer flags: {e}") from None
    scaler = (loss_scale_lib.DynamicLossScale(name="loss_scale")
              if FLAGS.dtype == "float16" else None)
    averages = (ema_lib.Ema(ema_lib.averaged_variables(model),
                            FLAGS.ema_decay, name="ema")
                if FLAGS.ema_decay > 0 else None)
  objects = {"model": model, "optimizer": optimizer,
             "global_step": global_step}
  if scaler is not None:
    objects["loss_scale"] = scaler
  if averages is not None:
    objects[ema_lib.CHECKPOINT_KEY] = averages
  checkpoint = tf.train.Checkpoint(**objects)
  try:
    checkpointing.check_config(FLAGS.model_dir, model)
  except checkpointing.ConfigMismatchError as e:
    raise TrainError(str(e)) from None
  # Guards every float variable of the checkpoint against NaN/Inf.
  checkpointer = checkpointing.Checkpointer(
      FLAGS.model_dir, strategy, checkpoint, global_step,
      FLAGS.keep_checkpoints, optional=(ema_lib.CHECKPOINT_KEY,))
  restored = checkpointer.restore()
  if averages is not None and restored and not checkpointer.restored_all:
    logging.info("%s has no EMA: starting it from the restored weights",
                 restored)
    averages.reset()
  start_step = int(global_step.numpy())
  if restored:
    logging.info("resumed from %s at step %d", restored, start_step)
  class_names = input_pipeline.class_names_list(info, model.num_classes)

  def write_model_config():
    model_io.write_config(FLAGS.model_dir, model, {
        "source": "pyramidnet_tf.train",
        "data_dir": FLAGS.data_dir,
        "data": data_kind,
        "preprocessing": preprocessing.to_json(),
        "class_names": class_names,
        "ema_decay": FLAGS.ema_decay,
        "flags": {k: (v if isinstance(v, (int, float, str, bool, type(None)))
                      else str(v)) for k, v in _flag_values().items()},
    })
  # A fresh run writes the config after its first checkpoint, so a model dir
  # with a config always had one (see checkpointing: such a dir without an
  # intact checkpoint is refused instead of restarted).
  if chief and restored:
    write_model_config()
  elif chief:
    checkpointer.after_first_save(write_model_config)

  def train_input(context):
    pipelines = context.num_input_pipelines
    per_pipeline = context.num_replicas_in_sync // pipelines
    if synthetic:
      size = 224 if model_dataset == "imagenet" else (FLAGS.image_size or 32)
      return input_pipeline.synthetic_dataset(
          size, model.num_classes,
          context.get_per_replica_batch_size(FLAGS.batch_size), FLAGS.seed)
    return input_pipeline.train_dataset(
        info, preprocessing,
        context.get_per_replica_batch_size(FLAGS.batch_size), FLAGS.seed,
        start_step=start_step, num_pipelines=pipelines,
        pipeline_id=context.input_pipeline_id,
        replicas_per_pipeline=per_pipeline,
        cache=(info.is_cifar if FLAGS.cache_data is None
               else FLAGS.cache_data),
        deterministic=FLAGS.deterministic,
        shuffle_buffer=FLAGS.shuffle_buffer or None)

  dataset = strategy.distribute_datasets_from_function(train_input)
  iterator = iter(dataset)
  summaries = summaries_lib.Summaries(FLAGS.model_dir, chief)
  if start_step == 0:
    summaries.flags(_flag_values())
    # A second iterator over the same dataset: building another dataset
    # would trace its functions on fresh starts only, shifting TF's function
    # names and so missing the persistent XLA cache on the first resume.
    with input_pipeline.named_read_errors(info, ["train"], TrainError):
      first = strategy.experimental_local_results(next(iter(dataset)))
    summaries.images("train/augmented_images", first[0][0], 0)

  evaluate = None
  eval_split = info.find_eval_split() if info is not None else None
  if info is not None and eval_split is None:
    logging.warning("%s has no evaluation split (%s): training without "
                    "evaluation", info.manifest_path,
                    ", ".join(input_pipeline.EVAL_SPLITS))
  if eval_split is not None:
    evaluator = step_lib.EvalStep(strategy, model, FLAGS.dtype)
    pipelines = num_workers
    eval_steps = input_pipeline.eval_steps(
        info, eval_split, eval_batch // replicas, pipelines,
        replicas // pipelines)

    def eval_input(context):
      return input_pipeline.eval_dataset(
          info, preprocessing, context.get_per_replica_batch_size(eval_batch),
          eval_steps, eval_split, context.num_input_pipelines,
          context.input_pipeline_id,
          context.num_replicas_in_sync // context.num_input_pipelines)

    def eval_loop(eval_iterator):
      """Totals over every eval record; TrainError naming a bad shard."""
      with input_pipeline.named_read_errors(info, [eval_split], TrainError):
        totals = evaluator.loop(eval_iterator, tf.constant(eval_steps))
      try:
        input_pipeline.check_evaluated(info, eval_split, totals.numpy()[3])
      except input_pipeline.DataError as e:
        raise TrainError(str(e)) from None
      return totals

    def evaluate():
      eval_iterator = iter(strategy.distribute_datasets_from_function(
          eval_input))
      if averages is not None:
        with averages.swapped():  # evaluate the EMA weights
          totals = eval_loop(eval_iterator)
      else:
        totals = eval_loop(eval_iterator)
      metrics = step_lib.metrics_from_totals(totals.numpy())
      step_now = int(global_step.numpy())
      summaries.scalars("eval", {k: metrics[k] for k in (
          "loss", "top1_error", "top5_error")}, step_now)
      logging.info("eval at step %d on %s: %s", step_now, eval_split,
                   json.dumps(metrics))
      return dict(metrics, step=step_now, split=eval_split)

  train_step = step_lib.TrainStep(
      strategy, model, optimizer, schedule, global_step, FLAGS.batch_size,
      FLAGS.dtype, FLAGS.label_smoothing,
      FLAGS.jit_compile and FLAGS.jit_scope == "step", scaler,
      step_lib.Regularization(
          cutmix_prob=FLAGS.cutmix_prob, cutmix_beta=FLAGS.cutmix_beta,
          mixup_alpha=FLAGS.mixup_alpha, cutout_size=FLAGS.cutout_size,
          clip_grad_norm=FLAGS.clip_grad_norm, seed=FLAGS.seed),
      averages)
  checkpoint_every = FLAGS.checkpoint_every_steps or steps_per_epoch
  eval_every = int(round(FLAGS.eval_every_epochs * steps_per_epoch))
  cadence = loop.Cadence(
      total_steps=total_steps, steps_per_loop=FLAGS.steps_per_loop,
      log_every=FLAGS.log_every_steps, checkpoint_every=checkpoint_every,
      eval_every=eval_every if evaluate else 0,
      histogram_every=FLAGS.histogram_every_steps or checkpoint_every,
      profile=profile)
  sigterm = loop.SigtermFlag()
  sigterm.install()
  controller = loop.Controller(
      strategy, train_step, iterator, cadence, FLAGS.batch_size, num_workers,
      summaries, checkpointer, schedule, evaluate, sigterm,
      os.path.join(FLAGS.model_dir, "profile"))
  logging.info("training %s: %d replicas on %d worker(s), per-replica batch "
               "%d, %d steps/epoch, steps %d -> %d, channel multiple %d",
               model_dataset, replicas, num_workers, per_replica_batch,
               steps_per_epoch, start_step, total_steps,
               model.channel_multiple)
  if compile_cache.resolve_cache_dir(FLAGS.compile_cache_dir, FLAGS.model_dir,
                                     FLAGS.jit_compile):
    compile_cache.align_function_names()
  try:
    with input_pipeline.named_read_errors(info, ["train"], TrainError):
      train_metrics = controller.run()
  finally:
    sigterm.uninstall()
  final_step = int(global_step.numpy())
  if controller.preempted:
    result = {"preempted": True, "step": final_step}
  else:
    if final_step > start_step and not loop.Cadence.hit(final_step,
                                                        checkpoint_every):
      checkpointer.save()
    eval_metrics = controller.last_eval
    if (evaluate is not None and FLAGS.eval_at_end and
        (eval_metrics is None or eval_metrics["step"] != final_step)):
      eval_metrics = evaluate()
    result = {"step": final_step, "train": train_metrics,
              "eval": eval_metrics}
  summaries.flush()
  if model_dir_lock is not None:
    model_dir_lock.release()
  result["weights_fingerprint"] = weights_fingerprint(model)
  logging.info("result: %s", json.dumps(result))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  std_logging.getLogger().setLevel(std_logging.INFO)
  from pyramidnet_tf.training import checkpointing  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import loop
  from pyramidnet_tf.model_dir import access as model_dir
  try:
    train()
  except (TrainError, checkpointing.ConfigMismatchError) as e:
    sys.exit(f"pyramidnet_tf.train: error: {e}")
  except (loop.NonFiniteLossError, checkpointing.CheckpointError,
          model_dir.ModelDirError) as e:
    sys.exit(f"pyramidnet_tf.train: error: {e}")


def run():
  # The compile cache is set up while flags are parsed: TF reads TF_XLA_FLAGS
  # once, from an absl after-init callback that runs before main.
  app.run(cli.guard("pyramidnet_tf.train", main),
          flags_parser=compile_cache.parse_flags_and_configure)


if __name__ == "__main__":
  run()

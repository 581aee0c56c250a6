"""The training state: model, step counter, optimizer, loss scale, EMA.

Everything a checkpoint holds, built under the strategy's scope from the
config, with fine-tuning's frozen variables and learning-rate multipliers
(``finetune_run``) applied to the optimizer and the EMA.
"""

import dataclasses
from typing import Any

import tensorflow as tf

from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.model import network
from pyramidnet_tf.model_dir import ema as ema_lib
from pyramidnet_tf.runtime import compile_units
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import errors
from pyramidnet_tf.training import finetune_run
from pyramidnet_tf.training import loss_scale as loss_scale_lib
from pyramidnet_tf.training import optim

# The float16 loss scale's key in the checkpoint (absent in other dtypes).
LOSS_SCALE_KEY = "loss_scale"


def build_model(config: config_lib.TrainConfig, num_classes, strategy):
  """The network of ``config.model`` (call under ``strategy.scope()``)."""
  kwargs = dataclasses.asdict(config.model)
  kwargs.update(dataset=config.model_dataset, num_classes=num_classes)
  try:
    model = network.PyramidNet(**kwargs)
  except ValueError as e:
    raise errors.TrainError(f"invalid model flags: {e}") from None
  model.set_sync_batch_norm(config.runtime.sync_bn)
  model.set_channel_multiple(channel_alignment.resolve(
      config.runtime.channel_multiple, config.runtime.dtype,
      channel_alignment.local_device_type()))
  model.set_recompute(config.runtime.recompute)
  if config.jit_units:
    try:
      compile_units.jit_units(model, strategy.num_replicas_in_sync)
    except ValueError as e:
      raise errors.TrainError(str(e)) from None
  return model


@dataclasses.dataclass(frozen=True)
class TrainState:
  """What a checkpoint holds, built under the strategy's scope."""
  model: Any
  global_step: Any             # int64 tf.Variable
  optimizer: Any               # optim.NesterovSGD
  loss_scale: Any              # loss_scale.DynamicLossScale; None but float16
  averages: Any                # ema.Ema; None without --ema_decay
  checkpoint: Any              # tf.train.Checkpoint over all of the above


def build_state(config: config_lib.TrainConfig, num_classes, strategy,
                fine_tuning: finetune_run.FineTuning) -> TrainState:
  """Model, step counter, optimizer, loss scale, EMA and their checkpoint.

  Args:
    config: the run's configuration.
    num_classes: the data's class count (None: the model's default).
    strategy: the strategy they are built under.
    fine_tuning: which variables train, and at which learning rate.

  Raises:
    TrainError: an invalid model or optimizer setting.
  """
  schedule = config.schedule
  with strategy.scope():
    model = build_model(config, num_classes, strategy)
    global_step = tf.Variable(0, dtype=tf.int64, trainable=False,
                              name="global_step")
    decay_filter = (optim.default_decay_filter if schedule.decay_bn_and_bias
                    else optim.no_bn_no_bias_filter)
    trainable = fine_tuning.trainable(model)
    scales = trainable.lr_scales
    try:
      optimizer = optim.NesterovSGD(
          model.trainable_variables, schedule.momentum, schedule.nesterov,
          schedule.weight_decay, decay_filter, name="optimizer",
          lr_scale=lambda v: scales[id(v)])
    except ValueError as e:
      raise errors.TrainError(f"optimizer flags: {e}") from None
    scaler = (loss_scale_lib.DynamicLossScale(name="loss_scale")
              if config.runtime.dtype == "float16" else None)
    # Frozen weights and their BN statistics: their averages stay exact.
    averages = (ema_lib.Ema(ema_lib.averaged_variables(model),
                            schedule.ema_decay, name="ema",
                            fixed=trainable.fixed)
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

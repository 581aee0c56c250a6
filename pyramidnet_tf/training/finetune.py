"""Fine-tuning: start a run from another model directory, freeze a prefix of
the network, train the backbone at a fraction of the head's learning rate.

Why one module: ``--init_from``, ``--freeze`` and ``--backbone_lr_scale``
share one notion of the network's parts, and the trainer only has to ask
three questions (which architecture, which start values, which learning-rate
multiplier per variable). The rules that need no network (the flags'
choices, the architecture and regularisers taken from the source) are in
``finetune_rules``, which the command line checks before TensorFlow starts.

The rules:

* ``--init_from=DIR`` (a directory of ``import_torch`` or of the trainer)
  supplies the weights and BN statistics of its newest intact checkpoint,
  or of ``--init_checkpoint`` (``best``: the best evaluation's, or a
  path), nothing else: the run's optimiser slots, step and schedule start
  fresh. If the source was trained with an EMA, its averaged weights are
  taken (what ``evaluate`` and ``export`` of the source use by default);
  the new run's EMA, if any, starts from them.
  Architecture flags left off the command line are taken from the source's
  ``model_config.json``; those given must agree with it. The network's
  regularisers (``--drop_rate`` and the ShakeDrop settings, which change
  what the weights compute at evaluation too: ShakeDrop scales each branch
  by its keep probability) are the source's unless given; given ones are
  the fine-tune's own choice and win. The classifier is
  new (initialised as usual) when the data's class count, or its class
  names where both sides record them, differ from the source's; otherwise it
  is kept. The source's input normalisation (channel order, mean and std)
  is kept, so the new model directory records it for evaluate/export/predict.
  A run that finds its own checkpoint resumes from it and ignores the source
  (its own model_config.json then gives architecture and normalisation).
* ``--freeze``: ``none``, ``stem`` (first convolution and its BN),
  ``stages:N`` (the stem and the first N stages) or ``backbone`` (all but the
  classifier ``fc``). Frozen variables are left out of the gradient and of
  the optimiser's update (no weight decay, no momentum), and the frozen BNs
  run in inference mode, so their statistics do not move and their outputs
  do not depend on the batch.
* ``--backbone_lr_scale=F``: every variable except the classifier's kernel
  and bias is updated with F times the learning rate.
"""

import os
from typing import Dict, List, Optional

from pyramidnet_tf.data import augment
from pyramidnet_tf.model import layers
from pyramidnet_tf.model_dir import access
from pyramidnet_tf.model_dir import store
from pyramidnet_tf.training import finetune_rules as rules


def frozen_modules(model, freeze: str) -> List:
  """The submodules of ``model`` that ``--freeze`` holds fixed.

  Args:
    model: a ``PyramidNet``.
    freeze: the ``--freeze`` value.

  Raises:
    rules.FinetuneError: an invalid value, or more stages than the model has.
  """
  kind, count = rules.parse_freeze(freeze)
  if kind == "none":
    return []
  if kind == "backbone":
    return [m for name, m in _parts(model) if name != "fc"]
  if kind == "stages" and count > model.num_stages:
    raise rules.FinetuneError(f"--freeze=stages:{count}: the model has "
                        f"{model.num_stages} stages")
  modules = [model.conv1, model.bn1]
  for stage in model.stages[:count]:
    modules.extend(stage)
  return modules


def _parts(model):
  parts = [("conv1", model.conv1), ("bn1", model.bn1)]
  for index, stage in enumerate(model.stages):
    parts += [(f"layer{index + 1}", unit) for unit in stage]
  return parts + [("bn_final", model.bn_final), ("fc", model.fc)]


def freeze(model, freeze_value: str) -> List:
  """Puts the frozen BNs in inference mode; returns the frozen variables.

  Args:
    model: a ``PyramidNet`` (its ``BatchNorm.frozen`` flags are set).
    freeze_value: the ``--freeze`` value.

  Returns:
    The frozen trainable variables (those the optimiser must not touch).
  """
  frozen = []
  for module in frozen_modules(model, freeze_value):
    for bn in ([module] if isinstance(module, layers.BatchNorm) else
               [m for m in module.submodules
                if isinstance(m, layers.BatchNorm)]):
      bn.frozen = True
    frozen.extend(module.trainable_variables)
  return frozen


def lr_scales(model, frozen, backbone_lr_scale: float) -> Dict[int, float]:
  """Learning-rate multiplier per trainable variable (by ``id``).

  Args:
    model: a ``PyramidNet``.
    frozen: variables that get 0 (see ``freeze``).
    backbone_lr_scale: multiplier of every other variable but the
      classifier's kernel and bias (which get 1).
  """
  head = {id(model.fc.kernel), id(model.fc.bias)}
  frozen_ids = {id(v) for v in frozen}
  return {id(v): 0.0 if id(v) in frozen_ids else
          (1.0 if id(v) in head else float(backbone_lr_scale))
          for v in model.trainable_variables}


def source_normalisation(preprocessing) -> Dict:
  """The normalisation a source model was fed with, made explicit.

  Args:
    preprocessing: the source's ``Preprocessing`` (``preprocessing_of``).

  Returns:
    ``{"color", "mean", "std"}`` (0-255 units): the values
    ``dataclasses.replace`` puts into the new run's preprocessing.
  """
  if preprocessing.mean is not None:
    mean, std = preprocessing.mean, preprocessing.std
  elif preprocessing.kind == "cifar":
    mean, std = augment.cifar_stats(preprocessing.stats_dataset,
                                    preprocessing.convention)
  else:
    mean, std = augment.IMAGENET_MEAN, augment.IMAGENET_STD
  return {"color": preprocessing.color,
          "mean": tuple(float(m) for m in mean),
          "std": tuple(float(s) for s in std)}


def copy_weights(source, target, new_head: bool, source_dir: str) -> int:
  """Copies every variable of ``source`` into ``target`` by name.

  Names are the authors' state_dict keys (``PyramidNet.torch_variables``),
  so the two networks only need the same architecture.

  Args:
    source: the loaded source ``PyramidNet``.
    target: the run's network (e.g. under a strategy's scope).
    new_head: leave ``fc`` as initialised (its shape may differ).
    source_dir: the ``--init_from`` directory, for messages.

  Returns:
    The number of variables copied.

  Raises:
    rules.FinetuneError: a variable is missing or has another shape, naming it.
  """
  src, dst = source.torch_variables(), target.torch_variables()
  problems = []
  for key in sorted(set(src) ^ set(dst)):
    where = "the source" if key in src else "the flags model"
    problems.append(f"{key}: only in {where}")
  pairs = []
  for key, (variable, _) in dst.items():
    if key not in src or variable is None:
      continue
    if new_head and key.startswith("fc."):
      continue
    source_variable = src[key][0]
    if source_variable.shape != variable.shape:
      problems.append(f"{key}: {tuple(source_variable.shape)} in "
                      f"{source_dir}, {tuple(variable.shape)} here")
    pairs.append((source_variable, variable))
  if problems:
    raise rules.FinetuneError(
        f"--init_from={source_dir} does not fit the model: " +
        "; ".join(problems[:3]) +
        (f"; and {len(problems) - 3} more" if len(problems) > 3 else ""))
  for source_variable, variable in pairs:
    variable.assign(source_variable.read_value())
  return len(pairs)


def settings_source(init_from: str, model_dir: Optional[str]) -> str:
  """The directory whose model_config.json gives architecture and input
  normalisation: ``model_dir`` once the run has written its own (a resume,
  which then works even if the source is gone), else ``init_from``.

  Args:
    init_from: the ``--init_from`` directory.
    model_dir: the run's ``--model_dir`` (None: not known).
  """
  if model_dir and os.path.exists(os.path.join(model_dir, store.CONFIG_FILE)):
    return model_dir
  return init_from


def source_preprocessing(directory: str, image_size: int = 0,
                         convention: str = "pt"):
  """The preprocessing the model of ``directory`` expects (its recorded one,
  or the input convention import_torch recorded).

  Args:
    directory: the ``--init_from`` model directory.
    image_size: --image_size (used only when nothing is recorded).
    convention: --cifar_convention (likewise).
  """
  config = store.read_config(directory)
  return access.preprocessing_of(config.get("metadata", {}),
                                 config["model"], image_size, convention)


def load_source(directory: str, checkpoint: Optional[str] = None):
  """The source network with the weights its evaluate would use.

  Args:
    directory: the ``--init_from`` model directory.
    checkpoint: ``--init_checkpoint``: "best", a checkpoint path, or None
      for the newest intact one.

  Returns:
    (network, metadata, checkpoint path, whether EMA weights were taken).

  Raises:
    rules.FinetuneError: no intact checkpoint, or it does not fit its own
      model_config.json.
  """
  try:
    # Called outside the strategy's scope: plain variables, only read from.
    # By default the newest intact checkpoint, as evaluate and export take
    # it, with its averaged weights when the run kept them.
    opened = store.open_model(directory, checkpoint, use_ema="auto",
                              ema_required=False, flag="init_checkpoint")
  except (FileNotFoundError, ValueError) as e:
    raise rules.FinetuneError(f"--init_from={directory}: {e}") from None
  source, metadata, path = opened.model, opened.metadata, opened.checkpoint
  use_ema = opened.ema
  return source, metadata, path, use_ema

"""Fine-tuning as one training run applies it (``finetune`` holds the rules).

Why one object: ``--init_from``, ``--freeze`` and ``--backbone_lr_scale``
touch a run in three places: the input (fed as the source was fed), the
variables (which are frozen, each one's learning-rate multiplier) and the
start (the source's weights when the run has no checkpoint of its own).
``FineTuning`` is built once from the config and asked at each of them, so
the trainer walks ``finetune`` through this one door.
"""

import dataclasses
import logging
from typing import Any, Dict, List, Optional

from pyramidnet_tf.model import network as network_lib
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import errors
from pyramidnet_tf.training import finetune
from pyramidnet_tf.training import finetune_rules


@dataclasses.dataclass(frozen=True)
class Trainable:
  """What fine-tuning decides about the network's variables.

  Attributes:
    lr_scales: ``id(variable)`` -> learning-rate multiplier, for every
      trainable variable.
    fixed: the frozen modules' variables (weights and BN statistics), which
      the EMA keeps exact.
  """
  lr_scales: Dict[int, float]
  fixed: List[Any]


@dataclasses.dataclass(frozen=True)
class FineTuning:
  """The run's fine-tuning settings (all off: a run from scratch).

  Attributes:
    init_from: ``--init_from`` ("" for none).
    init_checkpoint: ``--init_checkpoint`` ("best", a path, or "" for the
      source's newest intact checkpoint).
    freeze: ``--freeze``.
    backbone_lr_scale: ``--backbone_lr_scale``.
    model_dir: the run's own ``--model_dir`` (the settings' source when
      resuming a fine-tuned run).
    regularisers: the run's dropout and ShakeDrop settings (names of
      ``finetune_rules.REGULARISER_FIELDS``), logged against the source's.
  """
  init_from: str
  init_checkpoint: str
  freeze: str
  backbone_lr_scale: float
  model_dir: str
  regularisers: Dict[str, Any]

  @classmethod
  def of(cls, config: config_lib.TrainConfig) -> "FineTuning":
    """The fine-tuning of ``config``."""
    settings = config.finetune
    return cls(init_from=settings.init_from,
               init_checkpoint=settings.init_checkpoint or "",
               freeze=settings.freeze,
               backbone_lr_scale=settings.backbone_lr_scale,
               model_dir=config.output.model_dir,
               regularisers={name: getattr(config.model, name)
                             for name in finetune_rules.REGULARISER_FIELDS})

  def preprocessing(self, preprocessing, image_size: int,
                    cifar_convention: str):
    """``preprocessing`` with the source's input normalisation, so its
    features mean what they meant; unchanged without ``--init_from``."""
    if not self.init_from:
      return preprocessing
    source = finetune.source_preprocessing(
        finetune.settings_source(self.init_from, self.model_dir),
        image_size, cifar_convention)
    return dataclasses.replace(preprocessing,
                               **finetune.source_normalisation(source))

  def trainable(self, model) -> Trainable:
    """Freezes ``--freeze``'s modules of ``model`` (their BNs in inference
    mode) and gives each variable its learning-rate multiplier.

    Raises:
      TrainError: a freeze the network does not have.
    """
    try:
      frozen = finetune.freeze(model, self.freeze)
      scales = finetune.lr_scales(model, frozen, self.backbone_lr_scale)
    except finetune_rules.FinetuneError as e:
      raise errors.TrainError(str(e)) from None
    if self.freeze == "backbone" and self.backbone_lr_scale != 1.0:
      logging.warning("--backbone_lr_scale=%g has no effect with "
                      "--freeze=backbone (the backbone is not trained)",
                      self.backbone_lr_scale)
    if frozen:
      logging.info("--freeze=%s: %d of %d trainable variables frozen (their "
                   "BNs in inference mode)", self.freeze, len(frozen),
                   len(model.trainable_variables))
    fixed = [v for m in finetune.frozen_modules(model, self.freeze)
             for v in m.variables]
    return Trainable(lr_scales=scales, fixed=fixed)

  def resumed_text(self) -> str:
    """What a resume says about ``--init_from`` (the run's own checkpoint
    wins)."""
    if not self.init_from:
      return ""
    return (f" (--init_from={self.init_from} not applied: the run's own "
            "checkpoint wins)")

  def initialise(self, model, averages,
                 class_names: Optional[List[str]]) -> None:
    """Copies the source's weights and BN statistics into a fresh run;
    nothing without ``--init_from``.

    Args:
      model: the run's network (built under the strategy's scope).
      averages: the run's ``ema.Ema`` or None; restarted from the copied
        weights.
      class_names: the data's class names (its manifest), or None.

    Raises:
      TrainError: the source cannot be read or does not fit the model.
    """
    if not self.init_from:
      return
    directory = self.init_from
    try:
      source, metadata, path, used_ema = finetune.load_source(
          directory, self.init_checkpoint or None)
      new_head = finetune_rules.needs_new_head(
          source.num_classes, metadata.get("class_names"), model.num_classes,
          class_names)
      copied = finetune.copy_weights(source, model, new_head, directory)
    except finetune_rules.FinetuneError as e:
      raise errors.TrainError(str(e)) from None
    if averages is not None:
      averages.reset()
    logging.info(
        "initialised from %s%s: %d variables (weights and BN statistics; "
        "optimiser state and step start fresh); classes %d -> %d: %s",
        path, " (its EMA weights)" if used_ema else "", copied,
        source.num_classes, model.num_classes,
        "new classifier" if new_head else "classifier kept")
    logging.info("regularisers: %s", finetune_rules.regularisers_text(
        self.regularisers, network_lib.config_of(source)))

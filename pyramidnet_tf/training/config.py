"""The whole configuration of a training run, as one frozen, typed value.

Why one value: every part of the trainer (model, input, schedule, step,
outer loop, checkpoints) reads from the same ``TrainConfig`` handed down from
the CLI, instead of each reaching for command-line flags. The CLI layer
(``pyramidnet_tf.cli.train_config``) builds and validates it once; the
trainer writes it next to its checkpoints (``train_config.json``, with the
record of every launch of the run) and
derives the flags record of ``model_config.json`` from it, so no setting can
be left out of either.

Field names are the trainer's flag names (``--lr`` is
``config.schedule.lr``), grouped by what they decide.
"""

import dataclasses
import json
import os
from typing import Any, Dict, Optional, Sequence, Tuple

from pyramidnet_tf import options

# Written into the model directory by the chief of every run.
CONFIG_FILE = "train_config.json"
# The "source" the trainer records in model_config.json's metadata; other
# sources (pytorch, torch7, caffe, imgclsmob) are import_torch's.
TRAINER_SOURCE = "pyramidnet_tf.train"


def imported_dir_text(model_dir: str, source: str) -> str:
  """Why a directory of ``import_torch`` cannot be a run's --model_dir.

  Args:
    model_dir: the directory.
    source: its model_config.json's metadata "source".
  """
  return (f"--model_dir={model_dir} holds weights imported by "
          f"pyramidnet_tf.import_torch ({source}), not a training run to "
          f"resume: to train from them pass --init_from={model_dir} and a "
          "new --model_dir")


class ConfigError(ValueError):
  """A setting, or a combination of them, that cannot be trained; the
  message names the flag and is shown to the user without a traceback."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The network (``PyramidNet`` constructor arguments)."""
  dataset: str = "cifar10"
  depth: int = 110
  alpha: float = 48.0
  bottleneck: Optional[bool] = None
  mode: str = "add"
  num_classes: Optional[int] = None
  drop_rate: float = 0.0
  rounding: str = "py3"
  shakedrop: bool = False
  shakedrop_pl: float = 0.5
  shakedrop_level: str = "batch"


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where the examples come from and how they are preprocessed."""
  data_dir: Optional[str] = None
  synthetic_like: str = "cifar10"
  image_size: int = 0
  augment: str = "auto"
  autoaugment: str = "none"
  randaugment: Optional[Tuple[int, int]] = None   # (N, M); None: off
  cifar_convention: str = "pt"
  cache_data: Optional[bool] = None
  shuffle_buffer: int = 0
  eval_batch_size: int = 0
  data_service: str = ""
  data_service_mode: str = "distributed_epoch"
  data_service_job_name: str = ""
  data_service_timeout: float = 300.0


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
  """Batch, length, learning rate, optimiser and regularisers."""
  batch_size: int = 128
  epochs: float = 300.0
  train_steps: Optional[int] = None
  lr: float = 0.1
  lr_schedule: str = "step"
  lr_decay_epochs: Tuple[int, ...] = (150, 225)
  lr_decay_factor: float = 0.1
  warmup_epochs: float = 0.0
  momentum: float = 0.9
  nesterov: bool = True
  weight_decay: float = 1e-4
  decay_bn_and_bias: bool = True
  label_smoothing: float = 0.0
  cutmix_prob: float = 0.0
  cutmix_beta: float = 1.0
  mixup_alpha: float = 0.0
  cutout_size: int = 0
  clip_grad_norm: float = 0.0
  ema_decay: float = 0.0


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
  """Devices, distribution, precision, compilation and randomness."""
  distribution: str = "auto"
  cluster_resolver: str = "tf_config"
  slurm_port_base: int = 0  # 0: derived from SLURM_JOB_ID
  k8s_num_workers: int = 0
  k8s_port: int = options.K8S_DEFAULT_PORT
  k8s_service: Optional[str] = None
  k8s_job_name: Optional[str] = None
  cpu_devices: int = 1
  collective_timeout: float = 600.0
  dtype: str = "float32"
  channel_multiple: int = 0
  jit_compile: bool = False
  jit_scope: str = "step"
  compile_cache_dir: Optional[str] = None
  sync_bn: bool = False
  steps_per_loop: int = 100
  seed: int = 0
  deterministic: bool = False
  recompute: str = "none"


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """The model directory, how a rerun resumes it (``training.resume``) and
  the outer loop's cadence."""
  model_dir: Optional[str] = None
  checkpoint_every_steps: int = 0
  keep_checkpoints: int = 5
  eval_every_epochs: float = 1.0
  eval_at_end: bool = True
  log_every_steps: int = 100
  histogram_every_steps: int = 0
  profile_steps: Tuple[int, int] = (0, 0)   # [start, stop); (0, 0): off
  rebase_resume: bool = False   # accept step-changing settings on resume


@dataclasses.dataclass(frozen=True)
class FinetuneConfig:
  """Where the start values come from and what stays fixed
  (``training.finetune``)."""
  init_from: Optional[str] = None
  init_checkpoint: Optional[str] = None
  freeze: str = "none"
  backbone_lr_scale: float = 1.0


SECTIONS = (("model", ModelConfig), ("data", DataConfig),
            ("schedule", ScheduleConfig), ("runtime", RuntimeConfig),
            ("output", OutputConfig), ("finetune", FinetuneConfig))


def field_names() -> Tuple[str, ...]:
  """Every setting's name (the trainer's flag names), in section order."""
  return tuple(f.name for _, section in SECTIONS
               for f in dataclasses.fields(section))


def _plain(value):
  """JSON-friendly form of a setting (tuples become lists)."""
  if isinstance(value, tuple):
    return [_plain(v) for v in value]
  return value


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """One training run, section by section."""
  model: ModelConfig = ModelConfig()
  data: DataConfig = DataConfig()
  schedule: ScheduleConfig = ScheduleConfig()
  runtime: RuntimeConfig = RuntimeConfig()
  output: OutputConfig = OutputConfig()
  finetune: FinetuneConfig = FinetuneConfig()

  @classmethod
  def from_values(cls, values: Dict[str, Any]) -> "TrainConfig":
    """Builds the config from a flat ``{setting name: value}`` mapping.

    Args:
      values: one entry per name of ``field_names()``; names missing from it
        keep their defaults.

    Raises:
      KeyError: ``values`` names a setting the config does not have.
    """
    unknown = sorted(set(values) - set(field_names()))
    if unknown:
      raise KeyError(f"not training settings: {', '.join(unknown)}")
    sections = {}
    for name, section in SECTIONS:
      sections[name] = section(**{
          f.name: values[f.name] for f in dataclasses.fields(section)
          if f.name in values})
    return cls(**sections)

  def flat(self) -> Dict[str, Any]:
    """``{setting name: value}`` over all sections (JSON-friendly)."""
    return {f.name: _plain(getattr(getattr(self, name), f.name))
            for name, section in SECTIONS
            for f in dataclasses.fields(section)}

  def to_json(self) -> Dict[str, Dict[str, Any]]:
    """``{section: {setting: value}}`` (JSON-friendly)."""
    return {name: {f.name: _plain(getattr(getattr(self, name), f.name))
                   for f in dataclasses.fields(section)}
            for name, section in SECTIONS}

  # Derived settings, named once here instead of recomputed at every use.

  @property
  def synthetic(self) -> bool:
    """Generated data (``--dataset=synthetic``) instead of a data dir."""
    return self.model.dataset == "synthetic"

  @property
  def model_dataset(self) -> str:
    """The architecture family the network is built for."""
    return self.data.synthetic_like if self.synthetic else self.model.dataset

  @property
  def eval_batch(self) -> int:
    """Global evaluation batch (the training batch unless set)."""
    return self.data.eval_batch_size or self.schedule.batch_size

  @property
  def jit_step(self) -> bool:
    """One XLA program for the whole forward/backward."""
    return self.runtime.jit_compile and self.runtime.jit_scope == "step"

  def experiment_values(self) -> dict:
    """The settings that define the experiment, for TensorBoard's hparams.

    The network, the data's treatment, the schedule and optimiser, the
    regularisers, dtype, sync BN and seed; not where files go, cadences,
    cluster plumbing or speed knobs that leave the results unchanged.
    """
    values = dataclasses.asdict(self.model)
    data = self.data
    values.update(image_size=data.image_size, augment=data.augment,
                  autoaugment=data.autoaugment,
                  randaugment=(",".join(str(v) for v in data.randaugment)
                               if data.randaugment else "none"),
                  cifar_convention=data.cifar_convention)
    if self.synthetic:
      values["synthetic_like"] = data.synthetic_like
    schedule = dataclasses.asdict(self.schedule)
    schedule["lr_decay_epochs"] = ",".join(
        str(v) for v in self.schedule.lr_decay_epochs)
    values.update(schedule)
    values.update(dtype=self.runtime.dtype, sync_bn=self.runtime.sync_bn,
                  seed=self.runtime.seed)
    return values

  @property
  def jit_units(self) -> bool:
    """One XLA program per residual unit."""
    return self.runtime.jit_compile and self.runtime.jit_scope == "unit"


def write(model_dir: str, config: TrainConfig,
          launches: Sequence[Dict[str, Any]] = ()) -> str:
  """Writes ``<model_dir>/train_config.json``; returns the path.

  The file holds the settings of the latest launch, section by section
  (what ``read`` returns), and under "launches" the record of every launch
  of the run (``training.resume``): it is rewritten whole, atomically, so
  a crash leaves the previous version.

  Args:
    model_dir: the run's model directory (must exist).
    config: the configuration of this launch.
    launches: every launch's record, oldest first, this one last
      (``resume.Launch.to_json()``); empty: none recorded.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gs:// too)
  path = os.path.join(model_dir, CONFIG_FILE)
  temp = path + ".tmp"
  payload: Dict[str, Any] = dict(config.to_json())
  if launches:
    payload["launches"] = list(launches)
  with tf.io.gfile.GFile(temp, "w") as f:
    f.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
  tf.io.gfile.rename(temp, path, overwrite=True)
  return path


def read_json(model_dir: str) -> Optional[Dict[str, Any]]:
  """The parsed ``train_config.json`` of ``model_dir`` (launches included),
  or None when there is none.

  Raises:
    ConfigError: the file is not valid JSON, naming it.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gs:// too)
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise ConfigError(f"{path} is not valid JSON ({e}); restore it from a "
                        "backup, or pass a new --model_dir") from None


def read(model_dir: str) -> TrainConfig:
  """The config of the latest launch a run wrote into ``model_dir`` (see
  ``write``; its "launches" are read by ``read_json``).

  Raises:
    FileNotFoundError: the directory has no ``train_config.json``.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (gs:// too)
  path = os.path.join(model_dir, CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f"{path}: no such file")
  with tf.io.gfile.GFile(path) as f:
    sections = json.load(f)
  values = {}
  for name, section in SECTIONS:
    for f in dataclasses.fields(section):
      if f.name in sections.get(name, {}):
        value = sections[name][f.name]
        values[f.name] = tuple(value) if isinstance(value, list) else value
  return TrainConfig.from_values(values)

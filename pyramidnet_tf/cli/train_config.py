"""The trainer's flags -> one validated ``TrainConfig``.

Why here: the command line is the only place that knows about flags. Every
check that needs no TensorFlow runs before the strategy is created (which
must be the first TensorFlow op of a multi-worker run), and every message
names the flag to change. Below this module the trainer reads only the
config.
"""

from typing import Optional, Sequence, Tuple

from absl import app
from absl import flags

from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.cli import train_flags
from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.training import config as config_lib

FLAGS = flags.FLAGS

ConfigError = config_lib.ConfigError


def _int_list(name: str, values: Sequence[str]) -> Tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise ConfigError(f"--{name} takes comma-separated integers; got "
                      f"{','.join(values)!r}") from None


def _randaugment(flag_values) -> Optional[Tuple[int, int]]:
  """Parsed --randaugment, checked together with --autoaugment."""
  from pyramidnet_tf.data import autoaugment  # pylint: disable=g-import-not-at-top
  try:
    randaugment = autoaugment.parse_randaugment(flag_values.randaugment)
    autoaugment.make_policy(flag_values.autoaugment, randaugment)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return randaugment


def _check_numbers(f) -> None:
  """Ranges and combinations of the numeric flags."""
  if not f.model_dir:
    raise ConfigError("--model_dir is required (checkpoints, "
                      "model_config.json and TensorBoard events go there)")
  if f.dataset != "synthetic" and not f.data_dir:
    raise ConfigError(
        "--data_dir is required: prepare data first, e.g. `python -m "
        "data_prep.cifar --dataset=cifar10 --source=cifar-10-python.tar.gz "
        "--output_dir=DIR` (or data_prep.imagenet / data_prep.folder), or "
        "pass --dataset=synthetic to benchmark without data")
  if f.batch_size < 1:
    raise ConfigError(f"--batch_size must be >= 1; got {f.batch_size}")
  if f.train_steps is not None and f.train_steps < 1:
    raise ConfigError(f"--train_steps must be >= 1; got {f.train_steps}")
  # Finite even when --train_steps overrides it; > 0 when it is used.
  epochs = dict(low=0, low_open=True) if f.train_steps is None else {}
  problem = (cli.number_problem("epochs", f.epochs, **epochs) or
             train_flags.number_problem())
  if problem:
    raise ConfigError(problem)
  if f.steps_per_loop < 1:
    raise ConfigError(f"--steps_per_loop must be >= 1; got "
                      f"{f.steps_per_loop}")
  if not 0.0 <= f.label_smoothing < 1.0:
    raise ConfigError(f"--label_smoothing must be in [0, 1); got "
                      f"{f.label_smoothing}")
  if not 0.0 <= f.cutmix_prob <= 1.0:
    raise ConfigError(f"--cutmix_prob must be in [0, 1] (0 = off); got "
                      f"{f.cutmix_prob}")
  if f.cutout_size < 0:
    raise ConfigError(f"--cutout_size must be >= 0 (0 = off); got "
                      f"{f.cutout_size}")
  try:  # the device only matters for auto, which is always valid
    channel_alignment.resolve(f.channel_multiple, f.dtype, "CPU")
  except ValueError as e:
    raise ConfigError(str(e)) from None
  if f.recompute not in train_flags.RECOMPUTE_CHOICES:
    raise ConfigError(f"--recompute must be one of "
                      f"{', '.join(train_flags.RECOMPUTE_CHOICES)}; got "
                      f"{f.recompute!r}")
  if not 0.0 <= f.ema_decay < 1.0:
    raise ConfigError(f"--ema_decay must be in [0, 1) (0 = off); got "
                      f"{f.ema_decay}")


def _profile_steps(f) -> Tuple[int, int]:
  profile = _int_list("profile_steps", f.profile_steps)
  if profile and (len(profile) != 2 or not 0 <= profile[0] < profile[1]):
    raise ConfigError("--profile_steps takes START,STOP with 0 <= START < "
                      f"STOP; got {','.join(f.profile_steps)!r}")
  return profile or (0, 0)


def _decay_epochs(f) -> Tuple[int, ...]:
  decay_epochs = _int_list("lr_decay_epochs", f.lr_decay_epochs)
  if any(epoch < 0 for epoch in decay_epochs):
    raise ConfigError("--lr_decay_epochs takes 0-based epochs >= 0; got "
                      f"{','.join(f.lr_decay_epochs)!r}")
  return decay_epochs


def _check_architecture(f) -> None:
  synthetic = f.dataset == "synthetic"
  try:
    cli.check_image_size(
        "image_size", f.image_size,
        f.synthetic_like if synthetic else f.dataset,
        "32 for CIFAR-architecture data, 224 for ImageNet")
    if not synthetic:
      model_flags.architecture()  # UsageError naming the bad model flag
  except (cli.UserError, app.UsageError) as e:
    raise ConfigError(str(e)) from None


def check_checkpoint_flags(f=FLAGS) -> None:
  """Checkpoint flags and --model_dir (writable), before TensorFlow starts.

  Raises:
    ConfigError: naming the flag or the unusable directory.
  """
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  if f.keep_checkpoints < 1:
    raise ConfigError(f"--keep_checkpoints must be >= 1 (the newest N are "
                      f"kept); got {f.keep_checkpoints}")
  if f.checkpoint_every_steps < 0:
    raise ConfigError(f"--checkpoint_every_steps must be >= 0 (0 = once per "
                      f"epoch); got {f.checkpoint_every_steps}")
  try:
    model_dir_lib.check_writable(f.model_dir)
  except model_dir_lib.ModelDirError as e:
    raise ConfigError(str(e)) from None


def from_flags(f=FLAGS, check_model_dir: bool = True
               ) -> config_lib.TrainConfig:
  """The validated configuration of the parsed trainer flags.

  Args:
    f: parsed absl flag values (default: the program's).
    check_model_dir: also check the checkpoint flags and that --model_dir is
      usable (off for callers that only validate flag values).

  Returns:
    The run's ``TrainConfig``; list flags arrive parsed (integers).

  Raises:
    ConfigError: the first problem found, naming its flag.
  """
  _check_numbers(f)
  randaugment = _randaugment(f)
  profile = _profile_steps(f)
  decay_epochs = _decay_epochs(f)
  _check_architecture(f)
  if check_model_dir:
    check_checkpoint_flags(f)
  values = {name: f[name].value for name in config_lib.field_names()}
  values.update(randaugment=randaugment, profile_steps=profile,
                lr_decay_epochs=decay_epochs)
  return config_lib.TrainConfig.from_values(values)

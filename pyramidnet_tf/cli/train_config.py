"""The trainer's flags -> one validated ``TrainConfig``.

Why here: the command line is the only place that knows about flags. Every
check that needs no TensorFlow runs before the strategy is created (which
must be the first TensorFlow op of a multi-worker run), and every message
names the flag to change. Below this module the trainer reads only the
config.
"""

import os
from typing import List, Optional, Sequence, Tuple

from absl import app
from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf import paths
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.cli import train_flags
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import finetune_rules

FLAGS = flags.FLAGS

ConfigError = config_lib.ConfigError


def _int_list(name: str, values: Sequence[str],
              problems: List[str]) -> Tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    problems.append(f"--{name} takes comma-separated integers; got "
                    f"{','.join(values)!r}")
    return ()


def _randaugment(f, problems: List[str]) -> Optional[Tuple[int, int]]:
  """Parsed --randaugment (its magnitude on the one documented scale),
  checked together with --autoaugment; no TensorFlow import."""
  try:
    randaugment = options.parse_randaugment(f.randaugment)
  except ValueError as e:
    problems.append(str(e))
    return None
  if randaugment and f.autoaugment != "none":
    problems.append("--autoaugment and --randaugment are alternatives; "
                    "set --autoaugment=none or drop --randaugment")
    return None
  return randaugment


def _check_numbers(f, problems: List[str]) -> None:
  """Required flags, ranges and combinations of the numeric flags."""
  if not f.model_dir:
    problems.append("--model_dir is required (checkpoints, "
                    "model_config.json and TensorBoard events go there)")
  if f.dataset != "synthetic" and not f.data_dir:
    problems.append(
        "--data_dir is required: prepare data first, e.g. `python -m "
        "data_prep.cifar --dataset=cifar10 --source=cifar-10-python.tar.gz "
        "--output_dir=DIR` (or data_prep.imagenet / data_prep.folder), or "
        "pass --dataset=synthetic to benchmark without data")
  if f.batch_size < 1:
    problems.append(f"--batch_size must be >= 1; got {f.batch_size}")
  if f.train_steps is not None and f.train_steps < 1:
    problems.append(f"--train_steps must be >= 1; got {f.train_steps}")
  # Finite even when --train_steps overrides it; > 0 when it is used.
  epochs = dict(low=0, low_open=True) if f.train_steps is None else {}
  problems.extend(p for p in [cli.number_problem("epochs", f.epochs, **epochs)]
                  if p)
  problems.extend(train_flags.number_problems())
  problems.extend(cli.flag_problems(f))
  if f.steps_per_loop < 1:
    problems.append(f"--steps_per_loop must be >= 1; got "
                    f"{f.steps_per_loop}")
  if not 0.0 <= f.label_smoothing < 1.0:
    problems.append(f"--label_smoothing must be in [0, 1); got "
                    f"{f.label_smoothing}")
  if not 0.0 <= f.cutmix_prob <= 1.0:
    problems.append(f"--cutmix_prob must be in [0, 1] (0 = off); got "
                    f"{f.cutmix_prob}")
  if f.cutout_size < 0:
    problems.append(f"--cutout_size must be >= 0 (0 = off); got "
                    f"{f.cutout_size}")
  if f.recompute not in train_flags.RECOMPUTE_CHOICES:
    problems.append(f"--recompute must be one of "
                    f"{', '.join(train_flags.RECOMPUTE_CHOICES)}; got "
                    f"{f.recompute!r}")
  if not 0.0 <= f.ema_decay < 1.0:
    problems.append(f"--ema_decay must be in [0, 1) (0 = off); got "
                    f"{f.ema_decay}")


def _check_cluster(f, problems: List[str], environment: bool = True
                   ) -> None:
  """The cluster resolver's flags and (``environment``) the environment it
  reads, before the strategy is created."""
  from pyramidnet_tf.runtime import cluster_env  # pylint: disable=g-import-not-at-top
  if f.cluster_resolver != "k8s_indexed":
    # Read by the strategy whatever the resolver (k8s_indexed checks that
    # it is unset or its own below).
    try:
      cluster_env.tf_config()
    except ValueError as e:
      problems.append(str(e))
  if f.cluster_resolver not in ("slurm", "k8s_indexed"):
    return
  if f.distribution not in ("auto", "multi_worker"):
    problems.append(f"--cluster_resolver={f.cluster_resolver} needs "
                      "--distribution=auto or multi_worker; got "
                      f"--distribution={f.distribution}")
  if not environment:
    return
  try:
    if f.cluster_resolver == "slurm":
      cluster_env.check_slurm_environment()
      cluster_env.slurm_port_base(f.slurm_port_base)
    else:
      cluster_env.use_k8s_indexed_tf_config(
          cluster_env.k8s_indexed_tf_config(f.k8s_num_workers, f.k8s_port,
                                            f.k8s_service, f.k8s_job_name),
          check_only=True)
  except ValueError as e:
    problems.append(str(e))


def _profile_steps(f, problems: List[str]) -> Tuple[int, int]:
  profile = _int_list("profile_steps", f.profile_steps, problems)
  if profile and (len(profile) != 2 or not 0 <= profile[0] < profile[1]):
    problems.append("--profile_steps takes START,STOP with 0 <= START < "
                    f"STOP; got {','.join(f.profile_steps)!r}")
    return (0, 0)
  return profile or (0, 0)


def _decay_epochs(f, problems: List[str]) -> Tuple[int, ...]:
  decay_epochs = _int_list("lr_decay_epochs", f.lr_decay_epochs, problems)
  if any(epoch < 0 for epoch in decay_epochs):
    problems.append("--lr_decay_epochs takes 0-based epochs >= 0; got "
                    f"{','.join(f.lr_decay_epochs)!r}")
  return decay_epochs


def _check_architecture(f, problems: List[str],
                        dataset: Optional[str] = None) -> None:
  """--image_size and the model flags. With --init_from the architecture is
  the source's, checked (and any given model flag compared with it) by
  ``_finetune_architecture``, so only --image_size is checked here, against
  ``dataset`` (the source's family; None when the source could not be
  read)."""
  synthetic = f.dataset == "synthetic"
  if f.init_from and dataset is None:
    return   # the --init_from problem is the one reported
  try:
    cli.check_image_size(
        "image_size", f.image_size,
        dataset or (f.synthetic_like if synthetic else f.dataset),
        "32 for CIFAR-architecture data, 224 for ImageNet")
  except cli.UserError as e:
    problems.append(str(e))
  if not synthetic and not f.init_from:
    try:
      model_flags.architecture()  # UsageError naming the bad model flag
    except app.UsageError as e:
      problems.append(str(e))


def _check_given_architecture(f, problems: List[str]) -> None:
  """With --init_from, when its source is not read: the model flags are
  checked when --dataset is given (the others then complete a network
  whose source might be any); else only --image_size's minimum."""
  if f["dataset"].present:
    _check_architecture(f, problems)
    return
  try:
    cli.check_image_size("image_size", f.image_size, "cifar10",
                         "the --init_from source's size")
  except cli.UserError as e:
    problems.append(str(e))


def _checkpoint_problems(f, problems: List[str]) -> None:
  if f.keep_checkpoints < 1:
    problems.append(f"--keep_checkpoints must be >= 1 (the newest N are "
                    f"kept); got {f.keep_checkpoints}")
  if f.checkpoint_every_steps < 0:
    problems.append(f"--checkpoint_every_steps must be >= 0 (0 = once per "
                    f"epoch); got {f.checkpoint_every_steps}")
  problems.extend(p for p in [paths.data_dir_as_model_dir_problem(f.model_dir)]
                  if p)


def _check_data_service(f, problems: List[str]) -> None:
  """--data_service and its companions (format and combinations)."""
  import re  # pylint: disable=g-import-not-at-top
  if not f.data_service:
    for name in ("data_service_mode", "data_service_job_name",
                 "data_service_timeout"):
      if f[name].present:
        problems.append(f"--{name} needs --data_service=grpc://HOST:PORT")
    return
  from pyramidnet_tf.runtime import service_address  # pylint: disable=g-import-not-at-top
  try:
    service_address.parse_address("data_service", f.data_service)
  except cli.UserError as e:
    problems.append(str(e))
  if f.dataset == "synthetic":
    problems.append("--data_service has nothing to prepare with "
                    "--dataset=synthetic; drop one of the two")
  if f.deterministic:
    problems.append("--data_service cannot be --deterministic: the order "
                    "in which service workers deliver batches varies; "
                    "drop one of the two")
  if f.cache_data:
    problems.append("--cache_data does not apply with --data_service (the "
                    "service workers read the records); drop it")
  problem = cli.number_problem("data_service_timeout", f.data_service_timeout,
                               low=0, low_open=True)
  if problem:
    problems.append(problem)
  if f.data_service_job_name and not re.match(r"^[A-Za-z0-9._\-]+$",
                                              f.data_service_job_name):
    problems.append("--data_service_job_name takes letters, digits and "
                    f". _ -; got {f.data_service_job_name!r}")


def _finetune_architecture(f, read_source: bool = True) -> Optional[dict]:
  """Checks --init_from, --init_checkpoint, --freeze and
  --backbone_lr_scale; returns the architecture and regulariser settings
  the source gives, with the regularisers given on the command line (None
  without --init_from, or when not ``read_source``: the flag values alone
  are checked)."""
  if (not f.init_from and f.freeze == "none" and
      f.backbone_lr_scale == 1.0 and not f.init_checkpoint):
    return None  # no fine-tuning: nothing to read, no TensorFlow import
  try:
    finetune_rules.parse_freeze(f.freeze)
  except finetune_rules.FinetuneError as e:
    raise ConfigError(str(e)) from None
  if not f.init_from:
    for name, unset in (("freeze", f.freeze == "none"),
                        ("backbone_lr_scale", f.backbone_lr_scale == 1.0),
                        ("init_checkpoint", not f.init_checkpoint)):
      if not unset:
        raise ConfigError(f"--{name} fine-tunes a pretrained model: it needs "
                          "--init_from=MODEL_DIR (a directory of import_torch "
                          "or of the trainer)")
    return None
  if f.dataset == "synthetic":
    raise ConfigError("--init_from needs real data (--data_dir), not "
                      "--dataset=synthetic")
  if f.model_dir and os.path.abspath(f.init_from) == os.path.abspath(
      f.model_dir):
    raise ConfigError(f"--init_from={f.init_from} is --model_dir itself; "
                      "rerunning in a model dir resumes it anyway: drop "
                      "--init_from, or pass a new --model_dir")
  if not read_source:
    return None
  # Reading the source loads TensorFlow (the checkpoint's index).
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import finetune  # pylint: disable=g-import-not-at-top
  settings = finetune.settings_source(f.init_from, f.model_dir)
  try:
    source = store.read_config(settings)
    if settings == f.init_from:   # else a resume: the source may be gone
      store.find_checkpoint(f.init_from, f.init_checkpoint,
                            flag="init_checkpoint")
  except FileNotFoundError as e:
    raise ConfigError(f"--init_from={f.init_from}: {e}") from None
  except ValueError as e:
    raise ConfigError(f"--init_from={f.init_from}: model_config.json is not "
                      f"valid JSON ({e})") from None
  given = {name: f[name].value for name in finetune_rules.ARCHITECTURE_FIELDS
           if f[name].present}
  try:
    resolved = finetune_rules.resolve_architecture(
        settings, source.get("model", {}), given)
    resolved.update(finetune_rules.resolve_regularisers(
        source.get("model", {}),
        {name: f[name].value for name in finetune_rules.REGULARISER_FIELDS
         if f[name].present}))
    finetune_rules.check_freeze_fits(f.freeze, resolved["dataset"])
  except KeyError as e:
    raise ConfigError(f"--init_from={f.init_from}: model_config.json has no "
                      f"{e} in its model section") from None
  except finetune_rules.FinetuneError as e:
    raise ConfigError(str(e)) from None
  return resolved


def check_checkpoint_flags(f=FLAGS) -> None:
  """Checkpoint flags and --model_dir (writable), before TensorFlow starts.

  Raises:
    ConfigError: naming the flag or the unusable directory.
  """
  problems = []
  _checkpoint_problems(f, problems)
  if problems:
    raise ConfigError(cli.problems_text(problems))
  _check_model_dir(f)


def _check_imported(model_dir: str) -> None:
  """Refuses a local directory of import_torch as --model_dir (the trainer
  refuses remote ones once TensorFlow reads them)."""
  import json  # pylint: disable=g-import-not-at-top
  path = os.path.join(model_dir, "model_config.json")
  if "://" in model_dir or not os.path.isfile(path):
    return
  try:
    with open(path) as f:
      source = json.load(f).get("metadata", {}).get(
          "source", config_lib.TRAINER_SOURCE)
  except (OSError, ValueError, AttributeError):
    return   # the trainer names what is wrong with the file
  if source != config_lib.TRAINER_SOURCE:
    raise ConfigError(config_lib.imported_dir_text(model_dir, source))


def _check_model_dir(f) -> None:
  _check_imported(f.model_dir)
  from pyramidnet_tf.model_dir import access as model_dir_lib  # pylint: disable=g-import-not-at-top
  try:
    model_dir_lib.check_writable(f.model_dir)
  except model_dir_lib.ModelDirError as e:
    raise ConfigError(str(e)) from None


def from_flags(f=FLAGS, check_model_dir: bool = True,
               check_environment: bool = True) -> config_lib.TrainConfig:
  """The validated configuration of the parsed trainer flags.

  Every problem of the command line is found before any is reported, so a
  user fixes them in one go; the model directory is checked last, once the
  flags are right.

  Args:
    f: parsed absl flag values (default: the program's).
    check_model_dir: also check the checkpoint flags, that --model_dir is
      usable and that --data_dir holds a manifest (off for callers that
      only validate flag values).
    check_environment: also read what the flags point at: the
      --init_from model directory (its architecture fills the model flags)
      and the cluster resolver's environment (Slurm's variables, the
      Kubernetes pod's). Off, the flag values alone are checked
      (``PYRAMIDNET_TF_CHECK_FLAGS``) and nothing imports TensorFlow.

  Returns:
    The run's ``TrainConfig``; list flags arrive parsed (integers).

  Raises:
    ConfigError: every problem found, each naming its flag.
  """
  problems = []
  _check_numbers(f, problems)
  randaugment = _randaugment(f, problems)
  profile = _profile_steps(f, problems)
  decay_epochs = _decay_epochs(f, problems)
  source_architecture = None
  try:
    source_architecture = _finetune_architecture(f, check_environment)
  except ConfigError as e:
    problems.append(str(e))
  if not check_environment and f.init_from:
    # The source supplies what is not given; check only the given flags.
    _check_given_architecture(f, problems)
  else:
    _check_architecture(f, problems,
                        (source_architecture or {}).get("dataset"))
  _check_data_service(f, problems)
  _check_cluster(f, problems, check_environment)
  if check_model_dir:
    _checkpoint_problems(f, problems)
    if f.dataset != "synthetic":
      problems.extend(p for p in [paths.data_dir_problem(f.data_dir)] if p)
  if problems:
    raise ConfigError(cli.problems_text(problems))
  if check_model_dir and f.model_dir:
    _check_model_dir(f)
  values = {name: f[name].value for name in config_lib.field_names()}
  values.update(randaugment=randaugment, profile_steps=profile,
                lr_decay_epochs=decay_epochs)
  values.update(source_architecture or {})
  return config_lib.TrainConfig.from_values(values)

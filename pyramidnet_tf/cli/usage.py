"""``--help`` by task: the flags a user sets, grouped, each with its default.

absl's ``--help`` lists only the flags the main module defines (none, for
CLIs whose flags live in ``cli/``) and ``--helpfull`` lists every flag of the
process grouped by the module that defines it. Here each tool names the
flags a user reaches for, in task groups (model, data, schedule, ...);
``--helpfull`` adds the remaining knobs (test hooks, cluster ports, compile
scopes, ...) and absl's own flags. ``tests/cli/test_usage.py`` fails when a
flag of a tool is in neither list, so a new flag is placed on purpose.
"""

import textwrap
from typing import List, Sequence, Tuple

from absl import flags

Groups = Sequence[Tuple[str, Sequence[str]]]

_MODEL = ("dataset", "depth", "alpha", "bottleneck", "mode", "num_classes",
          "rounding")
_CLUSTER = ("distribution", "cluster_resolver", "collective_timeout",
            "k8s_num_workers", "k8s_port", "k8s_service", "k8s_job_name")

TRAIN_GROUPS: Groups = (
    ("Model", _MODEL),
    ("Data", ("data_dir", "image_size", "augment", "cifar_convention",
              "data_service", "data_service_mode", "data_service_job_name",
              "data_service_timeout")),
    ("Schedule and optimiser", (
        "batch_size", "epochs", "train_steps", "lr", "lr_schedule",
        "lr_decay_epochs", "lr_decay_factor", "warmup_epochs", "momentum",
        "nesterov", "weight_decay", "decay_bn_and_bias", "clip_grad_norm",
        "seed")),
    ("Regularisers", (
        "shakedrop", "shakedrop_pl", "shakedrop_level", "drop_rate",
        "label_smoothing", "autoaugment", "randaugment", "cutout_size",
        "cutmix_prob", "cutmix_beta", "mixup_alpha", "ema_decay")),
    ("Precision and speed", (
        "dtype", "jit_compile", "channel_multiple", "sync_bn", "recompute",
        "deterministic")),
    ("Checkpoints, evaluation and logging", (
        "model_dir", "rebase_resume", "checkpoint_every_steps",
        "keep_checkpoints",
        "eval_every_epochs", "eval_at_end", "eval_batch_size",
        "log_every_steps", "profile_steps")),
    ("Fine-tuning", ("init_from", "freeze", "backbone_lr_scale")),
    ("Cluster", _CLUSTER),
)
# Shown by --helpfull only.
TRAIN_KNOBS = ("cpu_devices", "slurm_port_base", "jit_scope",
               "histogram_every_steps", "synthetic_like", "compile_cache_dir",
               "cache_data", "shuffle_buffer", "steps_per_loop")

EVALUATE_GROUPS: Groups = (
    ("What to evaluate", ("model_dir", "checkpoint", "use_ema", "data_dir",
                          "split")),
    ("Precision and speed", ("eval_batch_size", "dtype", "channel_multiple")),
    ("Input", ("image_size", "cifar_convention")),
    ("Cluster", _CLUSTER),
)
EVALUATE_KNOBS = ("cpu_devices", "slurm_port_base")

EXPORT_GROUPS: Groups = (
    ("What to export", ("model_dir", "checkpoint", "use_ema", "export_dir")),
    ("Serving", ("data_dir", "image_size", "cifar_convention", "top_k")),
)
EXPORT_KNOBS = ()

EXPORT_TORCH_GROUPS: Groups = (
    ("What to export", ("model_dir", "checkpoint", "use_ema", "output",
                        "overwrite")),
)
EXPORT_TORCH_KNOBS = ()

PREDICT_GROUPS: Groups = (("Prediction", ("saved_model", "json")),)
PREDICT_KNOBS = ()

DESCRIBE_GROUPS: Groups = (
    ("Model", _MODEL + ("drop_rate", "shakedrop", "shakedrop_pl",
                        "shakedrop_level")),
    ("Report", ("image_size", "json", "show_widths")),
    ("Training memory", ("batch_size", "dtype", "recompute", "replicas",
                         "device", "channel_multiple")),
)
# describe accepts every trainer flag so that a training flagfile can be
# described as it is; only the model flags matter.
DESCRIBE_KNOBS = None  # every other flag

IMPORT_GROUPS: Groups = (
    ("Source and destination", ("checkpoint", "format", "output_dir",
                                "overwrite", "trust_checkpoint")),
    ("Model (checked against the file)", _MODEL + (
        "drop_rate", "shakedrop", "shakedrop_pl", "shakedrop_level")),
)
IMPORT_KNOBS = ()

DATA_SERVICE_GROUPS: Groups = (
    ("Server", ("role", "port", "dispatcher", "work_dir", "worker_address")),
)
DATA_SERVICE_KNOBS = ("worker_timeout", "heartbeat_interval")

_FLAGFILE_OPTIONS = """\
Command-line files:
  --flagfile=FILE
      Read flags from FILE (one per line); later flags override earlier ones."""
_RECIPE_OPTIONS = """\
  --recipe=NAME
      A flagfile shipped with the package, by name (e.g. cifar10/pyramidnet110_a48);
      works after `pip install`, from any directory.
  --recipes
      List the shipped flagfiles and exit."""
_MORE_OPTIONS = """\
  --helpfull
      Every flag, including the advanced ones and absl's logging flags.
  --verbosity=1
      TensorFlow's own log lines, absl log prefixes and tracebacks of errors."""


def _default_text(flag) -> str:
  value = flag.default
  if isinstance(flag, flags.BooleanFlag) or flag.flag_type() == "bool":
    if value is None:
      return "unset"
    return "on" if value else "off"
  if value is None:
    return "no default"
  if isinstance(value, (list, tuple)):
    return ",".join(str(v) for v in value) or "empty"
  return str(flag.default_as_str).strip("'") if flag.default_as_str else str(
      value)


def _flag_lines(flag, width: int) -> List[str]:
  boolean = flag.flag_type() == "bool"
  name = f"--[no]{flag.name}" if boolean else f"--{flag.name}"
  default = _default_text(flag)
  head = f"  {name} ({default if default == 'no default' else 'default: ' + default})"
  text = " ".join((flag.help or "").split())  # enums start with <a|b|c>:
  body = textwrap.wrap(text, width=width, initial_indent="      ",
                       subsequent_indent="      ")
  return [head] + body


def defined_names(flag_values=flags.FLAGS) -> List[str]:
  """Flags defined by this project's modules (not absl's or other ones)."""
  names = set()
  for module, module_flags in flag_values.flags_by_module_dict().items():
    # absl names a module by its import name, the main one by its path.
    if (module.startswith(("pyramidnet_tf", "data_prep", "__main__")) or
        "/pyramidnet_tf/" in module or "/data_prep/" in module):
      names.update(flag.name for flag in module_flags)
  return sorted(names)


def knobs(groups: Groups, listed_knobs, flag_values=flags.FLAGS
          ) -> List[str]:
  """The project flags of a tool that --help leaves to --helpfull."""
  grouped = {name for _, names in groups for name in names}
  if listed_knobs is not None:
    return [name for name in listed_knobs if name in flag_values]
  return [name for name in defined_names(flag_values) if name not in grouped]


def help_text(prog: str, doc: str, groups: Groups, listed_knobs=(), *,
              full: bool = False, flag_values=flags.FLAGS,
              width: int = 92) -> str:
  """The tool's help: its docstring, then its flags by group.

  Args:
    prog: the tool, e.g. "pyramidnet_tf.train".
    doc: its module docstring (what it does, example commands).
    groups: (title, flag names) in the order shown.
    listed_knobs: flags shown only with ``full``; None = every project flag
      not in ``groups``.
    full: also list the knobs and every other flag of the process.
    flag_values: where the flags are defined.
    width: text width of the help paragraphs.
  """
  lines = [f"usage: python -m {prog} [flags]", ""]
  lines += [line.rstrip() for line in (doc or "").strip().splitlines()]
  shown = set()
  for title, names in groups:
    present = [name for name in names if name in flag_values]
    if not present:
      continue
    lines += ["", f"{title}:"]
    for name in present:
      lines += _flag_lines(flag_values[name], width)
      shown.add(name)
  extra = knobs(groups, listed_knobs, flag_values)
  if full:
    if extra:
      lines += ["", "Advanced:"]
      for name in extra:
        lines += _flag_lines(flag_values[name], width)
        shown.add(name)
    rest = sorted(name for name in _unique_names(flag_values)
                  if name not in shown)
    if rest:
      lines += ["", "Other flags (absl logging, flag files):"]
      for name in rest:
        lines += _flag_lines(flag_values[name], width)
  lines += ["", _FLAGFILE_OPTIONS]
  if "depth" in flag_values:  # the tools that take model flags
    lines.append(_RECIPE_OPTIONS)
  lines.append(_MORE_OPTIONS)
  if not full and extra:
    lines += ["", f"{len(extra)} advanced flags ({', '.join(extra[:4])}"
              f"{', ...' if len(extra) > 4 else ''}): --helpfull"]
  return "\n".join(lines) + "\n"


def _unique_names(flag_values) -> List[str]:
  names = []
  for name in flag_values:
    if flag_values[name].name == name:  # not a one-letter alias
      names.append(name)
  return names

"""``--help`` by task: each tool's flag groups (the formatter, shared with
data_prep, is ``pyramidnet_tf.console_base.help_text``).

absl's ``--help`` lists only the flags the main module defines (none, for
CLIs whose flags live in ``cli/``) and ``--helpfull`` lists every flag of the
process grouped by the module that defines it. Here each tool names the
flags a user reaches for, in task groups (model, data, schedule, ...);
``--helpfull`` adds the remaining knobs (test hooks, cluster ports, compile
scopes, ...) and absl's own flags. ``tests/cli/test_usage.py`` fails when a
flag of a tool is in neither list, so a new flag is placed on purpose.
"""

from pyramidnet_tf.console_base import Groups
from pyramidnet_tf.console_base import defined_names
from pyramidnet_tf.console_base import help_text
from pyramidnet_tf.console_base import knobs

__all__ = ["Groups", "defined_names", "help_text", "knobs"]  # the formatter

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
    ("Fine-tuning", ("init_from", "init_checkpoint", "freeze",
                     "backbone_lr_scale")),
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

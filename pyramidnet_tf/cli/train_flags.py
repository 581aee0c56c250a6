"""The trainer's absl flags (model flags come from model_flags, shared ones
from common_flags). Defaults are the paper's CIFAR recipe (docs/recipes.md, CIFAR)."""

from typing import List

from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import common_flags  # pylint: disable=unused-import # noqa: F401
from pyramidnet_tf.cli import compile_cache_flags  # pylint: disable=unused-import # noqa: F401
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import model_flags  # pylint: disable=unused-import # noqa: F401
from pyramidnet_tf.model import widths

# Each default is its setting's dataclass default (training.config).
_default = config_flags.default

flags.DEFINE_enum("augment", _default("augment"), list(options.AUGMENTATIONS),
                  "Training augmentation. auto: CIFAR pad-and-crop + flip for "
                  "data_prep.cifar data, ImageNet-style distorted crop + "
                  "jitter + lighting + flip for ImageNet and image folders. "
                  "cifar on an image folder: resize to --image_size, then "
                  "pad-and-crop + flip (small images such as digits).")
flags.DEFINE_enum("synthetic_like", _default("synthetic_like"),
                  list(widths.DATASETS),
                  "With --dataset=synthetic: the architecture and data shape "
                  "(32x32 CIFAR or 224x224 ImageNet) to benchmark.")
flags.DEFINE_integer("batch_size", _default("batch_size"),
                     "Global batch size (split evenly over all replicas).")
flags.DEFINE_float("epochs", _default("epochs"),
                   "Training length in epochs (of the train "
                   "split, steps per epoch = examples // batch size).")
flags.DEFINE_integer("train_steps", _default("train_steps"),
                     "Training length in steps; "
                     "overrides --epochs.")
flags.DEFINE_float("lr", _default("lr"), "Peak learning rate for --batch_size.")
flags.DEFINE_enum("lr_schedule", _default("lr_schedule"),
                  list(options.SCHEDULES),
                  "step: x --lr_decay_factor at each of --lr_decay_epochs "
                  "(0-based epochs, as PyTorch); cosine: per-step cosine to "
                  "0.")
flags.DEFINE_list("lr_decay_epochs", _default("lr_decay_epochs"),
                  "Epochs at which --lr_schedule=step decays.")
flags.DEFINE_float("lr_decay_factor", _default("lr_decay_factor"),
                   "Step-schedule decay factor.")
flags.DEFINE_float("warmup_epochs", _default("warmup_epochs"),
                   "Linear LR warmup length in epochs.")
flags.DEFINE_float("momentum", _default("momentum"), "SGD momentum.")
flags.DEFINE_bool("nesterov", _default("nesterov"),
                  "Nesterov momentum (PyTorch form).")
flags.DEFINE_float("weight_decay", _default("weight_decay"),
                   "Coupled L2 (added to the gradient before momentum) on all "
                   "trainable variables, as the authors' code.")
flags.DEFINE_bool("decay_bn_and_bias", _default("decay_bn_and_bias"),
                  "Apply --weight_decay to BN gamma/beta and the classifier "
                  "bias too (authors' recipe). --nodecay_bn_and_bias "
                  "excludes them.")
flags.DEFINE_float("label_smoothing", _default("label_smoothing"),
                   "Label smoothing in [0, 1).")
flags.DEFINE_float("cutmix_prob", _default("cutmix_prob"),
                   "CutMix (clovaai/CutMix-PyTorch) probability per "
                   "replica mini-batch; 0 = off (0.5 in the CutMix "
                   "PyramidNet recipe). With --mixup_alpha > 0 too, each "
                   "batch gets CutMix with this probability, else Mixup "
                   "(timm's switch). Train top-1/top-5 count the unmixed "
                   "labels.")
flags.DEFINE_float("cutmix_beta", _default("cutmix_beta"),
                   "CutMix lambda ~ Beta(beta, beta); must be > 0.")
flags.DEFINE_float("mixup_alpha", _default("mixup_alpha"),
                   "Mixup lambda ~ Beta(alpha, alpha) on every replica "
                   "mini-batch (unless --cutmix_prob picks CutMix); 0 = off. "
                   "Train top-1/top-5 count the unmixed labels.")
flags.DEFINE_integer("cutout_size", _default("cutout_size"),
                     "Cutout (DeVries & Taylor): zero one square of this side "
                     "(centre anywhere, clipped at the border) per training "
                     "image after normalisation, before CutMix/Mixup; 0 = "
                     "off (16 in the Fast AutoAugment recipe).")
flags.DEFINE_float("clip_grad_norm", _default("clip_grad_norm"),
                   "Clip the all-reduced gradient by global norm (as "
                   "tf.clip_by_global_norm / torch clip_grad_norm_; float16:"
                   " after unscaling; before weight decay); 0 = off (5 in "
                   "the AutoAugment/ShakeDrop recipes).")
flags.DEFINE_float("ema_decay", _default("ema_decay"),
                   "Exponential moving average of all weights (BN statistics "
                   "included), ema = decay * ema + (1 - decay) * w after "
                   "each step, in [0, 1); 0 = off. Kept in the checkpoints; "
                   "evaluation during training, pyramidnet_tf.evaluate and "
                   "pyramidnet_tf.export then use the averaged weights.")
flags.DEFINE_bool("jit_compile", _default("jit_compile"),
                  "XLA-compile the forward/backward.")
flags.DEFINE_enum(
    "jit_scope", _default("jit_scope"), list(options.JIT_SCOPES),
    "With --jit_compile, what one XLA program covers. step: the whole "
    "forward/backward (fastest steady state); unit: each residual unit's "
    "forward and backward separately (stem, head, loss and update stay "
    "TensorFlow ops).")
# The network's ``RECOMPUTE`` choices (model/network.py), named here without
# importing TensorFlow.
RECOMPUTE_CHOICES = ("none", "unit")
flags.DEFINE_enum(
    "recompute", _default("recompute"), list(RECOMPUTE_CHOICES),
    "What the backward pass recomputes instead of keeping. none: every "
    "activation the gradient needs is kept from the forward pass. unit: only "
    "each residual unit's input is kept and the unit's forward runs again in "
    "the backward pass (about one more forward per step for a fraction of "
    "the activation memory; same loss, gradients, BN statistics and "
    "ShakeDrop draws). For the widest/deepest networks.")
flags.DEFINE_integer("steps_per_loop", _default("steps_per_loop"),
                     "Train steps per host call (one tf.function, tf.range "
                     "loop); capped by the log/checkpoint/eval cadence.")
flags.DEFINE_bool("sync_bn", _default("sync_bn"),
                  "Batch-norm moments over all replicas (one all-reduce of "
                  "sums, squared sums and counts per BN).")
flags.DEFINE_integer("checkpoint_every_steps",
                     _default("checkpoint_every_steps"),
                     "Checkpoint cadence in steps, >= 0; 0 = once per epoch. "
                     "A checkpoint is always written at the end.")
flags.DEFINE_bool(
    "rebase_resume", _default("rebase_resume"),
    "Resume --model_dir although settings that change what a step means "
    "differ from the run's (batch size, data, augmentation, seed, loss "
    "regularisers, --freeze; otherwise refused with the list): the run "
    "continues from the examples it has seen, the input at that example and "
    "the schedule at examples seen / the new batch size. Recorded in its "
    "train_config.json.")
flags.DEFINE_integer("keep_checkpoints", _default("keep_checkpoints"),
                     "Checkpoints kept in --model_dir, >= 1 (the newest; "
                     "older ones are deleted as new ones are written).")
flags.DEFINE_float("eval_every_epochs", _default("eval_every_epochs"),
                   "Evaluation cadence in epochs (0 = only at the end).")
flags.DEFINE_integer("log_every_steps", _default("log_every_steps"),
                     "Train-metric summaries and log lines cadence.")
flags.DEFINE_integer("histogram_every_steps", _default("histogram_every_steps"),
                     "Weight and BN-statistics histograms every N steps "
                     "(TensorBoard's Histograms/Distributions); 0 = off.")
flags.DEFINE_integer("seed", _default("seed"),
                     "Seed of initialisation, shuffling and "
                     "augmentation.")
flags.DEFINE_list("profile_steps", _default("profile_steps"),
                  "START,STOP: profiler trace (XPlane) of these global steps, "
                  "written to --model_dir/tensorboard/train/plugins/profile/; "
                  "TensorBoard's Profile tab shows it with the profile extra "
                  "(pip install -e '.[cpu,profile]').")
flags.DEFINE_bool("deterministic", _default("deterministic"),
                  "Deterministic ops and input order (slower): repeated runs "
                  "and resumed runs give identical weights.")
flags.DEFINE_bool("cache_data", _default("cache_data"),
                  "Cache the encoded records in memory; default: on for "
                  "CIFAR, off otherwise.")
flags.DEFINE_integer("shuffle_buffer", _default("shuffle_buffer"),
                     "Record shuffle buffer; 0 = 50000 for CIFAR, 10000 "
                     "otherwise.")
flags.DEFINE_bool("eval_at_end", _default("eval_at_end"),
                  "Evaluate after the last step.")
flags.DEFINE_enum("autoaugment", _default("autoaugment"),
                  list(options.AUTOAUGMENT_POLICIES),
                  "AutoAugment policy added to training augmentation, "
                  "before normalisation (after pad-crop-flip with "
                  "--cifar_convention=pt or distorted crop-flip; before the "
                  "pad-crop-flip with fb): cifar10 = the paper's 25 CIFAR-10 "
                  "sub-policies (used with PyramidNet-272 + ShakeDrop, "
                  "docs/recipes.md), imagenet = its ImageNet policy.")
flags.DEFINE_list("randaugment", _default("randaugment"),
                  "N,M: RandAugment instead, N operations per image drawn "
                  "from its 14, each at magnitude M, an integer 0..10 on "
                  "AutoAugment's scale (10 = its strongest = torchvision's "
                  "RandAugment magnitude 30 of 31 bins for rotate, shear, "
                  "solarize and posterize: torchvision's m is M = m / 3; "
                  "above 10 the operations degenerate and are refused), e.g. "
                  "2,9. Empty: off. Not with --autoaugment.")
flags.DEFINE_string("data_service", _default("data_service"),
                    "grpc://HOST:PORT of a tf.data service dispatcher "
                    "(python -m pyramidnet_tf.data_service): the training "
                    "input is read, decoded and augmented on its workers "
                    "instead of this host's CPUs. Empty: local input. "
                    "Evaluation stays local.")
flags.DEFINE_enum("data_service_mode", _default("data_service_mode"),
                  list(options.SERVICE_MODES),
                  "With --data_service: distributed_epoch = the service "
                  "workers share each epoch file by file, every example once "
                  "per epoch; parallel_epochs = every service worker "
                  "produces whole epochs of its own (examples repeat across "
                  "workers).")
flags.DEFINE_string("data_service_job_name", _default("data_service_job_name"),
                    "With --data_service: the job all trainer workers of this "
                    "run share (letters, digits, . _ -); empty: derived from "
                    "--model_dir. The resume step is appended, so a resumed "
                    "run starts a fresh job.")
flags.DEFINE_float("data_service_timeout", _default("data_service_timeout"),
                   "With --data_service: seconds to wait for the dispatcher "
                   "to accept connections, for the first batch, and for "
                   "training to advance once it runs, before ending the run "
                   "with one line naming the address (instead of waiting "
                   "forever on a dispatcher or workers that are gone).")

flags.DEFINE_string(
    "init_from", _default("init_from"),
    "Fine-tune: start from the weights and BN statistics of this model dir "
    "(written by import_torch or the trainer; its EMA weights if it kept an "
    "EMA), not its optimiser state or step. Architecture flags left unset "
    "are taken from its model_config.json, those set must agree; its "
    "--drop_rate and ShakeDrop settings are taken unless given; the "
    "classifier is new when the data's classes differ; its input "
    "normalisation is kept. A checkpoint of --model_dir itself wins (resume).")
flags.DEFINE_string(
    "init_checkpoint", _default("init_checkpoint"),
    "With --init_from: which of its checkpoints to start from: best (the "
    "best evaluation's, kept in --init_from/best) or a checkpoint path "
    "(absolute or relative to --init_from); default: its newest intact one.")
flags.DEFINE_string(
    "freeze", _default("freeze"),
    "With --init_from: none, stem (first conv + BN), stages:N (the stem and "
    "the first N stages) or backbone (all but the classifier fc). Frozen "
    "variables get no update (no weight decay, no momentum); their BNs run "
    "in inference mode, so the statistics stay as loaded.")
flags.DEFINE_float(
    "backbone_lr_scale", _default("backbone_lr_scale"),
    "With --init_from: learning rate of every variable but the classifier's "
    "kernel and bias, as a fraction of --lr's schedule; 0 < F <= 1.")

# The range of each numeric trainer and model flag that its absl type leaves
# open: "nan" and "inf" parse as floats, absl's bounds let nan through, and a
# negative count or rate means nothing. Keyword arguments of
# cli.number_problem; train._validate_flags checks them all before any
# TensorFlow work, describe checks MODEL_NUMBER_FLAGS. --epochs is checked
# there too (it only needs to be > 0 without --train_steps).
NUMBER_RANGES = {
    "lr": dict(low=0, low_open=True),
    "lr_decay_factor": dict(low=0, high=1, low_open=True),
    "warmup_epochs": dict(low=0, note="0 = no warmup"),
    "momentum": dict(low=0, high=1, high_open=True),
    "weight_decay": dict(low=0, note="0 = off"),
    "cutmix_beta": dict(low=0, low_open=True),
    "mixup_alpha": dict(low=0, note="0 = off"),
    "clip_grad_norm": dict(low=0, note="0 = off"),
    "eval_every_epochs": dict(low=0, note="0 = only at the end"),
    "log_every_steps": dict(low=0, integer=True, note="0 = only at the end"),
    "histogram_every_steps": dict(low=0, integer=True, note="0 = off"),
    "seed": dict(low=0, high=2**31 - 1, integer=True),
    "shuffle_buffer": dict(low=0, integer=True, note="0 = the default"),
    "drop_rate": dict(low=0, high=1, high_open=True),
    "shakedrop_pl": dict(low=0, high=1),
    "num_classes": dict(low=0, integer=True,
                        note="0 or unset = the dataset's"),
    "backbone_lr_scale": dict(low=0, high=1, low_open=True),
}
MODEL_NUMBER_FLAGS = ("drop_rate", "shakedrop_pl", "num_classes")


def number_problems(names=None) -> List[str]:
  """Why each of ``names`` (default: every flag of NUMBER_RANGES) is out of
  its range; empty when all are fine."""
  problems = []
  for name in names or NUMBER_RANGES:
    problem = cli.number_problem(name, flags.FLAGS[name].value,
                                 **NUMBER_RANGES[name])
    if problem:
      problems.append(problem)
  return problems

"""The choices of every enumerated option, in one TensorFlow-free module.

The libraries that implement the choices (``data.augment``,
``runtime.distribute``, ...) import TensorFlow; the command-line tools
define their flags from these tuples without it, so flags are parsed and
checked, and ``--help`` answered, before TensorFlow starts. Each library
re-exports its tuple under its old name.
"""

# data.preprocessing: the training augmentation family.
AUGMENTATIONS = ("auto", "cifar", "imagenet")
# data.autoaugment: the AutoAugment policies ("none": off).
AUTOAUGMENT_POLICIES = ("none", "cifar10", "imagenet")
# data.augment: CIFAR normalisation conventions (PyramidNet-PyTorch, fb.resnet).
CIFAR_CONVENTIONS = ("pt", "fb")
# runtime.distribute: tf.distribute strategies and cluster resolvers.
DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker")
CLUSTER_RESOLVERS = ("tf_config", "slurm", "k8s_indexed")
# runtime.compile_units: what one XLA program covers.
JIT_SCOPES = ("step", "unit")
# training.schedules: learning-rate schedules.
SCHEDULES = ("step", "cosine")
# training.step: compute dtypes (variables stay float32).
DTYPES = ("float32", "bfloat16", "float16")
# model.shakedrop: the granularity of ShakeDrop's random draws.
SHAKEDROP_LEVELS = ("batch", "sample", "pixel")
# data.pipeline: how tf.data service workers split the training input.
SERVICE_MODES = ("distributed_epoch", "parallel_epochs")
# convert.importer: the weight files import_torch reads ("auto": by content).
# --use_ema of evaluate, export and export_torch (model_dir.ema.should_use).
USE_EMA_CHOICES = ("auto", "yes", "no")

IMPORT_FORMATS = ("auto", "pytorch", "npz", "torch7", "caffe")
# runtime.distribute: the port of every worker of a Kubernetes Indexed Job.
K8S_DEFAULT_PORT = 2222
# data.autoaugment: RandAugment's magnitude scale, AutoAugment's 0..10 (TF's
# m / 10). Above 10 the operations leave their domain (Solarize inverts
# every pixel, Posterize keeps no bits at 20, blends and angles extrapolate),
# so larger magnitudes are refused instead of silently degenerating.
RANDAUGMENT_MAX_MAGNITUDE = 10
RANDAUGMENT_SCALE = (
    "magnitude on AutoAugment's 0..10 scale, 10 = its strongest = "
    "torchvision's RandAugment magnitude 30 (of 31 bins) for rotate, shear, "
    "solarize and posterize")


def parse_randaugment(values):
  """--randaugment=N,M as (N, M); empty (or only blanks) -> None (off).

  Args:
    values: the flag's list of strings.

  Returns:
    ``(N, M)`` or None.

  Raises:
    ValueError: unless there are exactly two integers with N >= 1 and
      0 <= M <= ``RANDAUGMENT_MAX_MAGNITUDE``; one line naming the flag, the
      scale and the value.
  """
  values = [str(v).strip() for v in values if str(v).strip()]
  if not values:
    return None
  try:
    n, m = (int(v) for v in values)
  except ValueError:
    n = m = None
  if n is None or n < 1 or not 0 <= m <= RANDAUGMENT_MAX_MAGNITUDE:
    raise ValueError(
        "--randaugment must be N,M with integers N >= 1 (operations per "
        f"image) and 0 <= M <= {RANDAUGMENT_MAX_MAGNITUDE} ("
        f"{RANDAUGMENT_SCALE}; torchvision's magnitude m is M = m / 3), e.g. "
        f"2,9; got {','.join(values)!r}")
  return n, m

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
# runtime.distribute: the port of every worker of a Kubernetes Indexed Job.
K8S_DEFAULT_PORT = 2222

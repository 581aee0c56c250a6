"""absl flags shared by the trainer and the evaluator, defined once.

Why a module of its own: train.py and evaluate.py both need --data_dir,
--model_dir, --distribution, ...; absl refuses a flag defined twice, and tests
import both CLIs into one process.

The numeric flags carry absl validators, so an out-of-range or non-finite
value is a one-line flag error while flags are parsed, before any
TensorFlow work, in every CLI that defines them.
"""

from absl import flags

from pyramidnet_tf import options
from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import errors as cli

# Each default is its setting's dataclass default (training.config).
_default = config_flags.default

flags.DEFINE_string("data_dir", _default("data_dir"),
                    "Directory written by data_prep (manifest.json + "
                    "TFRecord shards).")
flags.DEFINE_string("model_dir", _default("model_dir"),
                    "Checkpoints, model_config.json and TensorBoard events.")
flags.DEFINE_enum("distribution", _default("distribution"),
                  list(options.DISTRIBUTIONS),
                  "auto: multi_worker with a multi-task TF_CONFIG, mirrored "
                  "with several GPUs (or --cpu_devices > 1), else "
                  "one_device.")
flags.DEFINE_enum("cluster_resolver", _default("cluster_resolver"),
                  list(options.CLUSTER_RESOLVERS),
                  "Where a multi-worker cluster comes from: tf_config = the "
                  "TF_CONFIG variable (by hand, launch_local, Kubeflow TFJob);"
                  " slurm = TF's SlurmClusterResolver from the SLURM_* "
                  "variables of an srun job step (implies multi_worker); "
                  "k8s_indexed = a pod of a Kubernetes Indexed Job: worker i "
                  "is the pod with JOB_COMPLETION_INDEX i, reached as "
                  "<job>-<i>.<--k8s_service>:<--k8s_port>.")
flags.DEFINE_integer("slurm_port_base", _default("slurm_port_base"),
                     "With --cluster_resolver=slurm: the port of the first "
                     "worker on each node (the next ones use +1, +2, ...). "
                     "0 = derived from SLURM_JOB_ID: a block of 16 ports in "
                     "20000-32767 per job, so jobs sharing a node (and "
                     "Jupyter's 8888) never collide.")
flags.DEFINE_integer("k8s_num_workers", _default("k8s_num_workers"),
                     "With --cluster_resolver=k8s_indexed (required): the "
                     "Indexed Job's completions, one worker per pod.")
flags.DEFINE_integer("k8s_port", _default("k8s_port"),
                     "With --cluster_resolver=k8s_indexed: the port every "
                     "worker pod listens on.")
flags.DEFINE_string("k8s_service", _default("k8s_service"),
                    "With --cluster_resolver=k8s_indexed (required): the "
                    "headless Service named as the pod template's subdomain.")
flags.DEFINE_string("k8s_job_name", _default("k8s_job_name"),
                    "With --cluster_resolver=k8s_indexed: the Indexed Job's "
                    "name; unset = taken from the pod's hostname "
                    "(<job>-<JOB_COMPLETION_INDEX>).")
flags.DEFINE_integer("cpu_devices", _default("cpu_devices"),
                     "Split the CPU into this many logical devices (replicas) "
                     "when there is no GPU: CPU tests of multi-replica "
                     "training.")
flags.DEFINE_float("collective_timeout", _default("collective_timeout"),
                   "Seconds a multi-worker collective may wait for its peers "
                   "before failing (0 = forever): a dead worker becomes an "
                   "error, not a hang.")
flags.DEFINE_enum("dtype", _default("dtype"), list(options.DTYPES),
                  "Compute dtype; variables stay float32. float16 uses "
                  "dynamic loss scaling.")
flags.DEFINE_integer("channel_multiple", _default("channel_multiple"),
                     "Carry activations with their channels zero-padded to a "
                     "multiple of this (same weights, same results; oneDNN's "
                     "CPU kernels are fast only on aligned channel counts). "
                     "0 = auto: on CPU 8 for float32 and 16 for bfloat16/"
                     "float16, on GPU 1; 1 = no padding.")
flags.DEFINE_integer("image_size", _default("image_size"),
                     "Training/eval image size; 0 = 32 for CIFAR data and "
                     "CIFAR-architecture folder data, 224 for ImageNet "
                     "(evaluate: the size the model directory records, if "
                     "any; a value given overrides it).")
flags.DEFINE_enum("cifar_convention", _default("cifar_convention"),
                  list(options.CIFAR_CONVENTIONS),
                  "CIFAR normalisation: pt = CIFAR-10 stats for both datasets,"
                  " black pad before normalising (PyramidNet-PyTorch, "
                  "CutMix); fb = per-dataset stats, pad after normalising "
                  "(fb.resnet.torch, the paper's code).")
flags.DEFINE_integer("eval_batch_size", _default("eval_batch_size"),
                     "Global eval batch; 0 = --batch_size when training, 100 "
                     "in pyramidnet_tf.evaluate.")

cli.register_number_validator("slurm_port_base", 0, 65535, integer=True,
                              note="0 = derived from SLURM_JOB_ID")
cli.register_number_validator("k8s_num_workers", 0, integer=True,
                              note="0 = unset; required by k8s_indexed")
cli.register_number_validator("k8s_port", 1, 65535, integer=True)
cli.register_number_validator("cpu_devices", 1, integer=True)
cli.register_number_validator("collective_timeout", 0,
                              note="seconds; 0 = wait forever")
cli.register_number_validator("channel_multiple", 0, integer=True,
                              note="0 = auto, 1 = no padding")
cli.register_number_validator("image_size", 0, integer=True,
                              note="0 = the dataset's default size")
cli.register_number_validator("eval_batch_size", 0, integer=True,
                              note="0 = the default")

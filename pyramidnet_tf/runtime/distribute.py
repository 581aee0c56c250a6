"""The tf.distribute strategy, worker roles and per-worker directories.

Why one module: MultiWorkerMirroredStrategy must be created before any other
TensorFlow op (collectives are configured at program startup), and every
worker must take part in checkpoint saves while only the chief's copy is kept.
Keeping the rules here keeps the trainer readable.

Strategies (``--distribution``):
* ``auto``: ``multi_worker`` when TF_CONFIG lists more than one task,
  ``mirrored`` with more than one local GPU (or ``--cpu_devices`` > 1),
  else ``one_device``.
* ``one_device``: the first GPU, else the CPU.
* ``mirrored``: all local GPUs (or the ``--cpu_devices`` logical CPUs).
* ``multi_worker``: MultiWorkerMirroredStrategy from TF_CONFIG, RING
  collectives on CPU, NCCL on GPUs, with a collective timeout so a dead peer
  turns into an error instead of a hang.

Cluster resolvers (``--cluster_resolver``): ``tf_config`` reads the TF_CONFIG
environment variable (set by hand, by ``launch_local`` or by the Kubeflow
training operator); ``slurm`` asks TF's SlurmClusterResolver, which reads the
SLURM_* variables that ``srun`` sets for every task of a job step;
``k8s_indexed`` builds TF_CONFIG for a pod of a Kubernetes Indexed Job (no
TF-specific operator): worker ``i`` is the pod with completion index ``i``,
reached through the Job's headless Service as ``<job>-<i>.<service>:<port>``.
"""

import logging
import os
import shutil
import subprocess
import sys
import time
from typing import Optional

import tensorflow as tf
# The coordination service's key-value store has no public API.
from tensorflow.python import pywrap_tfe  # pylint: disable=g-direct-tensorflow-import
from tensorflow.python.eager import context  # pylint: disable=g-direct-tensorflow-import

from pyramidnet_tf import options
from pyramidnet_tf.runtime import cluster_env

DISTRIBUTIONS = options.DISTRIBUTIONS
CLUSTER_RESOLVERS = options.CLUSTER_RESOLVERS


def local_gpu_count() -> int:
  """GPUs on this node, found without initialising TensorFlow's devices.

  The Slurm resolver may set CUDA_VISIBLE_DEVICES, which only takes effect
  before TensorFlow touches the GPUs, so this asks CUDA_VISIBLE_DEVICES and
  then nvidia-smi, like TF's resolver, but counts an empty
  CUDA_VISIBLE_DEVICES (GPUs hidden) as 0 and a missing nvidia-smi as 0.
  """
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is not None:
    return len([d for d in visible.split(",") if d.strip()])
  if shutil.which("nvidia-smi") is None:
    return 0
  try:
    output = subprocess.run(["nvidia-smi", "--list-gpus"], check=True,
                            capture_output=True, text=True,
                            timeout=60).stdout
  except (OSError, subprocess.SubprocessError):
    return 0
  return sum(line.startswith("GPU ") for line in output.splitlines())


def slurm_resolver(port_base: int = 0, gpus_per_node: Optional[int] = None):
  """TF's SlurmClusterResolver for this srun task, with a clear error.

  One TensorFlow worker per Slurm task; worker ``i`` is SLURM_PROCID ``i``
  and listens on ``port_base + <its index on its node>``, a port_base of 0
  being derived from SLURM_JOB_ID (``cluster_env.slurm_port_base``). With
  GPUs each task gets gpus_per_node / tasks-per-node of them (via
  CUDA_VISIBLE_DEVICES, so run one task per node to use every GPU of a node
  in one worker). Without GPUs every worker runs on its CPU.

  Args:
    port_base: the port of the first task on each node, in 1..65535; 0
      derives it from SLURM_JOB_ID, so jobs sharing a node differ.
    gpus_per_node: GPUs on each node; None counts this node's
      (``local_gpu_count``). 0 means CPU workers.

  Raises:
    ValueError: outside a Slurm job step (its variables missing), or for a
      port outside 0..65535 or one that cannot be derived
      (``cluster_env.slurm_port_base``).
  """
  cluster_env.check_slurm_environment()
  port_base = cluster_env.slurm_port_base(port_base)
  resolver_cls = tf.distribute.cluster_resolver.SlurmClusterResolver
  gpus = local_gpu_count() if gpus_per_node is None else gpus_per_node
  if gpus:
    return resolver_cls(port_base=port_base, gpus_per_node=gpus)

  class _CpuSlurmResolver(resolver_cls):
    """No GPUs: one CPU device per worker, CUDA_VISIBLE_DEVICES untouched."""

    def num_accelerators(self, task_type=None, task_id=None,
                         config_proto=None):
      del task_type, task_id, config_proto
      return {}

  # The resolver places tasks on a node by walking its GPU slots; give it
  # one (unused) slot per task so every task of a node gets a port.
  return _CpuSlurmResolver(
      port_base=port_base,
      gpus_per_node=int(os.environ["SLURM_STEP_NUM_TASKS"]), gpus_per_task=1,
      auto_set_gpu=False)


def _split_cpu(num_devices: int):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def create_strategy(runtime) -> tf.distribute.Strategy:
  """Builds the strategy of a run. Call it before any other TensorFlow op.

  The trainer and every tool that runs a model call this with their
  configuration's runtime section, so one command line means one strategy
  whichever tool reads it.

  Args:
    runtime: the run's ``training.config.RuntimeConfig`` (read by field
      name; this layer does not import the config). Its fields used here:
      ``distribution`` (one of DISTRIBUTIONS); ``cpu_devices`` (split the
      host CPU into this many logical devices, for tests and CPU-only
      experiments with several replicas; ignored with GPUs);
      ``collective_timeout`` (multi-worker collectives fail after this many
      seconds, 0 = wait forever); ``cluster_resolver`` (one of
      CLUSTER_RESOLVERS: where the multi-worker cluster comes from, the
      TF_CONFIG variable, the Slurm job step, or the Kubernetes Indexed Job,
      which sets TF_CONFIG here); ``slurm_port_base`` (first port of the
      workers on each Slurm node, 0 = derived from SLURM_JOB_ID); and
      ``k8s_num_workers``, ``k8s_port``, ``k8s_service``, ``k8s_job_name``
      (the Indexed Job, ``k8s_indexed_tf_config``; used with
      ``k8s_indexed`` only).

  Raises:
    ValueError: naming the flag, for an unknown name or resolver, fewer
      than 1 CPU device, Slurm or k8s_indexed with a single-host
      distribution, a missing Slurm or Indexed Job environment, or
      multi_worker without a TF_CONFIG cluster.
  """
  name = runtime.distribution
  cpu_devices = runtime.cpu_devices
  cluster_resolver = runtime.cluster_resolver
  if name not in DISTRIBUTIONS:
    raise ValueError(f"--distribution must be one of {', '.join(DISTRIBUTIONS)}"
                     f"; got {name!r}")
  if cpu_devices < 1:
    raise ValueError(f"--cpu_devices must be >= 1; got {cpu_devices}")
  if cluster_resolver not in CLUSTER_RESOLVERS:
    raise ValueError("--cluster_resolver must be one of "
                     f"{', '.join(CLUSTER_RESOLVERS)}; got {cluster_resolver!r}")
  resolver = None
  if cluster_resolver == "slurm":
    if name not in ("auto", "multi_worker"):
      raise ValueError("--cluster_resolver=slurm needs --distribution=auto or "
                       f"multi_worker; got --distribution={name}")
    resolver = slurm_resolver(runtime.slurm_port_base)
    name = "multi_worker"
  if cluster_resolver == "k8s_indexed":
    if name not in ("auto", "multi_worker"):
      raise ValueError("--cluster_resolver=k8s_indexed needs --distribution="
                       f"auto or multi_worker; got --distribution={name}")
    cluster_env.use_k8s_indexed_tf_config(cluster_env.k8s_indexed_tf_config(
        runtime.k8s_num_workers, runtime.k8s_port, runtime.k8s_service,
        runtime.k8s_job_name))
  gpus = tf.config.list_physical_devices("GPU")
  workers = cluster_env.cluster_size()
  if name == "auto":
    if workers > 1:
      name = "multi_worker"
    elif len(gpus) > 1 or (not gpus and cpu_devices > 1):
      name = "mirrored"
    else:
      name = "one_device"
  if name == "multi_worker":
    if resolver is None and workers < 1:
      raise ValueError("--distribution=multi_worker needs TF_CONFIG with a "
                       "'cluster' of workers and this process's 'task', e.g. "
                       '{"cluster": {"worker": ["h1:2222", "h2:2222"]}, '
                       '"task": {"type": "worker", "index": 0}}')
    if not gpus and cpu_devices > 1:
      _split_cpu(cpu_devices)
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=(tf.distribute.experimental.CommunicationImplementation
                        .NCCL if gpus else
                        tf.distribute.experimental.CommunicationImplementation
                        .RING),
        timeout_seconds=runtime.collective_timeout or None)
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=resolver, communication_options=options)
  if name == "mirrored":
    if gpus:
      return tf.distribute.MirroredStrategy()
    if cpu_devices > 1:
      _split_cpu(cpu_devices)
      return tf.distribute.MirroredStrategy(
          [f"/cpu:{i}" for i in range(cpu_devices)],
          cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MirroredStrategy(["/cpu:0"])
  return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")


def task(strategy: tf.distribute.Strategy):
  """(task_type, task_id) of this process; ('worker', 0) when single-host.

  Args:
    strategy: the run's strategy; read through its ``cluster_resolver``.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "worker", 0
  return resolver.task_type, int(resolver.task_id or 0)


def cluster_text(strategy: tf.distribute.Strategy) -> str:
  """This task and the cluster it belongs to, for the run's start lines.

  Shows where a resolver (TF_CONFIG, Slurm, an Indexed Job) put each worker,
  the first thing to check when workers do not meet. Empty for single-host
  strategies.

  Args:
    strategy: the run's strategy.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return ""
  task_type, task_id = task(strategy)
  role = "the chief" if is_chief(strategy) else "not the chief"
  return (f"cluster {resolver.cluster_spec().as_dict()}; this is "
          f"{task_type} {task_id} ({role})")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Chief = task 'chief', or worker 0 when the cluster has no chief job.

  Args:
    strategy: the run's strategy; single-host strategies are always chief.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and (
      not has_chief)


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """Hosts taking part in ``strategy``: 1 unless it spans a cluster.

  Read from the strategy's public ``cluster_resolver`` (workers and chief of
  its cluster spec); single-host strategies have none, or an empty spec.

  Args:
    strategy: the run's strategy.
  """
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None:
    return 1
  spec = resolver.cluster_spec().as_dict()
  return max(1, len(spec.get("worker", [])) + len(spec.get("chief", [])))


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this worker writes checkpoints: model_dir, or a temp dir.

  Args:
    model_dir: the training directory.
    strategy: the run's strategy (decides chief or not).

  Returns:
    ``model_dir`` on the chief, else
    ``<model_dir>/workertemp_<task_type>_<task_id>``.
  """
  if is_chief(strategy):
    return model_dir
  task_type, task_id = task(strategy)
  return os.path.join(model_dir, f"workertemp_{task_type}_{task_id}")


def remove_temp_dir(path: str, model_dir: str) -> None:
  """Deletes a non-chief's temporary directory (never the model dir).

  Errors are ignored, and so is a missing directory. Uses the local
  filesystem only (``shutil``), not ``tf.io.gfile``.

  Args:
    path: the directory ``write_dir`` returned.
    model_dir: the training directory, which is never deleted.
  """
  if os.path.abspath(path) != os.path.abspath(model_dir):
    shutil.rmtree(path, ignore_errors=True)


_LEAVING_KEY = "pyramidnet_tf/leaving/{}"


def leave_cluster(worker: int, workers: int, code: int,
                  timeout_s: float = 60.0, grace_s: float = 1.0) -> None:
  """Ends a multi-worker run's process quietly: every other worker first,
  the chief last, each disconnecting from the coordination service on
  purpose. Does not return.

  The chief hosts TensorFlow's coordination service. A process that simply
  exits never tells the service it is leaving: the chief then logs "tasks
  are unhealthy (stopped sending heartbeats)", or a worker still alive
  logs "Failed to send RPC to coordination service", although the run
  ended well. So each other worker announces it is leaving (a key of the
  service's key-value store) and deletes its eager context, which
  disconnects it gracefully; the chief waits for every announcement (up to
  ``timeout_s``), gives the disconnections ``grace_s``, then deletes its
  own. The process then ends at once with ``code``: Python's own teardown
  would finalise TensorFlow functions of the deleted context and print
  spurious tracebacks. Standard output, standard error and the log
  handlers are flushed first.

  Args:
    worker: this process's index (0 is the chief).
    workers: how many workers the run has.
    code: the process's exit code.
    timeout_s: how long the chief waits for the others.
    grace_s: how long the chief waits after the last announcement.
  """
  ctx = context.context()
  try:
    if worker != 0:
      ctx.set_config_key_value(_LEAVING_KEY.format(worker), "1")
    else:
      for other in range(1, workers):
        ctx.get_config_key_value(_LEAVING_KEY.format(other),
                                 timeout_in_ms=int(timeout_s * 1000))
      time.sleep(grace_s)
    handle, ctx._context_handle = ctx._context_handle, None  # pylint: disable=protected-access
    if handle is not None:
      pywrap_tfe.TFE_DeleteContext(handle)
  except tf.errors.OpError:
    pass   # a peer is gone already: nothing left to leave quietly
  finally:
    for handler in logging.getLogger().handlers:
      handler.flush()
    for stream in (sys.stdout, sys.stderr):
      stream.flush()
    os._exit(code)  # pylint: disable=protected-access

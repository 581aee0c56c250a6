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
"""

import json
import os
import shutil
from typing import Optional

import tensorflow as tf

DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker")


def tf_config() -> dict:
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    return {}
  try:
    return json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from None


def cluster_size(config: Optional[dict] = None) -> int:
  config = tf_config() if config is None else config
  cluster = config.get("cluster", {})
  return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def _split_cpu(num_devices: int):
  cpu = tf.config.list_physical_devices("CPU")[0]
  tf.config.set_logical_device_configuration(
      cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices)


def create_strategy(name: str = "auto", cpu_devices: int = 1,
                    collective_timeout_s: float = 0.0
                    ) -> tf.distribute.Strategy:
  """Builds the strategy. Call it before any other TensorFlow op.

  Args:
    name: one of DISTRIBUTIONS.
    cpu_devices: split the host CPU into this many logical devices (tests and
      CPU-only experiments with several replicas); ignored with GPUs.
    collective_timeout_s: multi-worker collectives fail after this many
      seconds (0 = wait forever).
  """
  if name not in DISTRIBUTIONS:
    raise ValueError(f"--distribution must be one of {', '.join(DISTRIBUTIONS)}"
                     f"; got {name!r}")
  if cpu_devices < 1:
    raise ValueError(f"--cpu_devices must be >= 1; got {cpu_devices}")
  gpus = tf.config.list_physical_devices("GPU")
  workers = cluster_size()
  if name == "auto":
    if workers > 1:
      name = "multi_worker"
    elif len(gpus) > 1 or (not gpus and cpu_devices > 1):
      name = "mirrored"
    else:
      name = "one_device"
  if name == "multi_worker":
    if workers < 1:
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
        timeout_seconds=collective_timeout_s or None)
    return tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)
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
  """(task_type, task_id) of this process; ('worker', 0) when single-host."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "worker", 0
  return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Chief = task 'chief', or worker 0 when the cluster has no chief job."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and (
      not has_chief)


def num_workers(strategy: tf.distribute.Strategy) -> int:
  return int(strategy.extended._num_workers) if hasattr(  # pylint: disable=protected-access
      strategy.extended, "_num_workers") else 1


def write_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this worker writes checkpoints: model_dir, or a temp dir."""
  if is_chief(strategy):
    return model_dir
  task_type, task_id = task(strategy)
  return os.path.join(model_dir, f"workertemp_{task_type}_{task_id}")


def remove_temp_dir(path: str, model_dir: str) -> None:
  """Deletes a non-chief's temporary directory (never the model dir)."""
  if os.path.abspath(path) != os.path.abspath(model_dir):
    shutil.rmtree(path, ignore_errors=True)

"""What the cluster environment says, read without TensorFlow.

TF_CONFIG, the SLURM_* variables of an ``srun`` task (and the worker ports
they imply) and the completion index of a Kubernetes Indexed Job's pod.
Flag validation reads them before TensorFlow is imported (a bad cluster is
reported with the other bad flags, in a second instead of after
TensorFlow's start-up); ``distribute`` builds the strategy from them.
"""

import json
import os
import re
import socket
from typing import List, Mapping, Optional

from pyramidnet_tf import options

# What SlurmClusterResolver reads when it is given no jobs / tasks_per_node.
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS",
                   "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
# Set by Kubernetes in every container of an Indexed Job's pods (the
# batch.kubernetes.io/job-completion-index annotation, 0 .. completions-1).
K8S_INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
# --slurm_port_base=0 (the default) derives a job's worker ports from its
# SLURM_JOB_ID: job j's workers on a node listen on SLURM_PORTS_PER_JOB ports
# starting at SLURM_PORT_RANGE[0] + (j mod slots) * SLURM_PORTS_PER_JOB, so
# jobs whose IDs are less than ``slurm_port_slots()`` apart never share a
# port. The range lies above the ports services commonly use (Jupyter's
# 8888, TensorBoard's 6006, web servers' 8000-8080) and below Linux's
# ephemeral ports (32768 and up), which outgoing connections take.
SLURM_PORT_RANGE = (20000, 32768)
SLURM_PORTS_PER_JOB = 16
K8S_DEFAULT_PORT = options.K8S_DEFAULT_PORT
# An RFC 1123 DNS label: what a Service name and a pod hostname must be.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def tf_config() -> dict:
  """The parsed TF_CONFIG environment variable ({} when unset or empty).

  Raises:
    ValueError: if TF_CONFIG is not valid JSON.
  """
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    return {}
  try:
    return json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from None


def cluster_size(config: Optional[dict] = None) -> int:
  """Chief and worker tasks listed in a TF_CONFIG (0 when it has none).

  Args:
    config: a parsed TF_CONFIG; None reads the environment (``tf_config``).

  Raises:
    ValueError: if ``config`` is None and TF_CONFIG is not valid JSON.
  """
  config = tf_config() if config is None else config
  cluster = config.get("cluster", {})
  return sum(len(cluster.get(job, [])) for job in ("chief", "worker"))


def missing_slurm_variables() -> list:
  """The SLURM_VARIABLES that are unset or empty in this process."""
  return [v for v in SLURM_VARIABLES if not os.environ.get(v)]


def check_slurm_environment() -> None:
  """Raises unless this process is a task of a Slurm job step.

  Raises:
    ValueError: naming the SLURM_VARIABLES that ``srun`` did not set.
  """
  missing = missing_slurm_variables()
  if missing:
    raise ValueError(
        "--cluster_resolver=slurm needs the variables srun sets for each "
        f"task ({', '.join(SLURM_VARIABLES)}); missing: {', '.join(missing)}."
        " Start the trainer with srun inside an allocation, or use "
        "--cluster_resolver=tf_config with TF_CONFIG.")


def slurm_port_slots() -> int:
  """How many jobs' port blocks SLURM_PORT_RANGE holds (798)."""
  first, end = SLURM_PORT_RANGE
  return (end - first) // SLURM_PORTS_PER_JOB


def tasks_per_node(value: str) -> List[int]:
  """SLURM_STEP_TASKS_PER_NODE as one task count per node.

  Args:
    value: Slurm's compressed form, e.g. ``"2(x3),1"`` (three nodes with 2
      tasks, then one with 1).

  Raises:
    ValueError: naming the variable, if ``value`` is not of that form.
  """
  counts = []
  for part in value.split(","):
    match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
    if not match:
      raise ValueError("SLURM_STEP_TASKS_PER_NODE must look like '2(x3),1'; "
                       f"got {value!r}")
    counts += [int(match.group(1))] * int(match.group(2) or 1)
  return counts


def slurm_port_base(requested: int = 0,
                    environ: Optional[Mapping[str, str]] = None) -> int:
  """The port of the first worker on each node of this Slurm job step.

  Worker ``k`` of a node listens on the returned port + ``k``. A fixed
  port (such as 8888) collides with other jobs on a shared node and with
  Jupyter; by default the port follows from SLURM_JOB_ID instead (see
  SLURM_PORT_RANGE), the same on every node and in every task of the step,
  and unchanged when the job is requeued.

  Args:
    requested: ``--slurm_port_base``; 0 derives the port from SLURM_JOB_ID,
      any other value (1..65535) is used as it is.
    environ: the environment to read (default ``os.environ``).

  Raises:
    ValueError: naming the flag or variable: ``requested`` outside
      0..65535, or, to derive the port, SLURM_JOB_ID missing or not a job
      ID, or more than SLURM_PORTS_PER_JOB tasks on a node (their ports
      would spill into another job's block).
  """
  if not 0 <= requested <= 65535:
    raise ValueError("--slurm_port_base must be in 1..65535, or 0 to derive "
                     f"it from SLURM_JOB_ID; got {requested}")
  if requested:
    return requested
  environ = os.environ if environ is None else environ
  raw = environ.get("SLURM_JOB_ID", "").strip()
  if not raw.isdigit():
    raise ValueError(
        "--slurm_port_base=0 derives the workers' ports from SLURM_JOB_ID, "
        f"which srun sets in every task; got {raw!r}. Run the trainer with "
        "srun inside a job, or pass --slurm_port_base=PORT")
  per_node = tasks_per_node(environ.get("SLURM_STEP_TASKS_PER_NODE", "1"))
  if max(per_node) > SLURM_PORTS_PER_JOB:
    raise ValueError(
        f"--slurm_port_base=0 gives each job {SLURM_PORTS_PER_JOB} ports per "
        f"node, but this step runs {max(per_node)} tasks on one node; pass "
        "--slurm_port_base=PORT with PORT .. PORT+tasks-1 free on every node")
  slot = int(raw) % slurm_port_slots()
  return SLURM_PORT_RANGE[0] + slot * SLURM_PORTS_PER_JOB


def _check_dns_label(what: str, value: str) -> None:
  if not (value and len(value) <= 63 and _DNS_LABEL.fullmatch(value)):
    raise ValueError(
        f"{what} must be a DNS label (1-63 lowercase letters, digits and "
        f"'-', starting and ending with a letter or digit); got {value!r}")


def k8s_indexed_tf_config(num_workers: int, port: int = K8S_DEFAULT_PORT,
                          service: Optional[str] = None,
                          job_name: Optional[str] = None,
                          environ: Optional[dict] = None,
                          hostname: Optional[str] = None) -> dict:
  """The TF_CONFIG of this pod of a Kubernetes Indexed Job.

  Kubernetes gives every pod of an Indexed Job (``completionMode:
  Indexed``) the variable JOB_COMPLETION_INDEX and the hostname
  ``<job-name>-<index>``; with the pod template's ``subdomain`` set to a
  headless Service, peers resolve that pod as ``<job-name>-<index>.<service>``
  (in the same namespace). One TensorFlow worker per pod: worker ``i`` is
  the pod with index ``i``, so worker 0 (the chief) is pod 0, and a
  re-created pod keeps its index and its place in the cluster.

  Args:
    num_workers: the Job's ``completions`` (= ``parallelism``): pods in the
      cluster (``--k8s_num_workers``).
    port: the port every worker listens on (``--k8s_port``), 1..65535.
    service: the headless Service named as the pods' ``subdomain``
      (``--k8s_service``).
    job_name: the Job's name (``--k8s_job_name``); None or empty derives it
      from this pod's hostname, which must be ``<job-name>-<index>``.
    environ: the environment to read (default ``os.environ``).
    hostname: this pod's hostname (default ``socket.gethostname()``).

  Returns:
    ``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}``.

  Raises:
    ValueError: naming the flag or variable: JOB_COMPLETION_INDEX missing or
      not an index below ``num_workers``, ``num_workers`` < 1, a port out of
      range, a service or Job name that is not a DNS label, or a hostname
      that is not ``<job-name>-<index>`` (peers could not reach this pod).
  """
  environ = os.environ if environ is None else environ
  hostname = socket.gethostname() if hostname is None else hostname
  hostname = hostname.split(".")[0]  # also with setHostnameAsFQDN
  raw = environ.get(K8S_INDEX_VARIABLE, "").strip()
  if not raw:
    raise ValueError(
        f"--cluster_resolver=k8s_indexed needs {K8S_INDEX_VARIABLE}, which "
        "Kubernetes sets in the pods of an Indexed Job (completionMode: "
        "Indexed); it is not set. Run in such a pod (see "
        "k8s/indexed-job-pyramidnet.yaml), or use --cluster_resolver="
        "tf_config with TF_CONFIG.")
  if not raw.isdigit():
    raise ValueError(f"{K8S_INDEX_VARIABLE} must be a completion index (an "
                     f"integer >= 0); got {raw!r}")
  index = int(raw)
  if num_workers < 1:
    raise ValueError(
        "--cluster_resolver=k8s_indexed needs --k8s_num_workers: the Indexed "
        f"Job's completions (>= 1); got {num_workers}")
  if index >= num_workers:
    raise ValueError(
        f"{K8S_INDEX_VARIABLE}={index} is not below --k8s_num_workers="
        f"{num_workers}: set --k8s_num_workers to the Job's completions")
  if not 1 <= port <= 65535:
    raise ValueError(f"--k8s_port must be in 1..65535; got {port}")
  if not service:
    raise ValueError(
        "--cluster_resolver=k8s_indexed needs --k8s_service: the headless "
        "Service named as the pod template's subdomain")
  _check_dns_label("--k8s_service", service)
  suffix = f"-{index}"
  if job_name:
    _check_dns_label("--k8s_job_name", job_name)
    if hostname != job_name + suffix:
      raise ValueError(
          f"this pod's hostname is {hostname!r}, not --k8s_job_name + "
          f"'-{K8S_INDEX_VARIABLE}' ({job_name + suffix!r}): peers would "
          "not reach it; pass the Indexed Job's name (or leave "
          "--k8s_job_name empty to take it from the hostname)")
  else:
    if not hostname.endswith(suffix) or hostname == suffix:
      raise ValueError(
          f"cannot take the Job name from this pod's hostname {hostname!r}: "
          f"an Indexed Job's pod is named <job-name>-<{K8S_INDEX_VARIABLE}> "
          f"(here ...{suffix}); pass --k8s_job_name")
    job_name = hostname[:-len(suffix)]
    _check_dns_label("the Job name taken from the hostname", job_name)
  workers = [f"{job_name}-{i}.{service}:{port}" for i in range(num_workers)]
  return {"cluster": {"worker": workers},
          "task": {"type": "worker", "index": index}}


def use_k8s_indexed_tf_config(config: dict, check_only: bool = False) -> None:
  """Puts ``config`` (``k8s_indexed_tf_config``) into TF_CONFIG.

  Args:
    config: this pod's TF_CONFIG.
    check_only: only raise if it could not be set (flag validation).

  Raises:
    ValueError: if TF_CONFIG is already set to another cluster: two sources
      of the cluster would disagree.
  """
  raw = os.environ.get("TF_CONFIG", "")
  if raw:
    try:
      same = json.loads(raw) == config
    except json.JSONDecodeError:
      same = False
    if not same:
      raise ValueError(
          "TF_CONFIG is set, but --cluster_resolver=k8s_indexed builds it "
          "from the Indexed Job: unset TF_CONFIG, or use "
          "--cluster_resolver=tf_config to use it as it is")
  if not check_only:
    os.environ["TF_CONFIG"] = json.dumps(config)

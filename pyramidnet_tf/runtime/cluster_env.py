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


# The jobs of a MultiWorkerMirroredStrategy cluster: at most one chief and
# any number of workers (no parameter servers or side-car evaluators).
TF_CONFIG_JOBS = ("chief", "worker")
_TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
                      '"task": {"type": "worker", "index": 0}}')
# host:port, the host a name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):([0-9]{1,5})")


def _kind(value) -> str:
  """What a JSON value is, for messages ("a list", "the number 5", ...)."""
  if isinstance(value, bool) or value is None:
    return json.dumps(value)
  if isinstance(value, (int, float)):
    return f"the number {value!r}"
  if isinstance(value, str):
    return f"the string {value!r}"
  return "a list" if isinstance(value, list) else "an object"


def _job_tasks(job: str, tasks) -> dict:
  """{task index: address} of one job of a TF_CONFIG cluster."""
  where = f"TF_CONFIG's cluster[{job!r}]"
  if isinstance(tasks, list):
    indexed = dict(enumerate(tasks))
  elif isinstance(tasks, dict):
    indexed = {}
    for key, address in tasks.items():
      if not re.fullmatch(r"[0-9]+", key):
        raise ValueError(f"{where} maps task indices to addresses; its key "
                         f"{key!r} is not an index (0, 1, ...)")
      indexed[int(key)] = address
  else:
    raise ValueError(f"{where} must be a list of \"host:port\" addresses; "
                     f"got {_kind(tasks)}")
  for index, address in indexed.items():
    match = isinstance(address, str) and _ADDRESS.fullmatch(address)
    port = match and int(match.group(2))
    if not match or not 1 <= port <= 65535:
      raise ValueError(f"{where}[{index}] must be a \"host:port\" address "
                       f"(port 1..65535), e.g. \"host1:2222\"; got "
                       f"{_kind(address)}")
  return indexed


def check_tf_config(config) -> None:
  """Raises unless ``config`` is a TF_CONFIG the trainer can run with.

  TensorFlow reads TF_CONFIG only when it builds the multi-worker strategy,
  and a wrong one surfaces there as a traceback from deep inside it; checked
  here, a wrong one is one line naming the field, with the flags.

  Args:
    config: the parsed TF_CONFIG.

  Raises:
    ValueError: naming TF_CONFIG's field and what it must be: not a JSON
      object; a "cluster" that is not an object of "chief" (one task at
      most) and "worker" jobs listing "host:port" addresses; a cluster
      without a "task", or a task whose type is not one of its jobs or
      whose index is not one of that job's tasks.
  """
  if not isinstance(config, dict):
    raise ValueError(f"TF_CONFIG must be a JSON object with \"cluster\" and "
                     f"\"task\", e.g. {_TF_CONFIG_EXAMPLE}; got {_kind(config)}")
  cluster = config.get("cluster") or {}
  if not isinstance(cluster, dict):
    raise ValueError("TF_CONFIG's \"cluster\" must be an object of jobs "
                     f"(\"chief\", \"worker\") listing \"host:port\" addresses, "
                     f"e.g. {_TF_CONFIG_EXAMPLE}; got {_kind(cluster)}")
  jobs = {}
  for job, tasks in cluster.items():
    if job not in TF_CONFIG_JOBS:
      raise ValueError(f"TF_CONFIG's cluster has the job {job!r}; "
                       "MultiWorkerMirroredStrategy takes \"chief\" (one task "
                       "at most) and \"worker\" jobs only")
    jobs[job] = _job_tasks(job, tasks)
  if len(jobs.get("chief", {})) > 1:
    raise ValueError(f"TF_CONFIG's cluster lists {len(jobs['chief'])} "
                     "\"chief\" tasks; there can be one at most (or none: "
                     "worker 0 is then the chief)")
  if not any(jobs.values()):
    return  # no cluster: "task" is not read
  task = config.get("task")
  if not isinstance(task, dict):
    raise ValueError(
        "TF_CONFIG lists a cluster but not this process's place in it: add "
        "\"task\": {\"type\": \"worker\", \"index\": I} (I = 0 .. workers-1, "
        f"different on every host); got \"task\": {_kind(task)}"
        if task is not None else
        "TF_CONFIG lists a cluster but no \"task\": add \"task\": "
        "{\"type\": \"worker\", \"index\": I} with this process's place in "
        "it (I = 0 .. workers-1, different on every host)")
  task_type, index = task.get("type"), task.get("index")
  listed = [job for job, tasks in jobs.items() if tasks]
  if task_type not in listed:
    raise ValueError(f"TF_CONFIG's task type must be one of the cluster's jobs"
                     f" ({', '.join(map(repr, listed))}); got {_kind(task_type)}")
  indices = sorted(jobs[task_type])
  if isinstance(index, bool) or not isinstance(index, int) or (
      index not in jobs[task_type]):
    valid = (f"0..{len(indices) - 1}" if indices == list(range(len(indices)))
             else ", ".join(map(str, indices)))
    raise ValueError(
        f"TF_CONFIG's task index must be one of the {len(indices)} "
        f"{task_type!r} task(s) its cluster lists ({valid}); got {_kind(index)}")


def tf_config() -> dict:
  """The parsed TF_CONFIG environment variable ({} when unset or empty).

  Raises:
    ValueError: naming TF_CONFIG, if it is not valid JSON or not a cluster
      the trainer can run with (``check_tf_config``).
  """
  raw = os.environ.get("TF_CONFIG", "")
  if not raw:
    return {}
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    shown = raw if len(raw) <= 80 else raw[:77] + "..."
    raise ValueError(f"TF_CONFIG is not valid JSON ({e.msg} at character "
                     f"{e.pos}): {shown!r}; expected an object like "
                     f"{_TF_CONFIG_EXAMPLE}") from None
  check_tf_config(config)
  return config


def cluster_size(config: Optional[dict] = None) -> int:
  """Chief and worker tasks listed in a TF_CONFIG (0 when it has none).

  Args:
    config: a parsed TF_CONFIG; None reads the environment (``tf_config``).

  Raises:
    ValueError: if ``config`` is None and TF_CONFIG is not valid JSON or not
      a usable cluster.
  """
  config = tf_config() if config is None else config
  cluster = config.get("cluster") or {}
  return sum(len(cluster.get(job) or ()) for job in TF_CONFIG_JOBS)


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
  if not re.fullmatch(r"[0-9]+", raw):
    raise ValueError(f"{K8S_INDEX_VARIABLE} must be a completion index "
                     "(ASCII digits 0-9: 0 .. the Job's completions - 1); "
                     f"got {raw!r}")
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

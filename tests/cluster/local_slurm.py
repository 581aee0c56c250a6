"""A one-node Slurm cluster on this machine: munged, slurmctld and slurmd.

Everything lives in one temporary directory: the MUNGE key and socket,
slurm.conf, the controller's state, slurmd's spool, pid and log files. The
daemons talk over 127.0.0.1 on ports found free; the node is this machine
under its own hostname with 2 CPUs, as on a small real cluster. Clients
(sbatch, scontrol, squeue) find the cluster through SLURM_CONF, set in
``env()``. No cgroups: processes are tracked by process group and tasks are
not confined (ProctrackType=proctrack/pgid, TaskPlugin=task/none), so the
cluster runs in a container without a writable cgroup tree.

The daemons run in the foreground (``-F`` / ``-D``) as children of this
process: ``stop`` ends them by their PIDs, after cancelling any job left.
"""

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional

# The programs a cluster needs (Debian: munge, slurmctld, slurmd,
# slurm-client).
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue",
            "scancel")
CPUS = 2
PARTITION = "pyramidnet"


class Unavailable(Exception):
  """The cluster cannot run here (a program missing); the reason says why."""


def _program(name: str) -> str:
  path = shutil.which(name) or os.path.join("/usr/sbin", name)
  if not os.path.exists(path):
    raise Unavailable(f"{name} is not installed (Debian: apt-get install "
                      "slurm-wlm munge)")
  return path


def _free_ports(count: int) -> List[int]:
  sockets, ports = [], []
  try:
    for _ in range(count):
      s = socket.socket()
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
      ports.append(s.getsockname()[1])
  finally:
    for s in sockets:
      s.close()
  return ports


def node_name() -> str:
  """This machine's short hostname: what slurmd registers as and what
  SLURM_STEP_NODELIST (and so the trainer's cluster) will name."""
  return socket.gethostname().split(".")[0]


def slurm_conf(root: str, host: str, ctld_port: int, slurmd_port: int,
               munge_socket: str) -> str:
  """slurm.conf of the one-node cluster, every setting explained."""
  lines = [
      ("ClusterName=pyramidnet-test", "the cluster's name, any"),
      (f"SlurmctldHost={host}(127.0.0.1)",
       "the controller is this host, reached on loopback"),
      (f"SlurmctldPort={ctld_port}", "ports found free on 127.0.0.1: no "
       "clash with a real Slurm or another run"),
      (f"SlurmdPort={slurmd_port}", ""),
      ("SlurmUser=root", "the daemons run as the test's user; root here"),
      ("SlurmdUser=root", "slurmd must be root to start jobs as their user"),
      ("AuthType=auth/munge", "MUNGE, as on real clusters"),
      ("CredType=cred/munge", ""),
      (f"AuthInfo=socket={munge_socket},cred_expire=5",
       "our munged's socket; cred_expire=5 (the minimum) lets a requeued "
       "job start 6 s after it ends instead of 121 s"),
      (f"StateSaveLocation={root}/state", "everything under the temporary "
       "directory"),
      (f"SlurmdSpoolDir={root}/spool", ""),
      (f"SlurmctldPidFile={root}/run/slurmctld.pid", ""),
      (f"SlurmdPidFile={root}/run/slurmd.pid", ""),
      (f"SlurmctldLogFile={root}/log/slurmctld.log", ""),
      (f"SlurmdLogFile={root}/log/slurmd.log", ""),
      (f"PlugStackConfig={root}/plugstack.conf", "no SPANK plugins of the "
       "machine's /etc/slurm"),
      ("SlurmctldDebug=info", ""),
      ("SlurmdDebug=info", ""),
      ("ProctrackType=proctrack/pgid", "no cgroups: tasks are tracked by "
       "process group"),
      ("TaskPlugin=task/none", "no cgroup or affinity confinement"),
      ("JobAcctGatherType=jobacct_gather/none", "no accounting: no slurmdbd"
       " (sacct has nothing; `scontrol show job` has the states)"),
      ("AccountingStorageType=accounting_storage/none", ""),
      ("JobCompType=jobcomp/filetxt", "one line per job end and requeue, "
       "with its state: the history sacct would show"),
      (f"JobCompLoc={root}/log/jobcomp.txt", ""),
      ("MpiDefault=none", ""),
      ("SwitchType=switch/none", ""),
      ("MailProg=/bin/true", "no mail"),
      ("SchedulerType=sched/builtin", "plain FIFO: a job starts the moment"
       " it is submitted and the node is free, no backfill pass"),
      ("SchedulerParameters=sched_interval=2",
       "the full scheduling pass every 2 s instead of 60 s: it is what "
       "starts a requeued job once its cred_expire delay is over"),
      ("SelectType=select/cons_tres", "CPUs are allocated one by one ..."),
      ("SelectTypeParameters=CR_CPU", "... memory is not a resource"),
      ("ReturnToService=2", "the node is usable as soon as slurmd "
       "registers"),
      ("MinJobAge=3600", "finished jobs stay in `scontrol show job` for "
       "the whole test"),
      ("MessageTimeout=30", "a loaded 2-core machine answers slowly: the "
       "default 10 s makes the controller give up on and retry messages"),
      (f"NodeName={host} NodeAddr=127.0.0.1 CPUs={CPUS} State=UNKNOWN",
       "this machine, 2 CPUs (--exclusive takes the whole node)"),
      (f"PartitionName={PARTITION} Nodes={host} Default=YES "
       "MaxTime=INFINITE State=UP", ""),
  ]
  return "".join(f"# {why}\n{line}\n" if why else f"{line}\n"
                 for line, why in lines)


class LocalSlurm:
  """munged + slurmctld + slurmd for one node, in a temporary directory.

  Use ``start()`` then ``stop()`` (always, e.g. in a finalizer): ``stop``
  cancels the jobs left, ends the daemons by PID and removes the directory
  unless ``keep`` is set.
  """

  def __init__(self, keep: bool = False):
    self.keep = keep
    self.root: Optional[str] = None
    self.host = node_name()
    self._daemons: Dict[str, subprocess.Popen] = {}
    self._logs = []

  # -- the environment of the cluster's clients

  def env(self, base: Optional[dict] = None, **extra) -> dict:
    """``base`` (default os.environ) for sbatch & co.: SLURM_CONF set,
    every other SLURM_* / SBATCH_* / SRUN_* variable removed (a test run
    inside a real job must not submit into that job's cluster)."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_"))}
    env["SLURM_CONF"] = self.conf
    env.update(extra)
    return env

  @property
  def conf(self) -> str:
    return os.path.join(self.root, "slurm.conf")

  def run(self, *args, timeout: float = 60) -> str:
    """Runs a client command (``scontrol ...``); returns its stdout."""
    proc = subprocess.run(list(args), env=self.env(), capture_output=True,
                          text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}: "
                         f"{proc.stderr.strip()}")
    return proc.stdout

  # -- start and stop

  def start(self, timeout: float = 120) -> "LocalSlurm":
    """Starts the three daemons and waits until the node is idle.

    Raises:
      Unavailable: a program is missing.
      RuntimeError: a daemon did not come up; its log is in the message.
    """
    programs = {p: _program(p) for p in PROGRAMS}
    if os.geteuid() != 0:
      raise Unavailable("slurmd starts jobs as their user, which needs root;"
                        f" this test runs as uid {os.geteuid()}")
    # munged checks that its socket's directory is reachable by everyone,
    # which pytest's private tmp directories are not.
    self.root = tempfile.mkdtemp(prefix="pyramidnet-slurm-")
    os.chmod(self.root, 0o755)
    for sub in ("state", "spool", "run", "log", "munge"):
      os.makedirs(os.path.join(self.root, sub), mode=0o755)
    key_dir = os.path.join(self.root, "munge-key")
    os.makedirs(key_dir, mode=0o700)
    key = os.path.join(key_dir, "munge.key")
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
      f.write(os.urandom(128))
    munge_socket = os.path.join(self.root, "munge", "munge.socket")
    self._spawn("munged", [
        programs["munged"], "--foreground", f"--key-file={key}",
        f"--socket={munge_socket}",
        f"--pid-file={self.root}/munge/munged.pid",
        f"--log-file={self.root}/log/munged.log",
        f"--seed-file={key_dir}/munged.seed"])
    self._wait(lambda: os.path.exists(munge_socket), "munged", timeout)
    ctld_port, slurmd_port = _free_ports(2)
    with open(self.conf, "w") as f:
      f.write(slurm_conf(self.root, self.host, ctld_port, slurmd_port,
                         munge_socket))
    with open(os.path.join(self.root, "plugstack.conf"), "w") as f:
      f.write("# no SPANK plugins\n")
    self._spawn("slurmctld", [programs["slurmctld"], "-D", "-f", self.conf])
    self._wait(self._controller_up, "slurmctld", timeout)
    self._spawn("slurmd", [programs["slurmd"], "-D", "-f", self.conf,
                           "-N", self.host])
    self._wait(lambda: self.node_state() == "IDLE", "slurmd", timeout)
    return self

  def _spawn(self, name: str, argv: List[str]) -> None:
    log = open(os.path.join(self.root, "log", f"{name}.out"), "w")
    self._logs.append(log)
    self._daemons[name] = subprocess.Popen(
        argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)

  def _wait(self, ready, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
      for daemon, proc in self._daemons.items():
        if proc.poll() is not None:
          raise RuntimeError(f"{daemon} exited with {proc.returncode}:\n"
                             + self.log_tail(daemon))
      try:
        if ready():
          return
      except (RuntimeError, subprocess.SubprocessError):
        pass
      if time.monotonic() > deadline:
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n"
                           + self.log_tail(name))
      time.sleep(0.2)

  def _controller_up(self) -> bool:
    return "is UP" in self.run("scontrol", "ping", timeout=10)

  def node_state(self) -> str:
    text = self.run("scontrol", "show", "node", self.host, timeout=10)
    match = re.search(r"\bState=(\S+)", text)
    return match.group(1) if match else ""

  def log_tail(self, name: str, chars: int = 3000) -> str:
    texts = []
    for file in (f"{name}.out", f"{name}.log"):
      path = os.path.join(self.root or "", "log", file)
      if os.path.exists(path):
        with open(path, errors="replace") as f:
          texts.append(f"--- {file}\n" + f.read()[-chars:])
    return "\n".join(texts)

  def stop(self, timeout: float = 60) -> None:
    """Cancels every job, then ends slurmd, slurmctld and munged by PID."""
    if "slurmctld" in self._daemons and self._daemons["slurmctld"].poll() is None:
      try:
        self.run("scancel", "--full", f"--partition={PARTITION}", timeout=30)
        deadline = time.monotonic() + timeout
        while (self.run("squeue", "--noheader", timeout=10).strip() and
               time.monotonic() < deadline):
          time.sleep(0.5)
      except (RuntimeError, subprocess.SubprocessError):
        pass
    for name in ("slurmd", "slurmctld", "munged"):
      proc = self._daemons.pop(name, None)
      if proc is None or proc.poll() is not None:
        continue
      proc.terminate()
      try:
        proc.wait(timeout=timeout)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)
    for log in self._logs:
      log.close()
    self._logs = []
    if self.root and not self.keep:
      shutil.rmtree(self.root, ignore_errors=True)

  # -- jobs

  def submit(self, argv: List[str], env: dict, cwd: str) -> int:
    """Runs ``sbatch --parsable argv`` in ``cwd``; returns the job ID."""
    proc = subprocess.run(["sbatch", "--parsable"] + argv, env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          check=False)
    if proc.returncode != 0:
      raise RuntimeError(f"sbatch {' '.join(argv)}: exit {proc.returncode}:"
                         f" {proc.stderr.strip()}")
    return int(proc.stdout.strip().split(";")[0])

  def job(self, job_id: int) -> Dict[str, str]:
    """``scontrol show job``'s fields (JobState, Restarts, ExitCode, ...)."""
    text = self.run("scontrol", "--oneliner", "show", "job", str(job_id),
                    timeout=10)
    return dict(re.findall(r"(\w+)=(\S*)", text))

  def jobcomp(self) -> List[str]:
    """The job completion log's lines (one per job end or requeue)."""
    path = os.path.join(self.root, "log", "jobcomp.txt")
    if not os.path.exists(path):
      return []
    with open(path) as f:
      return f.read().splitlines()

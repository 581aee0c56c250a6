"""Rehearse a multi-worker job on one machine: N local trainer processes.

    python -m pyramidnet_tf.launch_local --workers=2 -- <pyramidnet_tf.train flags>

Picks free ports on 127.0.0.1, gives worker ``i`` the TF_CONFIG
``{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": i}}``
(worker 0 is the chief), starts ``python -m pyramidnet_tf.train`` for each,
prefixes every output line with ``[worker i]`` and waits. If a worker fails
the others are terminated and the launcher exits 1 naming it. SIGINT
(Ctrl-C), SIGTERM and SIGUSR1 are forwarded to every worker, so a SIGTERM
rehearses preemption: the workers stop after the same step, save it and exit
143, and so does the launcher (``pyramidnet_tf.exit_codes``). With
``PYRAMIDNET_TF_CHECK_FLAGS=1`` it checks its own flags and has the trainer
check the workers' flags, and starts no worker.

Deliberately no TensorFlow import: the launcher only manages processes.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import List, Optional, Sequence

from pyramidnet_tf import exit_codes

MODULE = "pyramidnet_tf.train"
# pyramidnet_tf.cli.console.CHECK_FLAGS_ENV (not imported: the launcher
# stays free of absl): check the command line only.
CHECK_FLAGS_ENV = "PYRAMIDNET_TF_CHECK_FLAGS"
GRACE_S = 30.0  # how long terminated workers get before SIGKILL
# A worker's exit codes that are not a failure of its own: finished,
# stopped by a forwarded signal after saving, aborted by a second Ctrl-C.
_EXPECTED = (None, exit_codes.FINISHED, exit_codes.PREEMPTED,
             exit_codes.ABORTED)


def free_ports(n: int, host: str = "127.0.0.1") -> List[int]:
  """n distinct ports that were free a moment ago (all held while picking).

  They are released before returning, so another process may take one
  before a worker binds it.

  Args:
    n: how many ports.
    host: the address to bind while picking.
  """
  sockets = []
  try:
    for _ in range(n):
      s = socket.socket()
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def tf_configs(ports: Sequence[int], host: str = "127.0.0.1") -> List[str]:
  """One TF_CONFIG JSON string per worker of a one-host cluster.

  Args:
    ports: one port per worker; worker ``i`` listens on ``host:ports[i]``.
    host: the workers' address.

  Returns:
    Worker ``i``'s TF_CONFIG at index ``i`` (worker 0 is the chief).
  """
  cluster = {"worker": [f"{host}:{p}" for p in ports]}
  return [json.dumps({"cluster": cluster,
                      "task": {"type": "worker", "index": i}})
          for i in range(len(ports))]


def _parse(argv: Sequence[str]):
  parser = argparse.ArgumentParser(
      prog="python -m pyramidnet_tf.launch_local",
      description="Start N local pyramidnet_tf.train workers with TF_CONFIG "
                  "(a one-machine rehearsal of a multi-worker job). Flags "
                  "after -- go to every worker.")
  parser.add_argument("--workers", type=int, default=2,
                      help="number of worker processes (>= 1; default 2)")
  parser.add_argument("--module", default=MODULE,
                      help=f"python module each worker runs (default {MODULE})")
  argv = list(argv)
  if "--" in argv:
    split = argv.index("--")
    own, train_args = argv[:split], argv[split + 1:]
  else:
    own, train_args = argv, []
  args = parser.parse_args(own)
  if args.workers < 1:
    parser.error(f"--workers must be >= 1; got {args.workers}")
  return args, train_args


def _pump(stream, prefix: str, lock: threading.Lock) -> None:
  for line in iter(stream.readline, b""):
    text = line.decode("utf-8", errors="replace").rstrip("\n")
    with lock:
      sys.stdout.write(f"{prefix} {text}\n")
      sys.stdout.flush()
  stream.close()


def _say(lock: threading.Lock, message: str) -> None:
  with lock:
    sys.stdout.write(f"[launch_local] {message}\n")
    sys.stdout.flush()


def _terminate(procs, sig=signal.SIGTERM) -> None:
  for proc in procs:
    if proc.poll() is None:
      try:
        proc.send_signal(sig)
      except ProcessLookupError:
        pass


def launch(workers: int, train_args: Sequence[str], module: str = MODULE,
           env: Optional[dict] = None) -> int:
  """Runs the workers to completion; returns the launcher's exit code.

  Args:
    workers: number of worker processes, >= 1.
    train_args: command-line arguments passed to every worker.
    module: the Python module each worker runs with ``python -m``.
    env: the workers' base environment (TF_CONFIG is replaced); None =
      this process's.

  Returns:
    0 when every worker exited 0; 143 when they stopped on a forwarded
    signal after saving (``exit_codes.PREEMPTED``: rerun to resume); 130
    when a second Ctrl-C aborted them; 1 when any failed otherwise (the
    others are then terminated).
  """
  base_env = dict(os.environ if env is None else env)
  base_env.pop("TF_CONFIG", None)
  base_env.setdefault("PYTHONUNBUFFERED", "1")
  lock = threading.Lock()
  ports = free_ports(workers)
  _say(lock, f"{workers} worker(s) on " +
       ", ".join(f"127.0.0.1:{p}" for p in ports) + "; worker 0 is the chief")
  procs, pumps = [], []
  received = []

  def forward(signum, frame):  # pylint: disable=unused-argument
    received.append(signum)
    _say(lock, f"got {signal.Signals(signum).name}; forwarding to workers")
    _terminate(procs, signum)

  previous = {s: signal.signal(s, forward)
              for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
  failed = None
  try:
    for index, config in enumerate(tf_configs(ports)):
      proc = subprocess.Popen(
          [sys.executable, "-m", module] + list(train_args),
          env=dict(base_env, TF_CONFIG=config), stdin=subprocess.DEVNULL,
          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
          start_new_session=True)  # signals reach workers only through us
      procs.append(proc)
      pump = threading.Thread(target=_pump, daemon=True,
                              args=(proc.stdout, f"[worker {index}]", lock))
      pump.start()
      pumps.append(pump)
    while any(p.poll() is None for p in procs):
      if failed is None:
        for index, proc in enumerate(procs):
          if proc.poll() not in _EXPECTED:
            failed = index
            _say(lock, f"worker {index} exited with code {proc.returncode}; "
                       "terminating the others")
            _terminate(procs)
            break
      time.sleep(0.1)
  finally:
    deadline = time.time() + GRACE_S
    for proc in procs:
      try:
        proc.wait(timeout=max(0.1, deadline - time.time()))
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pump in pumps:
      pump.join(timeout=5)
    for s, handler in previous.items():
      signal.signal(s, handler)
  codes = [p.returncode for p in procs]
  if failed is None:
    failed = next((i for i, c in enumerate(codes) if c not in _EXPECTED),
                  None)
  if failed is not None:
    _say(lock, f"FAILED: worker {failed} exited with code {codes[failed]} "
               f"(exit codes: {codes})")
    return exit_codes.FAILED
  if exit_codes.ABORTED in codes:
    _say(lock, f"aborted without saving (exit codes: {codes})")
    return exit_codes.ABORTED
  if exit_codes.PREEMPTED in codes:
    _say(lock, f"stopped after saving a checkpoint (exit codes: {codes}); "
               "rerun the same command to resume")
    return exit_codes.PREEMPTED
  _say(lock, f"all {workers} worker(s) exited 0")
  return exit_codes.FINISHED


def run(argv: Optional[Sequence[str]] = None) -> int:
  """Parses the launcher's flags and runs ``launch``; returns its exit code.

  Args:
    argv: the arguments after the program name; None = ``sys.argv[1:]``.
      Arguments after ``--`` go to every worker.
  """
  args, train_args = _parse(sys.argv[1:] if argv is None else argv)
  if os.environ.get(CHECK_FLAGS_ENV, "") == "1":
    # Only the command line: the workers' flags are the trainer's to check
    # (it inherits the variable, so it checks them and starts nothing).
    return subprocess.call([sys.executable, "-m", args.module] +
                           list(train_args))
  return launch(args.workers, train_args, args.module)


if __name__ == "__main__":
  sys.exit(run())

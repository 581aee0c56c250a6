"""Starts a tf.data service server for the trainer's ``--data_service``.

    python -m pyramidnet_tf.data_service --role=dispatcher --port=5050 \\
        --work_dir=/shared/runs/x/data_service
    python -m pyramidnet_tf.data_service --role=worker \\
        --dispatcher=dispatcher-host:5050 [--port=5051]

One dispatcher per training run and any number of workers on hosts with
spare CPUs: the workers read the shards (they must see ``--data_dir`` at the
same path as the trainer), decode and augment them, and stream batches to
every trainer worker. The dispatcher runs in fault-tolerant mode: it
journals its state in ``--work_dir`` before answering, so a dispatcher
restarted with the same ``--port`` and ``--work_dir`` carries on with the
jobs it had and the trainers reconnect. Workers may come and go.

A line ``data_service: <role> serving on ...`` on stdout says the server is
up. SIGTERM or SIGINT stops the server and exits 0. Bad flags end with one
line naming the flag, before any server starts.
"""

import os
import signal
import socket
import sys
import threading

from absl import flags

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import usage
from pyramidnet_tf.runtime.service_address import is_host
from pyramidnet_tf.runtime.service_address import parse_address

ROLES = ("dispatcher", "worker")
PROG = "pyramidnet_tf.data_service"

flags.DEFINE_enum("role", None, list(ROLES),
                  "dispatcher: one per training run, coordinates the jobs; "
                  "worker: prepares the input (start as many as needed).")
flags.DEFINE_integer("port", None,
                     "Port to serve on. Required for the dispatcher (a "
                     "restart must reuse it); worker: 0 or unset = any free "
                     "port.")
flags.DEFINE_string("dispatcher", None,
                    "--role=worker: the dispatcher, HOST:PORT (or "
                    "grpc://HOST:PORT).")
flags.DEFINE_string("work_dir", None,
                    "--role=dispatcher: directory of the dispatcher's "
                    "journal (created if missing); a restart with the same "
                    "directory resumes its jobs. Put it on storage that "
                    "outlives the dispatcher's host or pod.")
flags.DEFINE_string("worker_address", None,
                    "--role=worker: the host name or address trainers use to "
                    "reach this worker; default: this host's name "
                    "(socket.gethostname()).")
flags.DEFINE_float("worker_timeout", 0.0,
                   "--role=dispatcher: seconds without a heartbeat after "
                   "which a worker counts as gone and its tasks are dropped "
                   "(0 = TensorFlow's default).")
flags.DEFINE_float("heartbeat_interval", 0.0,
                   "--role=worker: seconds between heartbeats to the "
                   "dispatcher (0 = TensorFlow's default); keep it well "
                   "below the dispatcher's --worker_timeout.")

cli.register_number_validator("port", 0, 65535, integer=True,
                              note="0 = any free port, workers only")
cli.register_number_validator("worker_timeout", 0,
                              note="seconds; 0 = TensorFlow's default")
cli.register_number_validator("heartbeat_interval", 0,
                              note="seconds; 0 = TensorFlow's default")

def _check_flags(f, create_work_dir: bool = True) -> None:
  """Every flag against the role, before TensorFlow starts.

  Args:
    f: the parsed flags.
    create_work_dir: also create --work_dir and check it is writable (off
      when only the command line is checked, ``PYRAMIDNET_TF_CHECK_FLAGS``).
  """
  if f.role is None:
    raise cli.FlagError(f"--role is required: one of {', '.join(ROLES)}")
  other = {"dispatcher": ("dispatcher", "worker_address",
                          "heartbeat_interval"),
           "worker": ("work_dir", "worker_timeout")}[f.role]
  for name in other:
    if f[name].present:
      raise cli.FlagError(f"--{name} does not apply to --role={f.role}")
  if f.role == "dispatcher":
    if not f.port:
      raise cli.FlagError(
          "--port is required for --role=dispatcher (1..65535): trainers "
          "and workers connect to it, and a restarted dispatcher must "
          "listen on the same port")
    if not f.work_dir:
      raise cli.FlagError(
          "--work_dir is required for --role=dispatcher: its journal lets "
          "a restarted dispatcher resume the running jobs")
    if not create_work_dir:
      return
    try:
      os.makedirs(f.work_dir, exist_ok=True)
    except OSError as e:
      raise cli.FlagError(f"--work_dir={f.work_dir}: cannot create it: "
                          f"{e.strerror}") from None
    if not os.access(f.work_dir, os.W_OK | os.X_OK):
      raise cli.FlagError(f"--work_dir={f.work_dir}: not writable")
  else:
    if not f.dispatcher:
      raise cli.FlagError("--dispatcher is required for --role=worker: the "
                          "dispatcher's HOST:PORT")
    parse_address("dispatcher", f.dispatcher)
    if f.worker_address is not None and not is_host(f.worker_address):
      raise cli.FlagError(
          "--worker_address must be a host name or IP address, without a "
          f"port; got {f.worker_address!r}")


def _milliseconds(seconds: float):
  return int(seconds * 1000) if seconds else None


def _start_server(f):
  """The running server and the line that announces it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  service = tf.data.experimental.service
  if f.role == "dispatcher":
    config = service.DispatcherConfig(
        port=f.port, work_dir=f.work_dir, fault_tolerant_mode=True,
        worker_timeout_ms=_milliseconds(f.worker_timeout))
    server = service.DispatchServer(config)
    return server, (f"dispatcher serving on grpc://{socket.gethostname()}:"
                    f"{f.port} (work_dir {f.work_dir}, fault tolerant)")
  host = f.worker_address or socket.gethostname()
  config = service.WorkerConfig(
      dispatcher_address=parse_address("dispatcher", f.dispatcher),
      worker_address=f"{host}:%port%", port=f.port or 0,
      heartbeat_interval_ms=_milliseconds(f.heartbeat_interval))
  server = service.WorkerServer(config)
  # pylint: disable-next=protected-access
  port = server._address.rsplit(":", 1)[1]
  return server, (f"worker serving on {host}:{port} for dispatcher "
                  f"{f.dispatcher}")


def _start_error(f, error: Exception) -> str:
  text = str(error).strip().splitlines()[0] if str(error).strip() else ""
  if "address" in text.lower() and ("use" in text.lower() or
                                    "bind" in text.lower()):
    return f"--port={f.port}: cannot listen there ({text})"
  return f"cannot start the {f.role}: {text or type(error).__name__}"


def main(argv):
  del argv  # console_base.run refuses positional arguments
  f = flags.FLAGS
  _check_flags(f)
  stop = threading.Event()
  received = []

  def on_signal(signum, _):
    received.append(signal.Signals(signum).name)
    stop.set()
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  try:
    server, line = _start_server(f)
  except Exception as e:  # pylint: disable=broad-except
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if not isinstance(e, (tf.errors.OpError, RuntimeError)):
      raise
    raise cli.UserError(_start_error(f, e)) from None
  print(f"data_service: {line}", flush=True)
  # Waiting in Python, not in server.join(), so the signal handler runs.
  while not stop.wait(0.5):
    pass
  server.stop()
  print(f"data_service: {f.role} stopped ({received[0]})", flush=True)


def run():
  console.run(PROG, main, doc=__doc__, groups=usage.DATA_SERVICE_GROUPS,
              knobs=usage.DATA_SERVICE_KNOBS,
              flags_check=lambda: _check_flags(flags.FLAGS,
                                               create_work_dir=False))


if __name__ == "__main__":
  sys.exit(run())

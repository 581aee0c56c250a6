"""The Dockerfile, built and run: the image trains as uid 1000, stops with
143 when a container is evicted and resumes, and a code edit rebuilds only
the code layers.

A real `podman build` of the repository's Dockerfile (its CPU variant, on a
Debian base made from Debian packages, offline from a wheel directory: see
tests/container/engine.py), then two containers of the image as the two
workers of one MultiWorkerMirroredStrategy cluster over loopback (host
network, TF_CONFIG), with the model directory bind-mounted from here.
Skipped, saying why, only where containers cannot run at all (no podman,
not root, no storage driver or OCI runtime that works).
"""

import json
import os
import re
import socket
import subprocess
import time
import uuid

import pytest

from pyramidnet_tf import exit_codes
from tests import train_fixtures as fx
from tests.container import engine

TAG = "localhost/pyramidnet-tf-test:cpu"
UID = 1000


def _skip(reason):
  print(f"SKIPPED: {reason}")
  pytest.skip(reason)


@pytest.fixture(scope="module")
def podman():
  try:
    return engine.setup()
  except engine.Unavailable as e:
    _skip(str(e))


@pytest.fixture(scope="module")
def base(podman):
  """The Debian base image; picks the OCI runtime that can run it here."""
  try:
    tag = engine.debian_base(podman)
    engine.choose_runtime(podman, tag)
  except engine.Unavailable as e:
    _skip(str(e))
  return tag


@pytest.fixture(scope="module")
def context(tmp_path_factory):
  return engine.copy_context(str(tmp_path_factory.mktemp("build") / "src"))


@pytest.fixture(scope="module")
def image(podman, base, context):
  """The CPU image of the repository's Dockerfile: (image id, build log).

  The id, not the tag: a build of another checkout may move the tag.
  """
  wheels = engine.wheel_dir(context, "cpu")
  start = time.monotonic()
  log = engine.build(podman, context, TAG, base, "cpu", wheels)
  image_id = podman.image_id(TAG)
  print(f"build: {time.monotonic() - start:.0f} s, "
        f"{podman.size(image_id) / 1e9:.2f} GB")
  return image_id, log


def _free_ports(n):
  sockets = []
  try:
    for _ in range(n):
      s = socket.socket()
      s.bind(("127.0.0.1", 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def _train(podman, image, args, data_dir, model_dir, log_dir,
           evict_after=None):
  """Two containers as the two workers of one cluster, to their end.

  Args:
    podman: the engine.Podman to run them with.
    image: the image to run.
    args: the trainer's flags besides --data_dir and --model_dir.
    data_dir: host directory mounted read-only as /data.
    model_dir: host directory mounted as /model.
    log_dir: where worker<i>.log is written.
    evict_after: text; once worker 0 has printed it, worker 1's container
      gets SIGTERM, as the kubelet sends it to an evicted pod.

  Returns:
    (exit codes, logs) of worker 0 and worker 1.
  """
  os.makedirs(log_dir, exist_ok=True)
  ports = _free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  names = [f"pyramidnet-tf-test-{uuid.uuid4().hex[:8]}-{i}" for i in range(2)]
  paths = [os.path.join(log_dir, f"worker{i}.log") for i in range(2)]
  procs, logs = [], []

  def text(index):
    with open(paths[index]) as f:
      return f.read()
  try:
    for index, name in enumerate(names):
      config = json.dumps({"cluster": cluster,
                           "task": {"type": "worker", "index": index}})
      log = open(paths[index], "w")
      logs.append(log)
      procs.append(subprocess.Popen(podman.run_command(
          "--rm", "--name", name, "--network=host",
          "--env", f"TF_CONFIG={config}", "--env", "TF_CPP_MIN_LOG_LEVEL=2",
          "--volume", f"{data_dir}:/data:ro",
          "--volume", f"{model_dir}:/model",
          image, "python", "-m", "pyramidnet_tf.train",
          "--data_dir=/data", "--model_dir=/model", *args),
          stdout=log, stderr=subprocess.STDOUT))
    if evict_after:
      deadline = time.monotonic() + 900  # a hang guard, not a speed check
      while evict_after not in text(0):
        assert all(p.poll() is None for p in procs), text(0) + text(1)
        assert time.monotonic() < deadline, text(0)[-3000:]
        time.sleep(0.2)
      podman("kill", "--signal", "TERM", names[1])
    codes = [proc.wait(timeout=900) for proc in procs]
  finally:
    for name in names:
      podman("rm", "--force", "--ignore", name, check=False)
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=60)
    for log in logs:
      log.close()
  return codes, [text(0), text(1)]


def _joined(logs):
  return "\n=====\n".join(log[-3000:] for log in logs)


def test_two_containers_train_together_as_uid_1000(podman, image, tmp_path):
  """Evicting one worker's container stops both with 143 after a checkpoint
  (what Kubernetes restarts); the same command then resumes there and both
  finish with 0, the same weights, and files owned by the image's user."""
  image_id, _ = image
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=4,
                              train_per_class=8, eval_per_class=3, size=16,
                              shards=2)
  os.chmod(data_dir, 0o755)  # readable by the image's user
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  os.chown(model_dir, UID, UID)  # what the k8s manifests' init container does
  args = fx.TINY_MODEL + [
      "--batch_size=8", "--steps_per_loop=1", "--log_every_steps=1",
      "--checkpoint_every_steps=100000", "--eval_every_epochs=0",
      "--collective_timeout=300"]
  codes, logs = _train(podman, image_id, args + ["--train_steps=100000"],
                       data_dir, str(model_dir), str(tmp_path / "evicted"),
                       evict_after="first step ready")
  assert codes == [exit_codes.PREEMPTED] * 2, _joined(logs)
  stopped = re.search(r"stopped by SIGTERM at step (\d+)/", logs[1])
  assert stopped, _joined(logs)
  saved = int(stopped.group(1))
  assert os.path.exists(model_dir / f"ckpt-{saved}.index"), _joined(logs)
  # The rerun of the same command (a new pod) resumes there.
  codes, logs = _train(podman, image_id, args + [f"--train_steps={saved + 2}"],
                       data_dir, str(model_dir), str(tmp_path / "resumed"))
  assert codes == [exit_codes.FINISHED] * 2, _joined(logs)
  assert all(f"resuming at step {saved};" in log for log in logs), (
      _joined(logs))
  results = [fx.train_result(log) for log in logs]
  assert results[0]["step"] == results[1]["step"] == saved + 2
  assert results[0]["weights_fingerprint"] == results[1][
      "weights_fingerprint"]
  assert "2 replicas x 4 on 2 workers" in logs[0]
  # Everything the chief wrote belongs to the image's user.
  written = [os.path.join(parent, name)
             for parent, _, names in os.walk(model_dir) for name in names]
  assert f"ckpt-{saved + 2}.index" in {os.path.basename(p) for p in written}
  owners = {(os.stat(p).st_uid, os.stat(p).st_gid) for p in written}
  assert owners == {(UID, UID)}, owners


def test_a_code_edit_rebuilds_only_the_code_layers(podman, base, image,
                                                  context):
  image_id, _ = image
  with open(os.path.join(context, "pyramidnet_tf", "__init__.py"), "a") as f:
    f.write(f"# edit {uuid.uuid4().hex}\n")
  edited = f"{TAG}-edited-{uuid.uuid4().hex[:8]}"
  start = time.monotonic()
  wheels = engine.wheel_dir(context, "cpu")
  log = engine.build(podman, context, edited, base, "cpu", wheels)
  print(f"rebuild after a code edit: {time.monotonic() - start:.0f} s")
  try:
    steps = engine.cached_steps(log)
    (dependencies,) = [s for s in steps if "pip install pip==" in s]
    (code,) = [s for s in steps if s.startswith("COPY pyramidnet_tf/")]
    assert steps[dependencies], log
    assert not steps[code], log
    before, after = podman.layers(image_id), podman.layers(edited)
    (index,) = [i for i, layer in enumerate(before)
                if "pip install pip==" in layer["created_by"]]
    assert before[:index + 1] == after[:index + 1]
    assert before[-1]["digest"] != after[-1]["digest"]
  finally:
    podman.remove_image(edited)

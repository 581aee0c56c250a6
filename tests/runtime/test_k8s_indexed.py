"""--cluster_resolver=k8s_indexed: TF_CONFIG from a Kubernetes Indexed Job pod.

No Kubernetes here: the tests give the process what such a pod gets, the
variable JOB_COMPLETION_INDEX and the hostname <job-name>-<index> (a
stand-in for socket.gethostname), and check the cluster the trainer builds
from them, and the one-line errors when a piece is missing or disagrees.
"""

import glob
import json
import os
import signal
import subprocess
import sys

import pytest

from pyramidnet_tf.runtime import cluster_env
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import config as config_lib
from tests import train_fixtures as fx


@pytest.fixture
def pod(monkeypatch):
  """An Indexed Job pod: sets JOB_COMPLETION_INDEX and the hostname."""
  monkeypatch.delenv("TF_CONFIG", raising=False)
  monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)

  def enter(index, hostname):
    if index is not None:
      monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
    monkeypatch.setattr(cluster_env.socket, "gethostname", lambda: hostname)
  return enter


def test_worker_1_of_2_from_the_hostname(pod):
  pod(1, "pyramidnet200-a300-1")
  config = cluster_env.k8s_indexed_tf_config(2, 2222, "pyramidnet-workers")
  assert config == {
      "cluster": {"worker": [
          "pyramidnet200-a300-0.pyramidnet-workers:2222",
          "pyramidnet200-a300-1.pyramidnet-workers:2222"]},
      "task": {"type": "worker", "index": 1}}


def test_explicit_job_name_and_fqdn_hostname(pod):
  # setHostnameAsFQDN: the hostname carries the subdomain and namespace.
  pod(0, "train-0.workers.ml.svc.cluster.local")
  config = cluster_env.k8s_indexed_tf_config(3, 31000, "workers",
                                            job_name="train")
  assert config["cluster"]["worker"] == [
      "train-0.workers:31000", "train-1.workers:31000",
      "train-2.workers:31000"]
  assert config["task"] == {"type": "worker", "index": 0}


def test_jobset_pod_names_its_child_job(pod):
  # A JobSet's pods are <jobset>-<replicatedJob>-<jobIndex>-<podIndex>; the
  # child Job is <jobset>-<replicatedJob>-<jobIndex>.
  pod(1, "pyramidnet-workers-0-1")
  config = cluster_env.k8s_indexed_tf_config(2, 2222, "pyramidnet")
  assert config["cluster"]["worker"] == [
      "pyramidnet-workers-0-0.pyramidnet:2222",
      "pyramidnet-workers-0-1.pyramidnet:2222"]


@pytest.mark.parametrize("index,hostname,kwargs,message", [
    (None, "job-0", {}, r"needs JOB_COMPLETION_INDEX, which Kubernetes sets"),
    ("one", "job-0", {}, r"JOB_COMPLETION_INDEX must be a completion index"),
    ("-1", "job-0", {}, r"JOB_COMPLETION_INDEX must be a completion index"),
    (0, "job-0", dict(num_workers=0), r"needs --k8s_num_workers"),
    (2, "job-2", {}, r"JOB_COMPLETION_INDEX=2 is not below "
     r"--k8s_num_workers=2"),
    (0, "job-0", dict(port=0), r"--k8s_port must be in 1\.\.65535"),
    (0, "job-0", dict(service=None), r"needs --k8s_service"),
    (0, "job-0", dict(service="Workers_1"), r"--k8s_service must be a DNS "
     r"label"),
    (0, "job-0", dict(job_name="job.x"), r"--k8s_job_name must be a DNS "
     r"label"),
    (1, "job-1", dict(job_name="other"), r"hostname is 'job-1', not "
     r"--k8s_job_name"),
    (1, "laptop", {}, r"cannot take the Job name from this pod's hostname "
     r"'laptop'.*pass --k8s_job_name"),
])
def test_errors_name_the_variable_or_flag(pod, index, hostname, kwargs,
                                          message):
  pod(index, hostname)
  args = dict(num_workers=2, port=2222, service="svc")
  args.update(kwargs)
  with pytest.raises(ValueError, match=message):
    cluster_env.k8s_indexed_tf_config(**args)


def test_create_strategy_sets_tf_config(pod):
  pod(0, "solo-0")
  strategy = distribute.create_strategy(config_lib.RuntimeConfig(
      cluster_resolver="k8s_indexed", k8s_num_workers=1,
      k8s_service="solo"))
  assert json.loads(os.environ["TF_CONFIG"]) == {
      "cluster": {"worker": ["solo-0.solo:2222"]},
      "task": {"type": "worker", "index": 0}}
  # One pod: nothing to all-reduce with, so auto stays on this host.
  assert distribute.num_workers(strategy) == 1
  with pytest.raises(ValueError, match=r"--cluster_resolver=k8s_indexed "
                     r"needs --distribution=auto or multi_worker"):
    distribute.create_strategy(config_lib.RuntimeConfig(
        distribution="mirrored", cluster_resolver="k8s_indexed",
        k8s_num_workers=1, k8s_service="solo"))


def test_a_different_tf_config_is_refused(pod, monkeypatch):
  pod(0, "job-0")
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": ["a:1", "b:1"]},
       "task": {"type": "worker", "index": 0}}))
  config = cluster_env.k8s_indexed_tf_config(2, 2222, "svc")
  with pytest.raises(ValueError, match=r"TF_CONFIG is set, but "
                     r"--cluster_resolver=k8s_indexed builds it"):
    cluster_env.use_k8s_indexed_tf_config(config)
  monkeypatch.setenv("TF_CONFIG", json.dumps(config))
  cluster_env.use_k8s_indexed_tf_config(config)  # the same cluster: fine


def test_trainer_outside_a_pod_is_one_line(tmp_path):
  """The CLI checks the pod environment before TensorFlow starts."""
  env = {k: v for k, v in fx.cli_env().items()
         if k not in ("JOB_COMPLETION_INDEX", "TF_CONFIG")}
  proc = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.train", "--dataset=synthetic",
       "--cluster_resolver=k8s_indexed", "--k8s_num_workers=2",
       "--k8s_service=workers", f"--model_dir={tmp_path / 'm'}"],
      cwd=fx.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "pyramidnet_tf.train: error: --cluster_resolver=k8s_indexed needs "
      "JOB_COMPLETION_INDEX"), proc.stderr[-2000:]
  assert not (tmp_path / "m").exists()


def _run(*args):
  return subprocess.run(list(args), capture_output=True, text=True,
                        timeout=30)


@pytest.fixture
def two_pod_network(tmp_path):
  """Two network namespaces joined by a veth pair, like two pods.

  Yields (namespace, address) per pod; skips where namespaces cannot be made
  (not root, no ``ip``). Each pod gets its own network so both workers listen
  on the same --k8s_port, as pods do.
  """
  if os.geteuid() != 0 or _run("sh", "-c", "command -v ip unshare"
                               ).returncode != 0:
    pytest.skip("needs root, ip and unshare for two pod-like network "
                "namespaces")
  tag = f"k8st{os.getpid() % 100000}"
  names = [f"{tag}p0", f"{tag}p1"]
  subnet = 100 + os.getpid() % 100
  pods = [(names[i], f"10.{subnet}.{os.getpid() % 200}.{i + 1}")
          for i in range(2)]
  try:
    for name in names:
      if _run("ip", "netns", "add", name).returncode != 0:
        pytest.skip("cannot create network namespaces here")
    veth = [f"{tag}v0", f"{tag}v1"]
    steps = [("ip", "link", "add", veth[0], "type", "veth", "peer", "name",
              veth[1])]
    for (name, address), link in zip(pods, veth):
      steps += [("ip", "link", "set", link, "netns", name),
                ("ip", "-n", name, "addr", "add", f"{address}/24", "dev",
                 link),
                ("ip", "-n", name, "link", "set", link, "up"),
                ("ip", "-n", name, "link", "set", "lo", "up")]
    for step in steps:
      result = _run(*step)
      if result.returncode != 0:
        pytest.skip(f"cannot join the namespaces ({' '.join(step)}: "
                    f"{result.stderr.strip()})")
    yield pods
  finally:
    for name in names:
      _run("ip", "netns", "del", name)  # also removes the veth pair


def test_two_indexed_job_pods_train_together(tmp_path, two_pod_network):
  """Two 'pods' (own network, hostname <job>-<i>, /etc/hosts standing in for
  the headless Service's DNS) train a tiny synthetic model."""
  job, service, port = "tinyjob", "tinysvc", 2222
  hosts = tmp_path / "hosts"
  hosts.write_text("127.0.0.1 localhost\n" + "".join(
      f"{address} {job}-{i}.{service}\n"
      for i, (_, address) in enumerate(two_pod_network)))
  model_dir = str(tmp_path / "model")
  args = ["--dataset=synthetic", "--synthetic_like=cifar10", "--depth=8",
          "--alpha=4", "--nobottleneck", "--image_size=16", "--batch_size=8",
          "--train_steps=2", "--steps_per_loop=2", "--log_every_steps=2",
          "--collective_timeout=60", "--cluster_resolver=k8s_indexed",
          "--k8s_num_workers=2", f"--k8s_service={service}",
          f"--k8s_port={port}", f"--model_dir={model_dir}"]
  procs, logs = [], []
  try:
    for index, (namespace, _) in enumerate(two_pod_network):
      log = open(tmp_path / f"pod{index}.log", "w")
      logs.append(log)
      env = {k: v for k, v in fx.cli_env().items()
             if k not in ("TF_CONFIG", "JOB_COMPLETION_INDEX")}
      env["JOB_COMPLETION_INDEX"] = str(index)
      procs.append(subprocess.Popen(
          ["ip", "netns", "exec", namespace, "unshare", "--uts", "--mount",
           "--fork", "sh", "-c",
           f'hostname {job}-{index} && mount --bind {hosts} /etc/hosts && '
           'exec "$@"', "pod", sys.executable, "-m", "pyramidnet_tf.train",
           *args], cwd=fx.REPO, env=env, stdout=log, stderr=log,
          start_new_session=True))  # its own process group: killed whole
    codes = [p.wait(timeout=180) for p in procs]
  finally:
    for p in procs:
      try:  # the wrapper and the trainer it forked (unshare --fork)
        os.killpg(p.pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
      p.wait(timeout=30)
    for log in logs:
      log.close()
  text = [(tmp_path / f"pod{i}.log").read_text() for i in range(2)]
  assert codes == [0, 0], "\n=====\n".join(t[-3000:] for t in text)
  assert (f"'worker': ['{job}-0.{service}:{port}', "
          f"'{job}-1.{service}:{port}']") in text[0]
  assert "2 replicas x 4 on 2 workers" in text[0]
  results = [fx.train_result(t) for t in text]
  assert results[0]["step"] == results[1]["step"] == 2
  assert results[0]["weights_fingerprint"] == results[1][
      "weights_fingerprint"]
  assert len(glob.glob(os.path.join(model_dir, "tensorboard", "events.out.*"))) == 1

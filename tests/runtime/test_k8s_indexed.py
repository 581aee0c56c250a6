"""--cluster_resolver=k8s_indexed: TF_CONFIG from a Kubernetes Indexed Job pod.

No Kubernetes here: the tests give the process what such a pod gets, the
variable JOB_COMPLETION_INDEX and the hostname <job-name>-<index> (a
stand-in for socket.gethostname), and check the cluster the trainer builds
from them, and the one-line errors when a piece is missing or disagrees.
"""

import json
import os
import subprocess
import sys

import pytest

from pyramidnet_tf.runtime import distribute
from tests import train_fixtures as fx


@pytest.fixture
def pod(monkeypatch):
  """An Indexed Job pod: sets JOB_COMPLETION_INDEX and the hostname."""
  monkeypatch.delenv("TF_CONFIG", raising=False)
  monkeypatch.delenv("JOB_COMPLETION_INDEX", raising=False)

  def enter(index, hostname):
    if index is not None:
      monkeypatch.setenv("JOB_COMPLETION_INDEX", str(index))
    monkeypatch.setattr(distribute.socket, "gethostname", lambda: hostname)
  return enter


def test_worker_1_of_2_from_the_hostname(pod):
  pod(1, "pyramidnet200-a300-1")
  config = distribute.k8s_indexed_tf_config(2, 2222, "pyramidnet-workers")
  assert config == {
      "cluster": {"worker": [
          "pyramidnet200-a300-0.pyramidnet-workers:2222",
          "pyramidnet200-a300-1.pyramidnet-workers:2222"]},
      "task": {"type": "worker", "index": 1}}


def test_explicit_job_name_and_fqdn_hostname(pod):
  # setHostnameAsFQDN: the hostname carries the subdomain and namespace.
  pod(0, "train-0.workers.ml.svc.cluster.local")
  config = distribute.k8s_indexed_tf_config(3, 31000, "workers",
                                            job_name="train")
  assert config["cluster"]["worker"] == [
      "train-0.workers:31000", "train-1.workers:31000",
      "train-2.workers:31000"]
  assert config["task"] == {"type": "worker", "index": 0}


def test_jobset_pod_names_its_child_job(pod):
  # A JobSet's pods are <jobset>-<replicatedJob>-<jobIndex>-<podIndex>; the
  # child Job is <jobset>-<replicatedJob>-<jobIndex>.
  pod(1, "pyramidnet-workers-0-1")
  config = distribute.k8s_indexed_tf_config(2, 2222, "pyramidnet")
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
    distribute.k8s_indexed_tf_config(**args)


def test_create_strategy_sets_tf_config(pod):
  pod(0, "solo-0")
  strategy = distribute.create_strategy(
      "auto", cluster_resolver="k8s_indexed", k8s_num_workers=1,
      k8s_service="solo")
  assert json.loads(os.environ["TF_CONFIG"]) == {
      "cluster": {"worker": ["solo-0.solo:2222"]},
      "task": {"type": "worker", "index": 0}}
  # One pod: nothing to all-reduce with, so auto stays on this host.
  assert distribute.num_workers(strategy) == 1
  with pytest.raises(ValueError, match=r"--cluster_resolver=k8s_indexed "
                     r"needs --distribution=auto or multi_worker"):
    distribute.create_strategy("mirrored", cluster_resolver="k8s_indexed",
                               k8s_num_workers=1, k8s_service="solo")


def test_a_different_tf_config_is_refused(pod, monkeypatch):
  pod(0, "job-0")
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"worker": ["a:1", "b:1"]},
       "task": {"type": "worker", "index": 0}}))
  config = distribute.k8s_indexed_tf_config(2, 2222, "svc")
  with pytest.raises(ValueError, match=r"TF_CONFIG is set, but "
                     r"--cluster_resolver=k8s_indexed builds it"):
    distribute.use_k8s_indexed_tf_config(config)
  monkeypatch.setenv("TF_CONFIG", json.dumps(config))
  distribute.use_k8s_indexed_tf_config(config)  # the same cluster: fine


def test_trainer_outside_a_pod_is_one_line(tmp_path):
  """The CLI checks the pod environment before TensorFlow starts."""
  env = {k: v for k, v in fx.cli_env().items()
         if k not in ("JOB_COMPLETION_INDEX", "TF_CONFIG")}
  proc = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.train", "--dataset=synthetic",
       "--cluster_resolver=k8s_indexed", "--k8s_num_workers=2",
       "--k8s_service=workers", f"--model_dir={tmp_path / 'm'}"],
      cwd=fx.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "pyramidnet_tf.train: error: --cluster_resolver=k8s_indexed needs "
      "JOB_COMPLETION_INDEX"), proc.stderr[-2000:]
  assert not (tmp_path / "m").exists()

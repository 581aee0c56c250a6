"""The Kubernetes manifests in k8s/: well-formed, and consistent with the
trainer's flags (flags exist, flagfile in the repo, dirs on the shared
volume; for the Indexed Job, the cluster the trainer builds in each pod is the
one the Job and its headless Service give it)."""

import os

import pytest

from tests import train_fixtures as fx

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed; the TFJob manifest check needs it")

MANIFEST = os.path.join(fx.REPO, "k8s", "tfjob-pyramidnet.yaml")


def test_tfjob_manifest():
  with open(MANIFEST) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
  by_kind = {d["kind"]: d for d in docs}
  assert set(by_kind) == {"PersistentVolumeClaim", "TFJob"}
  job = by_kind["TFJob"]
  assert job["apiVersion"] == "kubeflow.org/v1"
  assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"}
  worker = job["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["replicas"] == 2
  pod = worker["template"]["spec"]
  (container,) = pod["containers"]
  assert container["name"] == "tensorflow"
  assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 8
  # The shared volume is the PVC of this file and holds data and model_dir.
  claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"] if "persistentVolumeClaim" in v}
  assert claims == {"shared": by_kind["PersistentVolumeClaim"]["metadata"][
      "name"]}
  assert "ReadWriteMany" in by_kind["PersistentVolumeClaim"]["spec"][
      "accessModes"]
  (mount,) = [m["mountPath"] for m in container["volumeMounts"]
              if m["name"] == "shared"]
  command = container["command"]
  assert command[:3] == ["python", "-m", "pyramidnet_tf.train"]
  args = dict(a[2:].split("=", 1) for a in command[3:])
  assert os.path.isfile(os.path.join(fx.REPO, args["flagfile"]))
  for name in ("data_dir", "model_dir"):
    assert args[name].startswith(mount + "/"), (name, args[name])
  # Every flag is one the trainer defines; the operator sets TF_CONFIG.
  from absl import flags  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import train  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  for name in set(args) - {"flagfile"}:  # absl handles --flagfile itself
    assert name in flags.FLAGS, f"--{name} is not a trainer flag"
  assert "TF_CONFIG" not in str(container.get("env", ""))
  # Global batch 1024 on 2 x 8 GPUs: the linear rule, 0.1 per 256.
  replicas = worker["replicas"] * int(
      container["resources"]["limits"]["nvidia.com/gpu"])
  assert int(args["batch_size"]) % replicas == 0
  assert float(args["lr"]) == pytest.approx(0.1 * int(args["batch_size"])
                                            / 256)


INDEXED_JOB = os.path.join(fx.REPO, "k8s", "indexed-job-pyramidnet.yaml")


def _pod_tf_config(command, index, hostname, monkeypatch):
  """What the trainer makes of ``command`` in a pod with ``index``.

  Parses the command's flags with the trainer's own flag definitions (the
  flagfile included, from the repository root as the image's workingDir)
  and validates them as the trainer does before TensorFlow starts.
  """
  from absl import flags  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import train  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  from pyramidnet_tf.cli import train_config  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.runtime import cluster_env  # pylint: disable=g-import-not-at-top
  assert command[:3] == ["python", "-m", "pyramidnet_tf.train"]
  monkeypatch.chdir(fx.REPO)
  monkeypatch.delenv("TF_CONFIG", raising=False)
  monkeypatch.setenv(cluster_env.K8S_INDEX_VARIABLE, str(index))
  monkeypatch.setattr(cluster_env.socket, "gethostname", lambda: hostname)
  flag_values = flags.FLAGS
  saved = flag_values.flags_into_string()
  try:
    flag_values.unparse_flags()
    flag_values(["train"] + command[3:])
    config = train_config.from_flags(check_model_dir=False)
    runtime = config.runtime
    return config, cluster_env.k8s_indexed_tf_config(
        runtime.k8s_num_workers, runtime.k8s_port, runtime.k8s_service,
        runtime.k8s_job_name)
  finally:
    flag_values.unparse_flags()
    flag_values(["train", *[line for line in saved.splitlines() if line]])


def test_indexed_job_manifest(monkeypatch):
  """The operator-free manifest: Indexed Job + headless Service whose names,
  counts and port are the ones the trainer's k8s_indexed flags say."""
  with open(INDEXED_JOB) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
  by_kind = {d["kind"]: d for d in docs}
  assert set(by_kind) == {"PersistentVolumeClaim", "Service", "Job"}
  job, service = by_kind["Job"], by_kind["Service"]
  assert job["apiVersion"] == "batch/v1"
  spec = job["spec"]
  assert spec["completionMode"] == "Indexed"
  pod = spec["template"]["spec"]
  assert pod["restartPolicy"] == "Never"  # what podFailurePolicy requires
  (container,) = pod["containers"]
  assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 8
  job_name = job["metadata"]["name"]
  # Headless Service selecting the Job's pods, named as their subdomain.
  assert service["spec"]["clusterIP"] == "None"
  assert service["spec"]["selector"] == {"job-name": job_name}
  assert pod["subdomain"] == service["metadata"]["name"]
  claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"] if "persistentVolumeClaim" in v}
  assert claims == {"shared": by_kind["PersistentVolumeClaim"]["metadata"][
      "name"]}
  (mount,) = [m["mountPath"] for m in container["volumeMounts"]
              if m["name"] == "shared"]
  assert "TF_CONFIG" not in str(container.get("env", ""))

  workers = spec["completions"]
  assert spec["parallelism"] == workers == 2
  for index in range(workers):
    config, tf_config = _pod_tf_config(
        container["command"], index, f"{job_name}-{index}", monkeypatch)
    runtime = config.runtime
    assert runtime.cluster_resolver == "k8s_indexed"
    assert runtime.k8s_num_workers == workers
    assert runtime.k8s_service == service["metadata"]["name"]
    (port,) = service["spec"]["ports"]
    assert runtime.k8s_port == port["port"] == port["targetPort"] == (
        container["ports"][0]["containerPort"])
    assert tf_config == {
        "cluster": {"worker": [
            f"{job_name}-{i}.{pod['subdomain']}:{runtime.k8s_port}"
            for i in range(workers)]},
        "task": {"type": "worker", "index": index}}
  # The flagfile's network on shared storage, the linear LR rule.
  assert config.model.dataset == "imagenet" and config.model.depth == 200
  for path in (config.data.data_dir, config.output.model_dir):
    assert path.startswith(mount + "/"), path
  replicas = workers * int(container["resources"]["limits"]["nvidia.com/gpu"])
  assert config.schedule.batch_size % replicas == 0
  assert config.schedule.lr == pytest.approx(
      0.1 * config.schedule.batch_size / 256)


JOBSET = os.path.join(fx.REPO, "k8s", "jobset-pyramidnet.yaml")


def test_jobset_manifest(monkeypatch):
  """The JobSet variant: its child Job's pods are named as the trainer's
  --k8s_job_name says, in the subdomain --k8s_service names."""
  with open(JOBSET) as f:
    docs = [d for d in yaml.safe_load_all(f) if d]
  by_kind = {d["kind"]: d for d in docs}
  assert set(by_kind) == {"PersistentVolumeClaim", "JobSet"}
  jobset = by_kind["JobSet"]
  assert jobset["apiVersion"] == "jobset.x-k8s.io/v1alpha2"
  network = jobset["spec"]["network"]
  assert network["enableDNSHostnames"] is True
  (replicated,) = jobset["spec"]["replicatedJobs"]
  assert replicated["replicas"] == 1  # one Job: one cluster of workers
  spec = replicated["template"]["spec"]
  assert spec["completionMode"] == "Indexed"
  workers = spec["completions"]
  assert spec["parallelism"] == workers == 2
  pod = spec["template"]["spec"]
  (container,) = pod["containers"]
  job_name = f"{jobset['metadata']['name']}-{replicated['name']}-0"
  for index in range(workers):
    config, tf_config = _pod_tf_config(
        container["command"], index, f"{job_name}-{index}", monkeypatch)
    assert config.runtime.k8s_num_workers == workers
    assert tf_config["cluster"]["worker"] == [
        f"{job_name}-{i}.{network['subdomain']}:{config.runtime.k8s_port}"
        for i in range(workers)]
    assert tf_config["task"]["index"] == index
  # The same training run as the Indexed Job manifest: only the k8s names
  # differ.
  with open(INDEXED_JOB) as f:
    (job,) = [d for d in yaml.safe_load_all(f) if d and d["kind"] == "Job"]
  (job_container,) = job["spec"]["template"]["spec"]["containers"]

  def without_names(command):
    return [a for a in command
            if not a.startswith(("--k8s_service=", "--k8s_job_name="))]
  assert without_names(container["command"]) == without_names(
      job_container["command"])
  for key in ("image", "workingDir", "resources", "volumeMounts", "ports"):
    assert container[key] == job_container[key], key
  assert pod["securityContext"] == job["spec"]["template"]["spec"][
      "securityContext"]

"""The Kubernetes manifests in k8s/: valid for the Kubernetes versions they
claim (kubernetes-validate --strict; the JobSet and TFJob against schemas of
their CRDs' fields), consistent with the trainer's flags (flags exist,
flagfile in the repo, dirs on the shared volume; for the Indexed Job and the
JobSet, the cluster the trainer builds in each pod is the one the Job and its
headless Service give it), and acting on the trainer's exit codes as their
header comments say."""

import copy
import json
import os
import re
import subprocess

import pytest

from pyramidnet_tf import exit_codes
from tests import train_fixtures as fx

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed; the manifest checks need it")

K8S = os.path.join(fx.REPO, "k8s")
SHARED_VOLUME = os.path.join(K8S, "shared-volume.yaml")
MANIFEST = os.path.join(K8S, "tfjob-pyramidnet.yaml")
SCHEMAS = os.path.join(fx.REPO, "tests", "k8s_schemas")
# The oldest and the newest Kubernetes the manifests are checked against; the
# headers and the README claim ">= 1.29".
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")


def _docs(path):
  with open(path) as f:
    return [d for d in yaml.safe_load_all(f) if d]


def _shared_claim():
  (claim,) = _docs(SHARED_VOLUME)
  return claim


def test_tfjob_manifest():
  by_kind = {d["kind"]: d for d in _docs(MANIFEST)}
  assert set(by_kind) == {"TFJob"}
  job = by_kind["TFJob"]
  assert job["apiVersion"] == "kubeflow.org/v1"
  assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"}
  worker = job["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["replicas"] == 2
  pod = worker["template"]["spec"]
  (container,) = pod["containers"]
  assert container["name"] == "tensorflow"
  assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 8
  # A pinned image (the tag the Dockerfile's header builds), never :latest.
  assert not container["image"].endswith(":latest")
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
  assert set(by_kind) == {"Service", "Job"}
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
  assert set(by_kind) == {"JobSet"}
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
  job_pod = job["spec"]["template"]["spec"]
  for key in ("securityContext", "initContainers", "volumes",
              "terminationGracePeriodSeconds"):
    assert pod[key] == job_pod[key], key


WORKLOADS = (INDEXED_JOB, JOBSET, MANIFEST)


def _workload(path):
  """The workload object of a manifest (the Job, JobSet or TFJob)."""
  (workload,) = [d for d in _docs(path) if d["kind"] != "Service"]
  return workload


def _pod_spec(workload):
  if workload["kind"] == "JobSet":
    return workload["spec"]["replicatedJobs"][0]["template"]["spec"][
        "template"]["spec"]
  if workload["kind"] == "TFJob":
    return workload["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
  return workload["spec"]["template"]["spec"]


def _trainer(pod):
  (container,) = pod["containers"]
  return container


def _flag(container, name):
  (value,) = [a.split("=", 1)[1] for a in container["command"]
              if a.startswith(f"--{name}=")]
  return value


@pytest.mark.parametrize("path", WORKLOADS, ids=os.path.basename)
def test_the_shared_volume_is_a_claim_of_its_own(path):
  """Deleting a workload's file to restart it never deletes the volume."""
  claim = _shared_claim()
  assert claim["kind"] == "PersistentVolumeClaim"
  assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
  # A class must be named (the default one is ReadWriteOnce almost
  # everywhere); the file says it is a placeholder to replace.
  assert claim["spec"]["storageClassName"]
  with open(SHARED_VOLUME) as f:
    text = f.read()
  (line,) = [l for l in text.splitlines() if "storageClassName:" in l]
  assert "placeholder" in line
  assert "PersistentVolumeClaim" not in {d["kind"] for d in _docs(path)}
  pod = _pod_spec(_workload(path))
  claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"] if "persistentVolumeClaim" in v}
  assert claims == {"shared": claim["metadata"]["name"]}


def test_no_instruction_deletes_the_shared_volume():
  """Every `kubectl delete` that README.md and the manifests tell users to
  run names a workload's file, never k8s/shared-volume.yaml; both tell them
  to apply the volume once."""
  workloads = {os.path.relpath(p, fx.REPO) for p in WORKLOADS}
  texts = {"README.md": open(os.path.join(fx.REPO, "README.md")).read()}
  for name in os.listdir(K8S):
    with open(os.path.join(K8S, name)) as f:
      texts[f"k8s/{name}"] = f.read()
  deletes = 0
  for name, text in texts.items():
    flat = re.sub(r"\s*\n\s*#?\s*", " ", text)  # commands wrapped in comments
    for command in re.findall(r"kubectl delete[^`;&|]*", flat):
      deletes += 1
      assert "shared-volume" not in command and "pvc" not in command, (
          name, command)
      targets = re.findall(r"-f\s+(\S+)", command)
      assert all(t in workloads or t == "this" for t in targets), (
          name, command)
  assert deletes >= 4  # the README and each workload's header
  assert "kubectl apply -f k8s/shared-volume.yaml" in texts["README.md"]
  for path in WORKLOADS:
    assert "kubectl apply -f k8s/shared-volume.yaml" in texts[
        os.path.relpath(path, fx.REPO)]


def _as_builtin_objects(document):
  """The Kubernetes objects kubernetes-validate checks in ``document``.

  Built-in kinds as they are; the batch/v1 Job template of each JobSet
  replicated Job as a Job, and the pod template of each TFJob replica as a
  core/v1 PodTemplate (the CRDs embed those types unchanged).
  """
  if document["kind"] == "JobSet":
    return [{"apiVersion": "batch/v1", "kind": "Job",
             "metadata": {"name": f"{document['metadata']['name']}-"
                                  f"{replicated['name']}-0"},
             "spec": replicated["template"]["spec"]}
            for replicated in document["spec"]["replicatedJobs"]]
  if document["kind"] == "TFJob":
    return [{"apiVersion": "v1", "kind": "PodTemplate",
             "metadata": {"name": f"{document['metadata']['name']}-"
                                  f"{replica.lower()}"},
             "template": spec["template"]}
            for replica, spec in document["spec"]["tfReplicaSpecs"].items()]
  return [document]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(version):
  kubernetes_validate = pytest.importorskip(
      "kubernetes_validate", reason="kubernetes-validate is not installed "
      "(setup.py's test extra pins it)")
  checked = set()
  for name in sorted(os.listdir(K8S)):
    for document in _docs(os.path.join(K8S, name)):
      for obj in _as_builtin_objects(document):
        kubernetes_validate.validate(obj, version, strict=True)
        checked.add(obj["kind"])
  assert checked == {"PersistentVolumeClaim", "Service", "Job", "PodTemplate"}
  # The oldest version checked is the one the headers claim.
  oldest = ".".join(KUBERNETES_VERSIONS[0].split(".")[:2])
  for path in (INDEXED_JOB, JOBSET):
    with open(path) as f:
      assert f"Kubernetes >= {oldest}" in f.read(), path


def _schema_validator(name):
  jsonschema = pytest.importorskip(
      "jsonschema", reason="jsonschema is not installed (kubernetes-validate "
      "brings it)")
  with open(os.path.join(SCHEMAS, name)) as f:
    schema = json.load(f)
  jsonschema.Draft7Validator.check_schema(schema)
  return jsonschema.Draft7Validator(schema)


def test_custom_resources_match_their_schemas():
  for path, schema in ((JOBSET, "jobset-v1alpha2.json"),
                       (MANIFEST, "tfjob-v1.json")):
    errors = list(_schema_validator(schema).iter_errors(_workload(path)))
    assert not errors, [f"{list(e.path)}: {e.message}" for e in errors]


def test_the_validators_reject_what_the_controllers_reject():
  """The checks above can fail: a Job rule on a pod condition without its
  status (required by Kubernetes up to 1.34), a JobSet failure action its
  v1alpha2 API does not have, a rule without a name, an unknown TFJob
  restart policy."""
  kubernetes_validate = pytest.importorskip("kubernetes_validate")
  job = copy.deepcopy(_workload(INDEXED_JOB))
  for rule in job["spec"]["podFailurePolicy"]["rules"]:
    for condition in rule.get("onPodConditions", []):
      del condition["status"]
  with pytest.raises(kubernetes_validate.ValidationError,
                     match="'status' is a required property"):
    kubernetes_validate.validate(job, KUBERNETES_VERSIONS[0], strict=True)
  jobset = copy.deepcopy(_workload(JOBSET))
  jobset["spec"]["failurePolicy"]["rules"][0]["action"] = "RestartJob"
  assert list(_schema_validator("jobset-v1alpha2.json").iter_errors(jobset))
  jobset = copy.deepcopy(_workload(JOBSET))
  del jobset["spec"]["failurePolicy"]["rules"][0]["name"]
  assert list(_schema_validator("jobset-v1alpha2.json").iter_errors(jobset))
  tfjob = copy.deepcopy(_workload(MANIFEST))
  tfjob["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicy"] = "OnExitCode"
  assert list(_schema_validator("tfjob-v1.json").iter_errors(tfjob))


# What each controller does with a failed pod, as the Kubernetes, JobSet and
# Kubeflow references document it; the test below applies it to the
# manifests' policies and the trainer's exit codes.
PREEMPTED = exit_codes.PREEMPTED
USAGE_ERROR = exit_codes.USAGE
FAILED = exit_codes.FAILED
KILLED = 128 + 9  # SIGKILL: no exit code of the trainer's own


def _pod_failure_action(job_spec, container, exit_code, conditions=()):
  """The Job controller's podFailurePolicy: (action, failure message).

  The first rule whose onExitCodes (for the container) or onPodConditions
  match decides; no match counts the failure against backoffLimit.
  """
  rules = job_spec.get("podFailurePolicy", {}).get("rules", [])
  for index, rule in enumerate(rules):
    codes = rule.get("onExitCodes")
    if codes and codes.get("containerName", container) == container and (
        (exit_code in codes["values"]) == (codes["operator"] == "In")):
      return rule["action"], (
          f"Container {container} for pod ns/pod failed with exit code "
          f"{exit_code} matching {rule['action']} rule at index {index}")
    for condition in rule.get("onPodConditions", []):
      if (condition["type"], condition.get("status", "True")) in conditions:
        return rule["action"], (
            f"Pod ns/pod has condition {condition['type']} matching "
            f"{rule['action']} rule at index {index}")
  return "Count", None


def _jobset_action(jobset, reason, message):
  """JobSet's failurePolicy: the first rule matching the child Job's failure
  reason and message acts; with none, RestartJobSet."""
  for rule in jobset["spec"]["failurePolicy"].get("rules", []):
    reasons = rule.get("onJobFailureReasons", [])
    patterns = rule.get("onJobFailureMessagePatterns", [])
    if (not reasons or reason in reasons) and (
        not patterns or any(re.search(p, message) for p in patterns)):
      return rule["action"]
  return "RestartJobSet"


def test_each_launcher_acts_on_the_trainers_exit_codes():
  """0 completes; 143 (preempted after a checkpoint) and disruptions restart
  the run without spending its retry budget; 2 (usage error) fails at once;
  1 (another failure) spends the budget."""
  disrupted = {("DisruptionTarget", "True")}
  # Indexed Job: the Job controller re-creates the pod unless FailJob.
  job = _workload(INDEXED_JOB)["spec"]
  container = _trainer(job["template"]["spec"])["name"]
  outcome = {code: _pod_failure_action(job, container, code)[0]
             for code in (PREEMPTED, USAGE_ERROR, FAILED)}
  assert outcome == {PREEMPTED: "Ignore", USAGE_ERROR: "FailJob",
                     FAILED: "Count"}
  assert _pod_failure_action(job, container, KILLED, disrupted)[0] == "Ignore"
  assert job["backoffLimit"] > 0
  # JobSet: any failed pod fails the child Job (backoffLimit 0), and the
  # JobSet's rules read why.
  jobset = _workload(JOBSET)
  child = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]
  assert child["backoffLimit"] == 0
  container = _trainer(child["template"]["spec"])["name"]

  def jobset_outcome(exit_code, conditions=()):
    action, message = _pod_failure_action(child, container, exit_code,
                                          conditions)
    assert action in ("FailJob", "Count"), action
    if action == "FailJob":
      return _jobset_action(jobset, "PodFailurePolicy", message)
    return _jobset_action(jobset, "BackoffLimitExceeded",
                          "Job has reached the specified backoff limit")
  assert jobset_outcome(PREEMPTED) == "RestartJobSetAndIgnoreMaxRestarts"
  assert jobset_outcome(KILLED, disrupted) == (
      "RestartJobSetAndIgnoreMaxRestarts")
  assert jobset_outcome(USAGE_ERROR) == "FailJobSet"
  assert jobset_outcome(FAILED) == "RestartJobSet"
  assert jobset["spec"]["failurePolicy"]["maxRestarts"] > 0
  # TFJob: ExitCode re-creates pods that exited 128-255, fails on 1-127.
  worker = _workload(MANIFEST)["spec"]["tfReplicaSpecs"]["Worker"]
  assert worker["restartPolicy"] == "ExitCode"
  assert PREEMPTED >= 128 and USAGE_ERROR < 128 and FAILED < 128


@pytest.mark.parametrize("path", WORKLOADS, ids=os.path.basename)
def test_init_container_gives_the_runs_directory_to_the_image_user(
    path, tmp_path):
  """The shared volume's runs directory (the parent of --model_dir) is made
  by root and handed to the trainer's uid/gid; run here on a stand-in for
  the volume."""
  pod = _pod_spec(_workload(path))
  trainer = _trainer(pod)
  (init,) = pod["initContainers"]
  assert init["securityContext"]["runAsUser"] == 0
  user = pod["securityContext"]
  assert user["runAsUser"] != 0 and user["runAsGroup"] != 0
  (mount,) = [m["mountPath"] for m in trainer["volumeMounts"]
              if m["name"] == "shared"]
  assert init["volumeMounts"] == [{"name": "shared", "mountPath": mount}]
  runs = os.path.dirname(_flag(trainer, "model_dir"))
  assert runs.startswith(mount + "/")
  shell, option, script = init["command"]
  assert (shell, option) == ("sh", "-c")
  assert f"{user['runAsUser']}:{user['runAsGroup']} {runs} " in script + " "
  volume = tmp_path / "volume"
  volume.mkdir()
  out = subprocess.run(
      [shell, option, script.replace(mount + "/", f"{volume}/")],
      capture_output=True, text=True, timeout=60, check=False)
  made = os.path.join(str(volume), os.path.relpath(runs, mount))
  if _can_give_away(tmp_path, user["runAsUser"], user["runAsGroup"]):
    assert out.returncode == 0, out.stderr
    assert (os.stat(made).st_uid, os.stat(made).st_gid) == (
        user["runAsUser"], user["runAsGroup"])
  else:  # not root, or a user namespace without that uid (Bazel's sandbox):
    # what a root-squashed volume does to it
    assert out.returncode == 1
    assert "k8s/shared-volume.yaml" in out.stderr


def _can_give_away(directory, uid: int, gid: int) -> bool:
  """Whether this process may chown a file to ``uid:gid`` (root outside a
  user namespace that leaves them unmapped)."""
  probe = directory / "chown_probe"
  probe.touch()
  try:
    os.chown(probe, uid, gid)
    return True
  except OSError:
    return False
  finally:
    probe.unlink()


@pytest.mark.parametrize("path", WORKLOADS, ids=os.path.basename)
def test_a_kueue_queue_label_is_offered(path):
  """Gang admission for the workers: a commented Kueue label on the
  workload, ready to name a LocalQueue."""
  with open(path) as f:
    text = f.read()
  assert re.search(r"^  # labels:\n  #   kueue\.x-k8s\.io/queue-name: \S+",
                   text, re.MULTILINE), path

"""k8s/tfjob-pyramidnet.yaml: a well-formed TFJob whose command the trainer
accepts (flags exist, flagfile in the repo, dirs on the shared volume)."""

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

"""Dockerfile: the GPU image's pins agree with setup.py and the README, and
the image is the one the Kubernetes manifests expect (working directory,
non-root user, flagfiles). No image is built here (no Docker daemon in CI);
this parses the file."""

import ast
import fnmatch
import os
import re

import pytest

from tests import train_fixtures as fx

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed; the manifest side needs it")

DOCKERFILE = os.path.join(fx.REPO, "Dockerfile")
MANIFESTS = ("indexed-job-pyramidnet.yaml", "jobset-pyramidnet.yaml")


def instructions(path=DOCKERFILE):
  """(INSTRUCTION, arguments) pairs, continuation lines joined."""
  with open(path) as f:
    text = f.read()
  logical, out = "", []
  for line in text.splitlines():
    if not logical and (not line.strip() or line.lstrip().startswith("#")):
      continue
    if line.rstrip().endswith("\\"):
      logical += line.rstrip()[:-1] + " "
      continue
    logical += line
    word, _, args = logical.strip().partition(" ")
    out.append((word.upper(), args.strip()))
    logical = ""
  assert not logical, "Dockerfile ends inside a continued line"
  return out


def _setup_pins():
  """TF_VERSION, the [gpu] extra and python_requires, read from setup.py."""
  with open(os.path.join(fx.REPO, "setup.py")) as f:
    tree = ast.parse(f.read())
  consts, gpu, requires = {}, None, None
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
      for target in node.targets:
        if isinstance(target, ast.Name):
          consts[target.id] = node.value.value
    if isinstance(node, ast.keyword) and node.arg == "python_requires":
      requires = node.value.value
    if isinstance(node, ast.keyword) and node.arg == "extras_require":
      for key, value in zip(node.value.keys, node.value.values):
        if key.value == "gpu":
          (element,) = value.elts
          gpu = "".join(
              part.value if isinstance(part, ast.Constant)
              else consts[part.value.id] for part in element.values)
  return consts["TF_VERSION"], gpu, requires


def _version(text):
  return tuple(int(p) for p in text.split("."))


def test_pins_agree_with_setup_py_and_readme():
  steps = instructions()
  tf_version, gpu_extra, python_requires = _setup_pins()
  assert gpu_extra == f"tensorflow[and-cuda]=={tf_version}"
  # Base image: an exact Python patch release (no floating tag).
  (base,) = [args for word, args in steps if word == "FROM"]
  match = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-[a-z]+", base)
  assert match, f"FROM must pin python:X.Y.Z-slim-<debian>; got {base!r}"
  python = _version(match.group(1))
  assert python_requires.startswith(">=")
  assert python >= _version(python_requires[2:]), (python, python_requires)
  with open(os.path.join(fx.REPO, "README.md")) as f:
    readme_python = re.search(r"python(3\.\d+) -m venv", f.read()).group(1)
  assert python[:2] == _version(readme_python), (python, readme_python)
  # The package with its [gpu] extra, then a check of the TF it got.
  runs = " ".join(args for word, args in steps if word == "RUN")
  assert 'pip install ".[gpu]"' in runs
  assert f"tf.__version__ == '{tf_version}'" in runs
  assert re.search(r"pip install pip==\d+\.\d+(\.\d+)?", runs)


def test_image_is_what_the_manifests_run():
  steps = instructions()
  tf_version = _setup_pins()[0]
  (workdir,) = [args for word, args in steps if word == "WORKDIR"]
  (user,) = [args for word, args in steps if word == "USER"]
  uid, gid = (int(v) for v in user.split(":"))
  assert uid != 0 and gid != 0
  runs = " ".join(args for word, args in steps if word == "RUN")
  assert f"useradd --uid {uid} --gid {gid}" in runs
  copied = []
  for word, args in steps:
    if word == "COPY":
      *sources, dest = args.split()
      for source in sources:
        assert os.path.exists(os.path.join(fx.REPO, source)), source
        copied.append(source.rstrip("/"))
      assert dest in ("./",) or dest.rstrip("/") in copied, dest
  # setup.py reads README.md; the CLIs and converters; the flagfiles.
  assert {"setup.py", "README.md", "pyramidnet_tf", "data_prep",
          "flags"} <= set(copied)
  with open(os.path.join(fx.REPO, ".dockerignore")) as f:
    ignored = [line.strip() for line in f
               if line.strip() and not line.startswith("#")]
  for source in copied:
    assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), (
        source)
  for name in MANIFESTS:
    with open(os.path.join(fx.REPO, "k8s", name)) as f:
      docs = [d for d in yaml.safe_load_all(f) if d]
    workload = docs[-1]
    if workload["kind"] == "JobSet":
      job = workload["spec"]["replicatedJobs"][0]["template"]
    else:
      job = workload
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["workingDir"] == workdir, name
    assert pod["securityContext"]["runAsUser"] == uid, name
    assert pod["securityContext"]["runAsGroup"] == gid, name
    assert container["image"].endswith(f":{tf_version}-gpu"), name
    flagfiles = [a.split("=", 1)[1] for a in container["command"]
                 if a.startswith("--flagfile=")]
    assert flagfiles and all(f.startswith("flags/") for f in flagfiles)

"""Dockerfile: the image's pins agree with setup.py and the README, its steps
come in the order the package install and the layer cache need, and the image
is the one the Kubernetes manifests expect (working directory, non-root user,
flagfiles). This parses the file; tests/container/test_image.py builds it."""

import ast
import fnmatch
import os
import re

import pytest

from tests import train_fixtures as fx
from tests.container import engine

yaml = pytest.importorskip(
    "yaml", reason="PyYAML is not installed; the manifest side needs it")

DOCKERFILE = os.path.join(fx.REPO, "Dockerfile")
MANIFESTS = ("indexed-job-pyramidnet.yaml", "jobset-pyramidnet.yaml",
             "tfjob-pyramidnet.yaml")


def instructions(path=DOCKERFILE):
  """(INSTRUCTION, arguments) pairs, continuation lines joined."""
  return engine.dockerfile_instructions(path)


def _arg_defaults(steps):
  """{name: default} of the Dockerfile's ARG instructions (None: no default)."""
  defaults = {}
  for word, args in steps:
    if word == "ARG":
      name, _, default = args.partition("=")
      defaults[name] = default if _ else None
  return defaults


def _setup_pins():
  """TF_VERSION, the [gpu] extra, python_requires and the extras' names,
  read from setup.py."""
  with open(os.path.join(fx.REPO, "setup.py")) as f:
    tree = ast.parse(f.read())
  consts, gpu, requires, extras = {}, None, None, set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
      for target in node.targets:
        if isinstance(target, ast.Name):
          consts[target.id] = node.value.value
    if isinstance(node, ast.keyword) and node.arg == "python_requires":
      requires = node.value.value
    if isinstance(node, ast.keyword) and node.arg == "extras_require":
      for key, value in zip(node.value.keys, node.value.values):
        extras.add(key.value)
        if key.value == "gpu":
          (element,) = value.elts
          gpu = "".join(
              part.value if isinstance(part, ast.Constant)
              else consts[part.value.id] for part in element.values)
  return consts["TF_VERSION"], gpu, requires, extras


def _version(text):
  return tuple(int(p) for p in text.split("."))


def test_pins_agree_with_setup_py_and_readme():
  steps = instructions()
  tf_version, gpu_extra, python_requires, extras = _setup_pins()
  assert gpu_extra == f"tensorflow[and-cuda]=={tf_version}"
  # Base image: a build argument whose default is an exact Python patch
  # release (no floating tag).
  defaults = _arg_defaults(steps)
  (base,) = [args for word, args in steps if word == "FROM"]
  assert base == "${BASE_IMAGE}", base
  match = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim-[a-z]+",
                       defaults["BASE_IMAGE"] or "")
  assert match, ("BASE_IMAGE must default to python:X.Y.Z-slim-<debian>; "
                 f"got {defaults['BASE_IMAGE']!r}")
  python = _version(match.group(1))
  assert python_requires.startswith(">=")
  assert python >= _version(python_requires[2:]), (python, python_requires)
  with open(os.path.join(fx.REPO, "README.md")) as f:
    readme_python = re.search(r"python(3\.\d+) -m venv", f.read()).group(1)
  assert python[:2] == _version(readme_python), (python, readme_python)
  # The TensorFlow extra: a build argument, gpu by default, one of setup.py's
  # extras (cpu too: the build test's variant).
  assert defaults["TF_EXTRA"] == "gpu"
  assert {"gpu", "cpu"} <= extras
  runs = " ".join(args for word, args in steps if word == "RUN")
  assert 'pip install ".[${TF_EXTRA}]"' in runs
  assert f"tf.__version__ == '{tf_version}'" in runs
  assert re.search(r"pip install pip==\d+\.\d+(\.\d+)?", runs)
  # Both kinds of base alike: packages go to a virtualenv first on PATH.
  assert "python3 -m venv /opt/venv" in runs
  (env,) = [args for word, args in steps if word == "ENV"]
  assert "PATH=/opt/venv/bin:$PATH" in env.split()


def _step(steps, predicate, what):
  found = [i for i, step in enumerate(steps) if predicate(*step)]
  assert len(found) == 1, f"expected one {what} step, found {len(found)}"
  return found[0]


def test_dependencies_before_code_and_code_before_its_install():
  """Dependencies come from setup.py alone, before any code is copied (so a
  code edit reuses their layer), and every directory the package is built
  from is copied before the package is installed."""
  steps = instructions()
  copies = {}  # source: the index of the step copying it
  for index, (word, args) in enumerate(steps):
    if word == "COPY":
      for source in args.split()[:-1]:
        assert source.rstrip("/") not in copies, f"{source} copied twice"
        copies[source.rstrip("/")] = index
  dependencies = _step(steps, lambda w, a: w == "RUN" and ".[${TF_EXTRA}]" in a,
                       "dependency install")
  package = _step(steps, lambda w, a: w == "RUN" and "--no-deps ." in a,
                  "package install")
  assert copies["setup.py"] < dependencies
  before = {source for source, index in copies.items() if index < dependencies}
  assert before == {"setup.py"}, before
  # What setup.py builds the package from: its packages, the flagfiles its
  # package_dir maps, the README it reads.
  with open(os.path.join(fx.REPO, "setup.py")) as f:
    tree = ast.parse(f.read())
  (package_dir,) = [node.value for node in ast.walk(tree)
                    if isinstance(node, ast.keyword) and node.arg ==
                    "package_dir"]
  needed = {"pyramidnet_tf", "data_prep", "README.md"} | {
      value.value for value in package_dir.values}
  for source in needed:
    assert source in copies, f"{source} is not copied into the image"
    assert dependencies < copies[source] < package, source


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
      pod = workload["spec"]["replicatedJobs"][0]["template"]["spec"][
          "template"]["spec"]
    elif workload["kind"] == "TFJob":
      pod = workload["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]
    else:
      pod = workload["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    # The init container runs the same image: one image to build and pin.
    for init in pod.get("initContainers", []):
      assert init["image"] == container["image"], name
    assert container["workingDir"] == workdir, name
    assert pod["securityContext"]["runAsUser"] == uid, name
    assert pod["securityContext"]["runAsGroup"] == gid, name
    assert container["image"].endswith(f":{tf_version}-gpu"), name
    flagfiles = [a.split("=", 1)[1] for a in container["command"]
                 if a.startswith("--flagfile=")]
    assert flagfiles and all(f.startswith("flags/") for f in flagfiles)

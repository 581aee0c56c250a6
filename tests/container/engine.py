"""Podman, set up for building and running the Dockerfile's image in a test.

No image registry is reachable from CI, so the base image is made here from
Debian packages (scripts/container/debian_base.sh) and the Python packages
come from a wheel directory that this machine's pip fills from its own
configured indexes; the build itself is an ordinary `podman build` of the
repository's Dockerfile with build arguments.

Podman keeps its images in a store of its own (``STORE``, outside the
system's), kept across test runs on one machine: the base image is reused
while its recipe is unchanged and the dependency layer while the Dockerfile's
steps up to it and setup.py are (the layer cache, exactly as for any build).
Delete the directory (or point PYRAMIDNET_CONTAINER_STORE elsewhere) for a
cold build.

What a sandboxed CI machine needs, probed rather than assumed:
* the storage driver: the kernel's overlay, else fuse-overlayfs;
* the build runs its steps with ``--isolation chroot`` (no OCI runtime:
  nothing to fail on cgroups or rlimits);
* the containers run with the first OCI runtime that can start one here
  (runc, then crun: crun refuses a host with cgroup v1 and v2 mounted side
  by side) and with explicit ulimits no higher than this process's hard
  limits (podman's defaults, 1048576 open files, exceed what a process
  without CAP_SYS_RESOURCE may set).
"""

import dataclasses
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from typing import List, Optional

from tests import train_fixtures as fx

STORE = os.environ.get("PYRAMIDNET_CONTAINER_STORE",
                       "/var/tmp/pyramidnet-tf-containers")
BASE_SCRIPT = os.path.join(fx.REPO, "scripts", "container", "debian_base.sh")
BASE_REPOSITORY = "localhost/pyramidnet-tf-test-base"
DEBIAN_SUITE = "bookworm"
# Processes per container: two TensorFlow workers need a few hundred.
NPROC = 4096


class Unavailable(Exception):
  """Containers cannot run on this machine at all; the message says why."""


@dataclasses.dataclass
class Podman:
  """The podman command with the global options that work here.

  Attributes:
    global_args: ``podman`` and its storage (and runtime) options.
    run_args: options every ``podman run`` needs here (ulimits).
  """
  global_args: List[str]
  run_args: List[str] = dataclasses.field(default_factory=list)

  def __call__(self, *args: str, timeout: float = 600, check: bool = True,
               **kwargs) -> subprocess.CompletedProcess:
    """Runs ``podman <global options> args``, capturing its output."""
    out = subprocess.run(self.global_args + list(args), capture_output=True,
                         text=True, timeout=timeout, check=False, **kwargs)
    if check and out.returncode != 0:
      raise AssertionError(
          f"podman {' '.join(args)} exited {out.returncode}:\n"
          f"{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return out

  def run_command(self, *args: str) -> List[str]:
    """The argv of ``podman run`` with this machine's run options."""
    return self.global_args + ["run"] + self.run_args + list(args)

  def image_id(self, reference: str) -> Optional[str]:
    out = self("image", "inspect", "--format", "{{.Id}}", reference,
               check=False)
    return out.stdout.strip() if out.returncode == 0 else None

  def layers(self, reference: str) -> List[dict]:
    """The image's layers, oldest first: ``{"created_by", "digest"}``.

    History entries that made no layer (ENV, USER, ...) are left out, so
    the i-th remaining entry is the step that made the i-th layer.
    """
    (info,) = json.loads(self("image", "inspect", reference).stdout)
    steps = [h.get("created_by", "") for h in info["History"]
             if not h.get("empty_layer")]
    digests = info["RootFS"]["Layers"]
    assert len(steps) == len(digests), (steps, digests)
    return [{"created_by": s, "digest": d} for s, d in zip(steps, digests)]

  def size(self, reference: str) -> int:
    return int(self("image", "inspect", "--format", "{{.Size}}",
                    reference).stdout)

  def remove_image(self, reference: str):
    """Removes an image (and its untagged parents) unless still in use."""
    self("rmi", reference, check=False)

  def remove_if_untagged(self, image_id: str):
    """Removes an image that no name refers to any more (a replaced build)."""
    out = self("image", "inspect", "--format", "{{len .RepoTags}}", image_id,
               check=False)
    if out.returncode == 0 and out.stdout.strip() == "0":
      self.remove_image(image_id)


def setup() -> Podman:
  """Podman with a storage driver that works here; raises Unavailable."""
  if shutil.which("podman") is None:
    raise Unavailable("podman is not installed (.ci/run installs it)")
  if os.geteuid() != 0:
    raise Unavailable(
        "needs root: the model directory is handed to uid 1000, the image's "
        "user, and the checkpoints' owner is checked")
  errors = []
  drivers = [("overlay", [])]
  if shutil.which("fuse-overlayfs"):
    drivers.append(("overlay", [
        "--storage-opt", "overlay.mount_program=" +
        shutil.which("fuse-overlayfs")]))
  for driver, options in drivers:
    name = "fuse-overlayfs" if options else driver
    root = os.path.join(STORE, name)
    podman = Podman(["podman", "--root", os.path.join(root, "storage"),
                     "--runroot", os.path.join(root, "run"),
                     "--storage-driver", driver] + options)
    out = podman("info", "--format", "{{.Store.GraphDriverName}}",
                 check=False, timeout=120)
    if out.returncode == 0:
      return podman
    errors.append(f"{name}: {out.stderr.strip()[-500:]}")
  raise Unavailable("no podman storage driver works here: " +
                    "; ".join(errors))


def choose_runtime(podman: Podman, image: str):
  """Sets the OCI runtime and ulimits with which ``image`` runs here.

  Raises:
    Unavailable: no runtime can start a container on this machine.
  """
  nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
  if nofile == resource.RLIM_INFINITY:
    nofile = 1048576
  nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
  if nproc == resource.RLIM_INFINITY or nproc > NPROC:
    nproc = NPROC
  run_args = ["--ulimit", f"nofile={nofile}:{nofile}",
              "--ulimit", f"nproc={nproc}:{nproc}"]
  errors = []
  for runtime in ("runc", "crun"):
    if shutil.which(runtime) is None:
      continue
    candidate = Podman(podman.global_args + ["--runtime", runtime], run_args)
    out = subprocess.run(
        candidate.run_command("--rm", "--network=host", image, "true"),
        capture_output=True, text=True, timeout=300, check=False)
    if out.returncode == 0:
      podman.global_args, podman.run_args = candidate.global_args, run_args
      return
    errors.append(f"{runtime}: {out.stderr.strip()[-500:]}")
  raise Unavailable("no OCI runtime can start a container here: " +
                    ("; ".join(errors) or "neither runc nor crun is installed"))


def dockerfile_instructions(path: str) -> List[tuple]:
  """(INSTRUCTION, arguments) pairs of a Dockerfile, continuations joined."""
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
  assert not logical, f"{path} ends inside a continued line"
  return out


def copy_context(destination: str) -> str:
  """Copies the Dockerfile and what its COPY steps read to ``destination``.

  The build then sees the repository's files without touching the
  repository (the tests edit the copy).
  """
  dockerfile = os.path.join(fx.REPO, "Dockerfile")
  ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
  os.makedirs(destination)
  for name in ("Dockerfile", ".dockerignore"):
    shutil.copy2(os.path.join(fx.REPO, name), destination)
  for word, args in dockerfile_instructions(dockerfile):
    if word != "COPY":
      continue
    for source in args.split()[:-1]:
      source = source.rstrip("/")
      origin, target = (os.path.join(fx.REPO, source),
                        os.path.join(destination, source))
      if os.path.isdir(origin):
        shutil.copytree(origin, target, ignore=ignore)
      else:
        shutil.copy2(origin, target)
  return destination


def _digest(*parts: bytes) -> str:
  h = hashlib.sha256()
  for part in parts:
    h.update(part)
    h.update(b"\0")
  return h.hexdigest()[:12]


def debian_base(podman: Podman) -> str:
  """The Debian base image, made by BASE_SCRIPT unless already in the store.

  Its tag names a digest of the script, so a changed recipe makes a new
  base; the bases of older recipes are removed.
  """
  if shutil.which("debootstrap") is None:
    raise Unavailable("debootstrap is not installed (.ci/run installs it)")
  with open(BASE_SCRIPT, "rb") as f:
    tag = f"{BASE_REPOSITORY}:{DEBIAN_SUITE}-" + _digest(
        f.read(), DEBIAN_SUITE.encode())
  if podman.image_id(tag) is None:
    out = subprocess.run(
        ["bash", BASE_SCRIPT, tag], capture_output=True, text=True,
        timeout=1800, check=False,
        env=dict(os.environ, PODMAN=" ".join(podman.global_args),
                 DEBIAN_SUITE=DEBIAN_SUITE))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}",
                  "--filter", f"reference={BASE_REPOSITORY}").stdout.split()
  for old in set(listed) - {tag}:
    podman("rmi", old, check=False)
  return tag


def pip_pin(dockerfile: str) -> str:
  """The ``pip==X`` requirement the Dockerfile installs first."""
  with open(dockerfile) as f:
    return re.search(r"pip install (pip==[\d.]+)", f.read()).group(1)


def wheel_dir(context: str, extra: str) -> str:
  """A directory of every wheel ``pip install .[extra]`` needs in the image.

  Filled by this Python's pip (so from the indexes this machine's pip is
  configured with) for the Python the image runs, 3.11 like this one; kept
  across runs, one directory per setup.py and extra.
  """
  with open(os.path.join(context, "setup.py"), "rb") as f:
    pin = pip_pin(os.path.join(context, "Dockerfile"))
    key = _digest(f.read(), extra.encode(), pin.encode())
  parent = os.path.join(STORE, "wheels")
  directory = os.path.join(parent, f"{extra}-{key}")
  done = os.path.join(directory, ".complete")
  if not os.path.exists(done):
    # setuptools and wheel: pip's isolated build of the package itself.
    out = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--dest",
         directory, f".[{extra}]", pin, "setuptools", "wheel"],
        cwd=context, capture_output=True, text=True, timeout=1800,
        check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The package itself is built in the image, from its own source.
    for name in os.listdir(directory):
      if name.startswith(("pyramidnet_tf-", "pyramidnet-tf-")):
        os.remove(os.path.join(directory, name))
    open(done, "w").close()
  for name in os.listdir(parent):
    if name.startswith(f"{extra}-") and name != os.path.basename(directory):
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
  return directory


def build(podman: Podman, context: str, tag: str, base: str, extra: str,
          wheels: str) -> str:
  """``podman build`` of ``context``'s Dockerfile, offline from ``wheels``.

  The layer cache is on (``--layers``); each step runs in a chroot. The
  image that held ``tag`` before is removed when the build replaced it and
  no other name refers to it.

  Returns:
    The build log (podman's output, steps and cache hits included).
  """
  previous = podman.image_id(tag)
  out = subprocess.run(
      podman.global_args + [
          "build", "--layers", "--isolation", "chroot",
          "--volume", f"{wheels}:/wheels:ro",
          "--build-arg", f"BASE_IMAGE={base}",
          "--build-arg", f"TF_EXTRA={extra}",
          "--build-arg", "PIP_NO_INDEX=1",
          "--build-arg", "PIP_FIND_LINKS=/wheels",
          "--tag", tag, context],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      timeout=3600, check=False)
  assert out.returncode == 0, out.stdout[-5000:]
  if previous and previous != podman.image_id(tag):
    podman.remove_if_untagged(previous)
  return out.stdout


def cached_steps(log: str) -> dict:
  """{step instruction: whether it came from the layer cache} of a build."""
  steps, current = {}, None
  for line in log.splitlines():
    match = re.match(r"STEP \d+/\d+: (.*)", line)
    if match:
      current = match.group(1)
      steps[current] = False
    elif current and line.startswith("--> Using cache"):
      steps[current] = True
  return steps

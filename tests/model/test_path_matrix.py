"""Every code path a user can reach, each on the smallest network of its kind.

unit type (basic, bottleneck) x stem (CIFAR, ImageNet) x widening (add, mul)
x channel multiple (1, 8, 16) x dtype (float32, bfloat16) x (inference,
train step) x (eager, tf.function), plus ShakeDrop at each level, sync BN
over two replicas, and one group's training under oneDNN's rewrites and
kernels of a capped instruction set. ``tests/path_matrix_worker.py`` runs the
cases of one group in a subprocess and compares each with its reference; a
process abort (TF's oneDNN graph rewrites abort with a CHECK failure rather
than raise) fails the case it happened in, and the remaining cases run in a
new process, so one abort neither kills the test run nor hides other cases.
"""

import concurrent.futures
import json
import subprocess
import sys

import pytest

from tests import path_matrix_worker as worker
from tests import train_fixtures as fx

GROUPS = [dict(unit=unit, stem=stem, mode=mode)
          for stem in ("cifar", "imagenet")
          for unit in ("basic", "bottleneck")
          for mode in ("add", "mul")]
GROUPS += [
    dict(unit="bottleneck", stem="cifar", mode="add", shakedrop="batch"),
    dict(unit="bottleneck", stem="cifar", mode="add", shakedrop="sample"),
    dict(unit="basic", stem="cifar", mode="add", shakedrop="pixel"),
    dict(unit="bottleneck", stem="cifar", mode="add", sync_bn=True),
]
# The float32 training cases of one group again with TensorFlow's oneDNN
# graph rewrites and kernels on (TF_ENABLE_ONEDNN_OPTS=1: by default TF
# turns them on only on some CPUs), capped at an instruction set
# (ONEDNN_MAX_CPU_ISA; a cap above the CPU's own is the CPU's): the same
# kernels on every x86-64 CPU from that set up, whatever this one has. Their
# sums run in other orders than the default kernels', as on a user's CPU;
# imagenet-basic-mul's batch holds a ReLU input within rounding of 0 (see
# path_matrix_worker.KINK_BAND).
GROUPS += [
    dict(unit="basic", stem="imagenet", mode="mul", onednn_isa=isa,
         cases=[f"{kind}/m{multiple}/float32" for multiple in (1, 8, 16)
                for kind in ("train_eager", "train_graph")])
    for isa in ("AVX2", "SSE41")]

# Worker processes at once: a case's time is mostly tracing and graph
# rewriting, one core each.
PARALLEL = 2


def run_group(group: dict, timeout: float = 900) -> dict:
  """{case: None (passed) or the reason it failed}, every case of the group.

  Reruns the worker after an abort, skipping the cases already decided.
  """
  verdicts = {}
  names = worker.case_names(group)
  isa = ({"TF_ENABLE_ONEDNN_OPTS": "1",
          "ONEDNN_MAX_CPU_ISA": group["onednn_isa"]}
         if group.get("onednn_isa") else {})
  while len(verdicts) < len(names):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.path_matrix_worker", json.dumps(group),
         *verdicts], cwd=fx.REPO, env=fx.cli_env(**isa), capture_output=True,
        text=True, timeout=timeout, check=False)
    running = None
    for line in proc.stdout.splitlines():
      parts = line.split(" ", 3)
      if parts[0] != "CASE":
        continue
      if parts[2] == "START":
        running = parts[1]
      else:
        verdicts[parts[1]] = None if parts[2] == "OK" else parts[3]
        running = None
    if proc.returncode != 0 or "DONE" not in proc.stdout.splitlines():
      tail = "\n".join(proc.stderr.splitlines()[-15:])
      reason = f"the process ended with exit code {proc.returncode}:\n{tail}"
      if running is None:  # died before or between cases: nothing to skip
        for name in names:
          verdicts.setdefault(name, reason)
      else:
        verdicts[running] = reason
  return verdicts


def _cases():
  for group in GROUPS:
    for name in worker.case_names(group):
      yield pytest.param(group, name,
                         id=f"{worker.group_name(group)}/{name}")


@pytest.fixture(scope="module")
def verdicts(request):
  """{group name: run_group(group)} for the groups this session selected."""
  selected = {}
  for item in request.session.items:
    callspec = getattr(item, "callspec", None)
    if callspec is not None and item.originalname == "test_case":
      group = callspec.params["group"]
      selected[worker.group_name(group)] = group
  with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
    futures = {name: pool.submit(run_group, group)
               for name, group in selected.items()}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("group,case", list(_cases()))
def test_case(group, case, verdicts):
  failure = verdicts[worker.group_name(group)][case]
  assert failure is None, failure


def test_a_process_abort_fails_its_case_and_the_rest_still_run():
  """The runner's own check: a worker that aborts in one case."""
  cases = ["infer_eager/m1/float32", "infer_graph/m1/float32",
           "infer_eager/m8/float32", "infer_graph/m8/float32"]
  group = dict(GROUPS[0], cases=cases, abort_in="infer_eager/m8/float32")
  verdicts = run_group(group)
  assert sorted(verdicts) == sorted(cases)
  assert "exit code -6" in verdicts["infer_eager/m8/float32"]
  assert [verdicts[c] for c in cases if c != "infer_eager/m8/float32"] == [
      None] * 3, verdicts

"""--cluster_resolver=slurm: TF's SlurmClusterResolver from SLURM_* variables.

Without Slurm daemons: the tests set the variables srun would set and put a
stand-in ``scontrol`` on PATH (``scontrol show hostnames`` prints one host
per line). TF 2.21's resolver expands the node list itself; the stand-in
keeps the tests off any real Slurm installation either way.
tests/cluster/test_slurm_real.py runs the same trainer under real Slurm.
"""

import glob
import os
import socket
import stat
import subprocess
import sys

import pytest

from pyramidnet_tf.runtime import cluster_env
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import config as config_lib
from tests import train_fixtures as fx


@pytest.fixture
def slurm_env(tmp_path, monkeypatch):
  """A Slurm job step: variables cleared, stand-in scontrol on PATH."""
  scontrol = tmp_path / "bin" / "scontrol"
  scontrol.parent.mkdir()
  scontrol.write_text(
      "#!/bin/sh\n"
      "# stand-in for: scontrol show hostnames <nodelist>\n"
      'if [ "$1" = show ] && [ "$2" = hostnames ]; then\n'
      "  echo 127.0.0.1\n  echo localhost\n  exit 0\nfi\n"
      'echo "stand-in scontrol: unsupported $*" >&2\nexit 1\n')
  scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
  monkeypatch.setenv("PATH", f"{scontrol.parent}{os.pathsep}"
                     f"{os.environ.get('PATH', '')}")
  for name in list(os.environ):
    if name.startswith("SLURM_"):
      monkeypatch.delenv(name)
  monkeypatch.delenv("TF_CONFIG", raising=False)
  # The GPU path rewrites CUDA_VISIBLE_DEVICES; monkeypatch restores it.
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")

  def set_step(procid, num_tasks, nodelist, tasks_per_node, job_id=4321):
    monkeypatch.setenv("SLURM_JOB_ID", str(job_id))
    monkeypatch.setenv("SLURM_PROCID", str(procid))
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", str(num_tasks))
    monkeypatch.setenv("SLURM_STEP_NODELIST", nodelist)
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", tasks_per_node)
  return set_step


def test_two_cpu_nodes_one_task_each(slurm_env):
  assert subprocess.run(["scontrol", "show", "hostnames", "x"],
                        capture_output=True, text=True,
                        check=True).stdout.split() == ["127.0.0.1",
                                                       "localhost"]
  slurm_env(procid=1, num_tasks=2, nodelist="node[01-02]",
            tasks_per_node="1(x2)")
  resolver = distribute.slurm_resolver(port_base=23456)
  assert resolver.cluster_spec().as_dict() == {
      "worker": ["node01:23456", "node02:23456"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)
  assert resolver.num_accelerators() == {}  # CPU workers
  assert os.environ["CUDA_VISIBLE_DEVICES"] == ""  # left alone without GPUs


def test_gpus_are_split_between_the_tasks_of_a_node(slurm_env, monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
  slurm_env(procid=1, num_tasks=2, nodelist="127.0.0.1",
            tasks_per_node="2")
  resolver = distribute.slurm_resolver(port_base=30000)
  assert resolver.cluster_spec().as_dict() == {
      "worker": ["127.0.0.1:30000", "127.0.0.1:30001"]}
  assert (resolver.task_type, resolver.task_id) == ("worker", 1)
  assert resolver.num_accelerators() == {"GPU": 2}
  assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"  # task 1's half


def test_ports_derived_from_the_job_id_by_default(slurm_env):
  slurm_env(procid=0, num_tasks=2, nodelist="127.0.0.1", tasks_per_node="2",
            job_id=1234)
  base = cluster_env.slurm_port_base()
  assert base == 20000 + (1234 % 798) * 16 == 26976
  resolver = distribute.slurm_resolver()
  assert resolver.cluster_spec().as_dict() == {
      "worker": [f"127.0.0.1:{base}", f"127.0.0.1:{base + 1}"]}
  # The trainer's default is "derive": no fixed 8888 left anywhere.
  default = config_lib.RuntimeConfig().slurm_port_base
  assert default == 0 and cluster_env.slurm_port_base(default) == base


def test_jobs_sharing_a_node_get_disjoint_port_blocks():
  """Any 798 consecutive job IDs: disjoint blocks of 16 ports, all inside
  20000..32767 (clear of 8888, 6006 and Linux's ephemeral ports)."""
  used = set()
  for job_id in range(100_000, 100_000 + cluster_env.slurm_port_slots()):
    base = cluster_env.slurm_port_base(0, {"SLURM_JOB_ID": str(job_id),
                                           "SLURM_STEP_TASKS_PER_NODE":
                                               "16(x2)"})
    block = set(range(base, base + 16))
    assert not block & used, job_id
    used |= block
    assert 20000 <= base and base + 15 < 32768
  assert cluster_env.slurm_port_slots() == 798
  # A requeued job keeps its ID, hence its ports; IDs 798 apart share them.
  assert cluster_env.slurm_port_base(0, {"SLURM_JOB_ID": "7"}) == 20112
  assert cluster_env.slurm_port_base(0, {"SLURM_JOB_ID": "805"}) == 20112


def test_an_explicit_port_base_wins():
  assert cluster_env.slurm_port_base(23456, {"SLURM_JOB_ID": "5"}) == 23456
  assert cluster_env.slurm_port_base(8888, {}) == 8888  # no job ID needed


@pytest.mark.parametrize("requested, environ, message", [
    (0, {}, r"--slurm_port_base=0 derives the workers' ports from "
     r"SLURM_JOB_ID.*got ''.*or pass --slurm_port_base=PORT"),
    (0, {"SLURM_JOB_ID": "12_3"}, r"SLURM_JOB_ID.*got '12_3'"),
    (0, {"SLURM_JOB_ID": "9", "SLURM_STEP_TASKS_PER_NODE": "17,2"},
     r"gives each job 16 ports per node, but this step runs 17 tasks on one "
     r"node; pass --slurm_port_base=PORT"),
    (0, {"SLURM_JOB_ID": "9", "SLURM_STEP_TASKS_PER_NODE": "2(3)"},
     r"SLURM_STEP_TASKS_PER_NODE must look like '2\(x3\),1'; got '2\(3\)'"),
    (70000, {"SLURM_JOB_ID": "9"},
     r"--slurm_port_base must be in 1..65535, or 0 to derive it from "
     r"SLURM_JOB_ID; got 70000"),
])
def test_port_base_problems_are_named(requested, environ, message):
  with pytest.raises(ValueError, match=message):
    cluster_env.slurm_port_base(requested, environ)


def test_tasks_per_node_expands_slurms_compressed_form():
  assert cluster_env.tasks_per_node("2(x3),1") == [2, 2, 2, 1]
  assert cluster_env.tasks_per_node("8") == [8]


def test_missing_slurm_variable_is_named(slurm_env, monkeypatch):
  slurm_env(procid=0, num_tasks=2, nodelist="node[1-2]",
            tasks_per_node="1(x2)")
  monkeypatch.delenv("SLURM_STEP_NODELIST")
  with pytest.raises(ValueError, match=r"--cluster_resolver=slurm.*"
                     r"missing: SLURM_STEP_NODELIST"):
    distribute.create_strategy(
        config_lib.RuntimeConfig(cluster_resolver="slurm"))


def test_bad_choices_are_named(slurm_env):
  with pytest.raises(ValueError, match=r"--cluster_resolver must be one of "
                     r"tf_config, slurm, k8s_indexed; got 'k8s'"):
    distribute.create_strategy(
        config_lib.RuntimeConfig(cluster_resolver="k8s"))
  slurm_env(procid=0, num_tasks=1, nodelist="localhost", tasks_per_node="1")
  with pytest.raises(ValueError, match=r"--cluster_resolver=slurm needs "
                     r"--distribution=auto or multi_worker"):
    distribute.create_strategy(config_lib.RuntimeConfig(
        distribution="mirrored", cluster_resolver="slurm"))
  with pytest.raises(ValueError, match=r"--slurm_port_base must be in"):
    distribute.slurm_resolver(port_base=70000)


def test_trainer_outside_srun_is_one_line(tmp_path):
  """The CLI checks the SLURM_* variables before TensorFlow starts."""
  env = {k: v for k, v in fx.cli_env().items() if not k.startswith("SLURM_")}
  proc = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.train", "--dataset=synthetic",
       "--cluster_resolver=slurm", f"--model_dir={tmp_path / 'm'}"],
      cwd=fx.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "pyramidnet_tf.train: error: --cluster_resolver=slurm needs the "
      "variables srun sets"), proc.stderr[-2000:]
  assert "missing: SLURM_PROCID" in proc.stderr


def test_trainer_without_a_job_id_to_derive_ports_is_one_line(tmp_path):
  env = {k: v for k, v in fx.cli_env().items() if not k.startswith("SLURM_")}
  env.update(SLURM_PROCID="0", SLURM_STEP_NUM_TASKS="2",
             SLURM_STEP_NODELIST="127.0.0.1", SLURM_STEP_TASKS_PER_NODE="2")
  proc = subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.train", "--dataset=synthetic",
       "--cluster_resolver=slurm", f"--model_dir={tmp_path / 'm'}"],
      cwd=fx.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "pyramidnet_tf.train: error: --slurm_port_base=0 derives the workers' "
      "ports from SLURM_JOB_ID"), proc.stderr[-2000:]


def _consecutive_free_ports():
  for _ in range(50):
    with socket.socket() as a:
      a.bind(("127.0.0.1", 0))
      base = a.getsockname()[1]
      if base >= 65535:
        continue
      with socket.socket() as b:
        try:
          b.bind(("127.0.0.1", base + 1))
        except OSError:
          continue
        return base
  raise RuntimeError("no two consecutive free ports on 127.0.0.1")


def test_two_slurm_resolved_workers_train_together(tmp_path):
  """Two 'srun tasks' on one node train a tiny synthetic model."""
  model_dir = str(tmp_path / "model")
  args = ["--dataset=synthetic", "--synthetic_like=cifar10", "--depth=8",
          "--alpha=4", "--nobottleneck", "--image_size=16", "--batch_size=8",
          "--train_steps=2", "--steps_per_loop=2", "--log_every_steps=2",
          "--collective_timeout=60", "--cluster_resolver=slurm",
          f"--model_dir={model_dir}"]
  for attempt in range(2):
    base = _consecutive_free_ports()
    procs, logs = [], []
    try:
      for rank in range(2):
        log = open(tmp_path / f"task{rank}.log", "w")
        logs.append(log)
        env = {k: v for k, v in fx.cli_env().items()
               if not k.startswith("SLURM_")}
        env.update(SLURM_PROCID=str(rank), SLURM_STEP_NUM_TASKS="2",
                   SLURM_STEP_NODELIST="127.0.0.1",
                   SLURM_STEP_TASKS_PER_NODE="2")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pyramidnet_tf.train",
             f"--slurm_port_base={base}"] + args,
            cwd=fx.REPO, env=env, stdout=log, stderr=log))
      codes = [p.wait(timeout=120) for p in procs]
    finally:
      for p in procs:
        if p.poll() is None:
          p.kill()
          p.wait(timeout=30)
      for log in logs:
        log.close()
    text = [(tmp_path / f"task{r}.log").read_text() for r in range(2)]
    if attempt == 0 and any("Address already in use" in t for t in text):
      continue  # port race with another process: retry once
    break
  assert codes == [0, 0], "\n=====\n".join(t[-3000:] for t in text)
  assert f"'worker': ['127.0.0.1:{base}', '127.0.0.1:{base + 1}']" in text[0]
  assert "2 replicas x 4 on 2 workers" in text[0]
  results = [fx.train_result(t) for t in text]
  assert results[0]["step"] == results[1]["step"] == 2
  assert results[0]["weights_fingerprint"] == results[1][
      "weights_fingerprint"]
  assert len(glob.glob(os.path.join(model_dir, "tensorboard", "events.out.*"))) == 1

"""scripts/slurm/train.sbatch on a real Slurm: munged, slurmctld, slurmd.

The daemons (``local_slurm``) run one node, this machine with 2 CPUs, and
the test submits the shipped script unchanged: only sbatch options on the
command line shrink its 2 nodes x 8 GPUs to one node with two CPU tasks,
and the trainer flags after the script name make the network tiny
(PyramidNet-8, alpha 4, synthetic 16 x 16 images).

* An uninterrupted run: the job ends COMPLETED; both tasks print their
  cluster line (ports derived from the job ID), labelled by srun, and end
  with the same weights; an ``afterok`` dependent starts after it.
* A failed run (a bad flag): the job ends FAILED with the trainers' exit
  code and its ``afterok`` dependent never starts.
* A run that meets its time limit: Slurm's warning (``--signal=B:USR1``)
  reaches the batch shell, which passes it to the trainers; they save and
  exit 143, the script requeues the job, it starts again, resumes from the
  saved step and ends COMPLETED with no step lost; its ``afterok``
  dependent starts only then.

Skipped, with the reason, only where the daemons cannot run at all (Slurm or
MUNGE not installed, not root). PYRAMIDNET_KEEP_SLURM=1 keeps the cluster's
directory (configuration, daemon logs) for a look after the run.
"""

import json
import os
import re
import sys
import time

import pytest

from pyramidnet_tf.runtime import cluster_env
from tests import train_fixtures as fx
from tests.cluster import local_slurm

SCRIPT = os.path.join("scripts", "slurm", "train.sbatch")  # from the repo
# The 2 x 8 GPU request of the script, shrunk on sbatch's command line.
ONE_NODE = ["--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
            "--gres=none"]
TINY = ["--dataset=synthetic", "--synthetic_like=cifar10", "--depth=8",
        "--alpha=4", "--nobottleneck", "--image_size=16", "--batch_size=8",
        "--lr=0.1", "--warmup_epochs=0", "--steps_per_loop=1",
        "--log_every_steps=5", "--eval_every_epochs=0", "--noeval_at_end",
        "--collective_timeout=120", "--deterministic"]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")
HANG_GUARD_S = 900  # per wait; a loaded 2-core machine needs minutes


@pytest.fixture(scope="module")
def slurm(request):
  cluster = local_slurm.LocalSlurm(
      keep=os.environ.get("PYRAMIDNET_KEEP_SLURM") == "1")
  request.addfinalizer(cluster.stop)
  try:
    cluster.start()
  except local_slurm.Unavailable as e:
    pytest.skip(f"no Slurm cluster here: {e}")
  return cluster


class Job:
  """A submission of the script: its output and the states it went through.

  Every ``wait_for`` poll reads the job's state (``scontrol show job``) and
  output file and records each new (JobState, Restarts) with the seconds
  since submission, which the test prints.
  """

  def __init__(self, slurm, tmp_path, name, sbatch_options, trainer_flags):
    self.slurm = slurm
    self.output = tmp_path / f"{name}.out"
    self.model_dir = tmp_path / name / "model"
    env = slurm.env(fx.cli_env(), PYTHON=sys.executable,
                    DATA_DIR=str(tmp_path / "synthetic-no-data"),
                    MODEL_DIR=str(self.model_dir))
    self.submitted = time.monotonic()
    self.id = slurm.submit(ONE_NODE + [f"--output={self.output}"] +
                           sbatch_options + [SCRIPT] + trainer_flags,
                           env=env, cwd=fx.REPO)
    self.states = []     # (seconds since submission, JobState, Restarts)
    self.fields = {}
    self.marks = {}      # event -> seconds since submission

  def elapsed(self) -> float:
    return time.monotonic() - self.submitted

  def text(self) -> str:
    return self.output.read_text() if self.output.exists() else ""

  def poll(self) -> str:
    self.fields = self.slurm.job(self.id)
    state = (self.fields.get("JobState"), self.fields.get("Restarts"))
    if not self.states or self.states[-1][1:] != state:
      self.states.append((round(self.elapsed(), 1),) + state)
    return state[0]

  def mark(self, event: str) -> None:
    self.marks[event] = round(self.elapsed(), 1)

  def wait_for(self, what: str, ready, timeout: float = HANG_GUARD_S):
    """Polls until ``ready(text)`` is truthy; returns its value.

    Fails with the output and the daemons' logs if the job ends first
    (unless ``ready`` accepts it) or after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
      state = self.poll()
      value = ready(self.text())
      if value:
        return value
      if state in ENDED or time.monotonic() > deadline:
        pytest.fail(f"job {self.id}: waiting for {what}, {state} after "
                    f"{self.elapsed():.0f} s; states {self.states}\n"
                    f"{self.report()}")
      time.sleep(0.5)

  def wait_until_ended(self) -> str:
    self.wait_for("the job's end", lambda _: self.fields.get("JobState")
                  in ENDED)
    self.mark(self.fields["JobState"])
    return self.fields["JobState"]

  def report(self) -> str:
    return (f"--- job output ({self.output})\n{self.text()[-6000:]}\n"
            f"--- jobcomp\n" + "\n".join(self.slurm.jobcomp()) + "\n" +
            self.slurm.log_tail("slurmctld") + "\n" +
            self.slurm.log_tail("slurmd"))

  def summary(self) -> str:
    return (f"job {self.id}: states {self.states}; events {self.marks}; "
            f"jobcomp: " + " | ".join(
                re.sub(r".*(JobState=\S+).*(StartTime=\S+) (EndTime=\S+).*",
                       r"\1 \2 \3", line)
                for line in self.slurm.jobcomp()
                if f"JobId={self.id} " in line))


def submit_dependent(slurm, tmp_path, job) -> int:
  """A one-line job that may start only once ``job`` ended well (afterok):
  what a user chains after training (evaluation, export)."""
  return slurm.submit([f"--dependency=afterok:{job.id}", "--ntasks=1",
                       "--job-name=after-training",
                       f"--output={tmp_path / 'dependent.out'}",
                       "--wrap=echo dependent ran"],
                      env=slurm.env(), cwd=str(tmp_path))


def wait_for_fields(slurm, job_id: int, ready, what: str,
                    timeout: float = 120) -> dict:
  deadline = time.monotonic() + timeout
  while True:
    fields = slurm.job(job_id)
    if ready(fields):
      return fields
    assert time.monotonic() < deadline, f"job {job_id}: {what}: {fields}"
    time.sleep(0.5)


def worker_lines(text: str, worker: int):
  """The lines srun --label prefixed with ``worker``'s task number."""
  prefix = f"{worker}: "
  return [l[len(prefix):] for l in text.splitlines() if l.startswith(prefix)]


def results(text: str, worker: int):
  """``worker``'s ``result: {...}`` lines, parsed, in order."""
  return [json.loads(l.split("result: ", 1)[1])
          for l in worker_lines(text, worker) if "result: {" in l]


def training(text: str) -> bool:
  return all(any(re.search(r"\bstep \d+/\d+ ", l) for l in
                 worker_lines(text, w)) for w in (0, 1))


def cluster_line(slurm, job_id: int, worker: int) -> str:
  """What worker ``worker``'s cluster line must say: the node's hostname
  and the two ports derived from the job ID."""
  base = cluster_env.slurm_port_base(0, {"SLURM_JOB_ID": str(job_id),
                                         "SLURM_STEP_TASKS_PER_NODE": "2"})
  role = "the chief" if worker == 0 else "not the chief"
  return (f"cluster {{'worker': ['{slurm.host}:{base}', "
          f"'{slurm.host}:{base + 1}']}}; this is worker {worker} ({role})")


def test_a_run_completes_with_labelled_workers_and_equal_weights(
    slurm, tmp_path):
  job = Job(slurm, tmp_path, "uninterrupted", [], TINY + ["--train_steps=30"])
  dependent = submit_dependent(slurm, tmp_path, job)
  state = job.wait_until_ended()
  print(f"\nuninterrupted run: {job.summary()}")
  text = job.text()
  assert state == "COMPLETED", job.report()
  assert job.fields["ExitCode"] == "0:0" and job.fields["Restarts"] == "0"
  finals = []
  for worker in (0, 1):
    mine = worker_lines(text, worker)
    expected = cluster_line(slurm, job.id, worker)
    assert any(expected in line for line in mine), (expected, job.report())
    (result,) = results(text, worker)
    assert result["step"] == 30 and not result.get("preempted"), result
    finals.append(result["weights_fingerprint"])
  assert finals[0] == finals[1], job.report()
  assert "training finished" in text, job.report()
  after = wait_for_fields(slurm, dependent, lambda f: f["JobState"] in ENDED,
                          "the afterok dependent's end")
  assert after["JobState"] == "COMPLETED", after
  assert after["StartTime"] >= job.fields["EndTime"], (after, job.fields)


def test_a_failed_run_fails_the_job_and_holds_its_dependents(
    slurm, tmp_path):
  """A trainer that fails (here on a bad --depth) fails the job with its
  exit code, so an ``afterok`` dependent never starts."""
  job = Job(slurm, tmp_path, "failed", [],
            TINY + ["--train_steps=30", "--depth=111"])
  dependent = submit_dependent(slurm, tmp_path, job)
  state = job.wait_until_ended()
  text = job.text()
  assert state == "FAILED", job.report()
  code = int(job.fields["ExitCode"].split(":")[0])
  srun_codes = {int(c) for c in re.findall(
      r"srun: error: .*: tasks? [\d,-]+: Exited with exit code (\d+)", text)}
  assert code in srun_codes and srun_codes - {0, 143}, job.report()
  assert f"exit {code}" in text, job.report()
  assert any("depth must be 6n+2" in l for w in (0, 1)
             for l in worker_lines(text, w)), job.report()
  held = wait_for_fields(
      slurm, dependent, lambda f: f["Reason"] == "DependencyNeverSatisfied",
      "the afterok dependent held for good")
  assert held["JobState"] == "PENDING", held
  slurm.run("scancel", str(dependent))


def _minutes(run_time: str) -> float:
  """Slurm's [D-]HH:MM:SS / MM:SS run time, in minutes."""
  days, _, clock = run_time.rpartition("-")
  seconds = 0
  for part in clock.split(":"):
    seconds = seconds * 60 + int(part)
  return (int(days or 0) * 86400 + seconds) / 60


def test_the_time_limit_requeues_the_job_and_it_resumes_losing_no_step(
    slurm, tmp_path):
  """The time limit's warning, the requeue and the resume, on real Slurm.

  The controller checks time limits every 30 s and sends ``--signal``'s
  warning at the first check within ``sig_time`` + 30 s of the end, and the
  trainers take seconds to start on an idle machine, minutes on a loaded
  one.
  So that the warning lands while the trainers are training, whatever the
  load, the job is submitted with a long limit and, once both workers are
  training, its limit is cut (``scontrol update TimeLimit``, as a
  cluster's admin would) to the shortest that puts the warning at the next
  check and leaves 60 s or more for the save and the requeue; once the
  warning is out the limit is set long again, so the resumed run is not
  warned while it starts. The run's length comes from a flagfile after the
  script name: a million steps until the trainers have saved at step S,
  then S + 20, so the resumed run ends after 20 more steps on any machine.
  """
  length = tmp_path / "length.flags"
  length.write_text("--train_steps=1000000\n")
  lead = 120  # --signal=B:USR1@120
  job = Job(slurm, tmp_path, "requeued",
            ["--time=30", f"--signal=B:USR1@{lead}"],
            TINY + [f"--flagfile={length}"])
  dependent = submit_dependent(slurm, tmp_path, job)
  job.wait_for("both workers training", training)
  job.mark("training")
  ran = _minutes(job.fields["RunTime"])
  limit = int(ran + (lead + 30) / 60)
  slurm.run("scontrol", "update", f"JobId={job.id}", f"TimeLimit={limit}")
  job.mark(f"TimeLimit={limit} after {ran:.1f} min")
  job.wait_for("the time limit's warning",
               lambda text: "SIGUSR1: time limit near" in text, timeout=120)
  job.mark("SIGUSR1")
  slurm.run("scontrol", "update", f"JobId={job.id}", "TimeLimit=30")

  def saved(text):
    stops = [results(text, w) for w in (0, 1)]
    return all(stops) and [r[-1] for r in stops]
  stops = job.wait_for("both workers' save", saved)
  job.mark("saved")
  assert all(r.get("preempted") for r in stops), stops
  step = stops[0]["step"]
  assert stops[1]["step"] == step > 0, stops  # the same step on both
  length.write_text(f"--train_steps={step + 20}\n")
  state = job.wait_until_ended()
  print(f"\nrequeued run: {job.summary()}")
  text = job.text()
  assert state == "COMPLETED", job.report()
  assert job.fields["ExitCode"] == "0:0", job.report()
  assert job.fields["Restarts"] == "1", job.report()
  assert "trainers saved at the time limit; requeueing to resume" in text
  assert "start 1 on" in text and "training finished" in text, job.report()
  assert re.search(r"srun: error: .*: tasks? [\d,-]+: Exited with exit code "
                   r"143", text), job.report()
  # The requeue is in the completion log before the end: Slurm took the job
  # back to the queue (no FAILED or TIMEOUT in between).
  states = [re.search(r"JobState=(\S+)", l).group(1)
            for l in slurm.jobcomp() if f"JobId={job.id} " in l]
  assert states == ["PENDING", "COMPLETED"], states
  second = text.split("start 1 on", 1)[1]
  finals = []
  for worker in (0, 1):
    mine = worker_lines(second, worker)
    assert any(f"ckpt-{step} at step {step}" in l for l in mine), job.report()
    assert any(f"resuming at step {step}" in l for l in mine), job.report()
    final = results(second, worker)[-1]
    assert final["step"] == step + 20 and not final.get("preempted"), final
    finals.append(final["weights_fingerprint"])
  assert finals[0] == finals[1], job.report()
  # The afterok dependent waited for the end, not for the first run's exit.
  after = wait_for_fields(slurm, dependent, lambda f: f["JobState"] in ENDED,
                          "the afterok dependent's end")
  assert after["JobState"] == "COMPLETED", after
  assert after["StartTime"] >= job.fields["EndTime"], (after, job.fields)

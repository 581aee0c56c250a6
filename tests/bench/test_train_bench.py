"""bench/train_bench.py end to end on a tiny config: a process per run,
repeats in rounds, medians/bests and ratios in the table, failed runs
reported (never a silent gap) with a non-zero exit."""

import json
import os
import subprocess
import sys
from tests import REPO_ROOT

ROOT = REPO_ROOT
BENCH = os.path.join(ROOT, "bench", "train_bench.py")
ARGS = ["--configs=c20", "--dtypes=float32", "--xla=false",
        "--channel_multiples=1", "--steps=1", "--warmup=0", "--batch=4",
        "--repeats=2", "--nopipeline"]


def _run(extra_args=(), env=None):
  return subprocess.run([sys.executable, BENCH] + ARGS + list(extra_args),
                        capture_output=True, text=True, env=env, timeout=600,
                        check=False)


def _env_without_torch(tmp_path):
  """An environment whose `import torch` fails with a known message."""
  fake = tmp_path / "torch"
  fake.mkdir()
  (fake / "__init__.py").write_text(
      "raise ImportError('torch hidden by the test')\n")
  return dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(tmp_path), os.environ.get("PYTHONPATH", "")]))


def _runs(stdout):
  return [json.loads(line) for line in stdout.splitlines()
          if line.startswith("{")]


def _table(stdout):
  return [line.split("|")[1:-1] for line in stdout.splitlines()
          if line.startswith("| c20 ")]


def test_every_run_in_its_own_process_and_table_of_medians():
  proc = _run()
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = _runs(proc.stdout)
  assert [(r["framework"], r["dtype"]) for r in runs] == [
      ("torch", "float32"), ("tf", "float32")] * 2  # rounds, not blocks
  pids = {r["pid"] for r in runs}
  assert len(pids) == 4 and os.getpid() not in pids
  assert all(r["img_per_s"] > 0 and r["batch"] == 4 for r in runs)
  table = {cells[1].strip(): [c.strip() for c in cells] for cells in
           _table(proc.stdout)}
  assert set(table) == {"torch", "tf"}
  for framework, cells in table.items():
    rates = sorted(r["img_per_s"] for r in runs
                   if r["framework"] == framework)
    assert float(cells[7]) == round(sum(rates) / 2, 2)  # median of two
    assert sorted(map(float, cells[8].split())) == rates
  torch_median, tf_median = float(table["torch"][7]), float(table["tf"][7])
  assert float(table["tf"][10]) == round(tf_median / torch_median, 2)
  tf_best = max(r["img_per_s"] for r in runs if r["framework"] == "tf")
  torch_best = max(r["img_per_s"] for r in runs
                   if r["framework"] == "torch")
  assert float(table["tf"][11]) == round(tf_best / torch_best, 2)


def test_failed_runs_are_reported_and_exit_nonzero(tmp_path):
  proc = _run(env=_env_without_torch(tmp_path))
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  runs = _runs(proc.stdout)
  torch_runs = [r for r in runs if r["framework"] == "torch"]
  assert len(torch_runs) == 2
  assert all("torch hidden by the test" in r["error"] for r in torch_runs)
  rows = {cells[1].strip(): "|".join(cells) for cells in _table(proc.stdout)}
  assert "FAILED" in rows["torch"] and "torch hidden" in rows["torch"]
  assert "FAILED" not in rows["tf"]  # TF still measured, no ratio
  assert "2 of 4 runs failed" in proc.stdout


def test_noisolate_runs_everything_in_one_process():
  proc = _run(["--noisolate", "--repeats=1"])  # later flags win
  assert proc.returncode == 0, proc.stderr[-3000:]
  runs = _runs(proc.stdout)
  assert [r["framework"] for r in runs] == ["torch", "tf"]
  assert len({r["pid"] for r in runs}) == 1
  assert "one process" in proc.stdout


def test_noisolate_reports_a_failed_run(tmp_path):
  proc = _run(["--noisolate", "--repeats=1"], _env_without_torch(tmp_path))
  assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
  rows = {cells[1].strip(): "|".join(cells) for cells in _table(proc.stdout)}
  assert "FAILED: ImportError: torch hidden by the test" in rows["torch"]
  assert "FAILED" not in rows["tf"]
  assert "1 of 2 runs failed" in proc.stdout

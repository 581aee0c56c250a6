"""bench/gpu_suite.py, bench/gpu_plan.py and their scripts, on a CPU.

In this process, without frameworks: the plan and the skip rules on
made-up records, and the suite itself (gpu_suite.Suite) on a fake GPU host
that stands in for the child processes and the clock: the order of the
grid, skips with their rules, time boxes, the budget and the PyTorch
reserve, timeouts before and after the first step, records written before
the next row starts, a rerun that measures only what is missing, --retry.

In subprocesses, on the real code path (tiny c8 rows): bench/gpu_suite.sh
with the gpu-bundle's own tools on a small fake TensorFlow bundle (a
missing or damaged part leaves the PyTorch rows, one of them hung by
--test_hang and killed by its time box; the complete bundle then gives the
TF rows, an XLA row's warm process hitting the cache its cold one wrote; a
further call measures nothing); a suite killed mid-row, as a command's time
limit kills it, whose measurement dies with it and whose row is then
interrupted. Their time boxes are hang guards or count from a rehearsed
hang, so that no outcome depends on the machine's speed.
"""

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests import REPO_ROOT

ROOT = REPO_ROOT
SUITE = os.path.join(ROOT, "bench", "gpu_suite.py")
WRAPPER = os.path.join(ROOT, "bench", "gpu_suite.sh")
# The gpu-bundle's scripts that run on the GPU host (bench/GPU.md).
TOOLS = os.path.join(os.path.dirname(ROOT), "shared", "tools", "gpu-bundle")
BUNDLE_TOOLS = ("recv.sh", "unpack.sh", "unpack.py", "env.sh", "check.py")

sys.path.insert(0, ROOT)
from bench import gpu_plan  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import gpu_suite  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench.bench_common import CONFIGS  # pylint: disable=g-import-not-at-top,wrong-import-position

OPTIONS = {"xla_far_slower": 1.5, "m16_min_gain": 0.03,
           "batch_min_gain": 0.05, "multiples": {1, 8, 16}}


def _tf(config="c110", dtype="bfloat16", xla=False, multiple=1, batch=None):
  return gpu_plan.Row("tf", config, dtype, batch or CONFIGS[config]["batch"],
                      xla, multiple)


def _done(row, rate=None, status="ok", phase="cold", **extra):
  record = dict(row.fields(), phase=phase, status=status, **extra)
  if rate is not None:
    record["img_per_s"] = rate
  return record


def _rule(name):
  return dict(gpu_plan.RULES)[name]


def _read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# --- Plan and rules ----------------------------------------------------------


def test_plan_order_warm_runs_and_batch_search():
  rows = gpu_plan.plan(["c110", "c272", "i200"], {"float32", "bfloat16"},
                       {False, True}, {1, 8, 16}, list(gpu_plan.TORCH_MODES),
                       batch_search=3)
  keys = [r.key for r in rows]
  assert len(keys) == len(set(keys))
  assert keys[:3] == ["c110/float32/noxla/m1/b128",
                      "c272/float32/noxla/m1/b128",
                      "i200/float32/noxla/m1/b64"]
  tf_rows = [r for r in rows if r.kind == "tf" and not r.search_of]
  assert len(tf_rows) == 3 * 2 * 2 * 3
  warm = [(r.config, r.dtype, r.xla, r.multiple) for r in rows if r.warm]
  assert sorted(warm) == sorted(
      (c, d, True, 1) for c in ("c110", "c272", "i200")
      for d in ("float32", "bfloat16"))
  kinds = [("search" if r.search_of else r.kind) +
           ("_compile" if r.mode.startswith("compile") else "")
           for r in rows]
  # TF grid, then eager/bf16 PyTorch, then the batch search, then compile.
  first = {k: kinds.index(k) for k in set(kinds)}
  last = {k: len(kinds) - 1 - kinds[::-1].index(k) for k in set(kinds)}
  assert last["tf"] < first["torch"] < last["torch"] < first["search"]
  assert last["search"] < first["torch_compile"]
  assert {r.search_of for r in rows if r.search_of} == {"i200"}
  assert [r.batch for r in rows if r.search_of] == [128, 256, 512]
  only_torch = gpu_plan.plan(["c8"], {"float32"}, {False}, {1},
                             ["eager_fp32"], only="torch", batch_search=2)
  assert [r.key for r in only_torch] == ["c8/torch/eager_fp32/b4"]


def test_rule_xla_side_far_slower():
  rule = _rule("xla_side_far_slower")
  records = [_done(_tf(xla=False), 100.0), _done(_tf(xla=True), 200.0)]
  off16, on16 = _tf(xla=False, multiple=16), _tf(xla=True, multiple=16)
  reason = rule(off16, records, None, OPTIONS)
  assert "XLA off is 2.00x slower" in reason and "multiple 1" in reason
  assert rule(on16, records, None, OPTIONS) is None
  # Not the multiple the evidence is from (an XLA row's warm process).
  assert rule(_tf(xla=False), records, None, OPTIONS) is None
  assert rule(off16, records, None, dict(OPTIONS, xla_far_slower=2.5)) is None
  # Another config or dtype is not compared.
  assert rule(_tf("c272", multiple=16), records, None, OPTIONS) is None
  assert rule(_tf(dtype="float32", multiple=16), records, None,
              OPTIONS) is None


def test_rule_m16_needs_m8_gain():
  rule = _rule("m16_needs_m8_gain")
  m16 = _tf(multiple=16)
  base = [_done(_tf(multiple=1), 100.0)]
  assert "+2.0%" in rule(m16, base + [_done(_tf(multiple=8), 102.0)], None,
                         OPTIONS)
  assert rule(m16, base + [_done(_tf(multiple=8), 104.0)], None,
              OPTIONS) is None
  timed_out = _done(_tf(multiple=8), status="timeout")
  assert "multiple 8 has no measured rate" in rule(m16, base + [timed_out],
                                                   None, OPTIONS)
  assert rule(_tf(multiple=8), base, None, OPTIONS) is None
  # Without 8 in the plan, 16 has nothing to be judged by: measured.
  assert rule(m16, base, None, dict(OPTIONS, multiples={1, 16})) is None


def test_rule_compile_timed_out():
  rule = _rule("compile_timed_out")
  hung = _done(_tf(xla=True), status="timeout", timebox_s=300)
  assert "did not reach its first step" in rule(
      _tf(dtype="float32", xla=True, multiple=8), [hung], None, OPTIONS)
  assert rule(_tf(xla=False), [hung], None, OPTIONS) is None
  assert rule(_tf("c272", xla=True), [hung], None, OPTIONS) is None
  late = dict(hung, first_step_s=120.0)  # compiled, then ran out of time
  assert rule(_tf(xla=True, multiple=8), [late], None, OPTIONS) is None


def test_rule_tf_env():
  rule = _rule("tf_env")
  good = {"tf_ok": True, "gpus": 1, "conv_ok": True, "xla_ok": True,
          "require_gpu": True}
  assert rule(_tf(xla=True), [], good, OPTIONS) is None
  assert "no GPU" in rule(_tf(), [], dict(good, gpus=0), OPTIONS)
  assert rule(_tf(), [], dict(good, gpus=0, require_gpu=False),
              OPTIONS) is None
  assert "not usable" in rule(_tf(), [], dict(good, tf_ok=False,
                                              tf_error="ImportError"), OPTIONS)
  assert "convolution failed" in rule(_tf(), [], dict(good, conv_ok=False),
                                      OPTIONS)
  no_xla = dict(good, xla_ok=False, xla_error="ptxas not found")
  assert "ptxas not found" in rule(_tf(xla=True), [], no_xla, OPTIONS)
  assert rule(_tf(xla=False), [], no_xla, OPTIONS) is None
  torch_row = gpu_plan.Row("torch", "c110", "float32", 128, mode="eager_fp32")
  assert rule(torch_row, [], dict(good, tf_ok=False), OPTIONS) is None


def test_batch_search_follows_the_fastest_row_and_stops():
  rows = {r.search_index: r for r in gpu_plan.plan(
      ["i200"], {"bfloat16"}, {False, True}, {1, 8}, [], batch_search=3)
          if r.search_of}
  measured = [_done(_tf("i200", xla=False), 300.0),
              _done(_tf("i200", xla=True, multiple=8), 410.0),
              _done(_tf("i200", xla=True, multiple=8), 420.0, phase="warm")]
  setting, why = gpu_plan.resolve_search(rows[1], measured, OPTIONS)
  assert setting == ("bfloat16", True, 8)
  assert "i200/bfloat16/xla/m8/b64" in why
  assert gpu_plan.resolve_search(rows[1], [], OPTIONS)[0] is None

  def search(index, status, rate=None):
    return _done(rows[index], rate, status=status, dtype="bfloat16", xla=True,
                 channel_multiple=8)
  oom = measured + [search(1, "oom")]
  assert gpu_plan.resolve_search(rows[2], oom, OPTIONS) == (
      None, "batch 128 ended oom")
  flat = measured + [search(1, "ok", 425.0)]  # +1.2% over 420
  setting, why = gpu_plan.resolve_search(rows[2], flat, OPTIONS)
  assert setting is None and "+1.2%" in why
  grows = measured + [search(1, "ok", 500.0), search(2, "ok", 560.0)]
  assert gpu_plan.resolve_search(rows[3], grows, OPTIONS)[0] == (
      "bfloat16", True, 8)
  assert gpu_plan.resolve_search(rows[3], measured + [search(1, "ok", 500.0)],
                                 OPTIONS) == (None, "batch 256 was not "
                                              "measured")


# --- The suite on a fake GPU host --------------------------------------------


def _settings(tmp_path, **overrides):
  """The GPU defaults of resolve_settings, with out/state under tmp_path."""
  values = dict(
      dry_run=False, configs=list(gpu_suite.GPU_CONFIGS),
      dtypes=["float32", "bfloat16"], xla={False, True}, multiples={1, 8, 16},
      torch_modes=list(gpu_plan.TORCH_MODES), only="all", batch_search=3,
      steps=20, warmup=3, budget_s=1e6, torch_reserve_s=100.0,
      timebox_factor=3.0, min_timebox_s=60.0, xla_far_slower=1.5,
      m16_min_gain=0.03, batch_min_gain=0.05, require_gpu=True,
      out_dir=str(tmp_path / "out"), state_dir=str(tmp_path / "state"))
  values.update(overrides)
  return gpu_suite.Settings(**values)


class FakeHost:
  """The child processes and the clock of a GPU host.

  ``rate(name, spec)`` gives a row's img/s, or None for a process that
  fails out of memory, or "hang" for one that never reaches its first step;
  every process takes ``wall(spec)`` seconds of the fake clock (its time
  box, when it hangs). Each call notes its spec, its time box and which
  rows rows.jsonl held at that moment.
  """

  def __init__(self, rate, wall=lambda spec: 20.0, env=None):
    self.rate, self.wall = rate, wall
    self.env = env or {"tf_ok": True, "gpus": 1, "conv_ok": True,
                       "xla_ok": True, "device": "Fake H200"}
    self.now = 1000.0
    self.calls = []
    self.pid = 100

  def clock(self):
    return self.now

  def suite(self, settings):
    suite = gpu_suite.Suite(settings, clock=self.clock)
    out = os.path.join(settings.out_dir, "rows.jsonl")

    def child(spec, env, timeout_s, log_name):
      del env, log_name
      on_disk = ({(r["key"], r["phase"]) for r in _read_jsonl(out)}
                 if os.path.exists(out) else set())
      self.calls.append({"spec": spec, "timeout_s": timeout_s,
                         "on_disk": on_disk,
                         "in_memory": {(r["key"], r["phase"])
                                       for r in suite.records}})
      return self._result(spec, timeout_s)
    suite._child = child  # pylint: disable=protected-access
    return suite

  def _result(self, spec, timeout_s):
    self.pid += 1
    result = {"row": None, "progress": {}, "returncode": 0,
              "timed_out": False, "stdout": "", "stderr": ""}
    if spec["kind"] == "env":
      return dict(result, row=dict(self.env), wall_s=1.0)
    name = next(n for n, c in CONFIGS.items() if c == spec["cfg"])
    rate = self.rate(name, spec)
    wall = self.wall(spec)
    if rate == "hang" or spec["hang"] or wall > timeout_s:
      if rate != "hang":
        result["progress"] = {"progress": "first_step", "first_step_s": 4.0,
                              "pid": self.pid}
      self.now += timeout_s
      return dict(result, timed_out=True, returncode=-9, wall_s=timeout_s)
    self.now += wall
    if rate is None:
      return dict(result, returncode=1, wall_s=wall, stderr=(
          "Traceback\ntensorflow.python.framework.errors_impl."
          "ResourceExhaustedError: OOM when allocating tensor"))
    row = {"batch": spec["batch"], "first_step_s": 5.0, "img_per_s": rate,
           "first_loss": 1.0, "peak_mem_mb": spec["batch"] * 100,
           "mem_kind": "gpu_peak", "pid": self.pid}
    cache = spec.get("cache_dir")
    if cache:
      warm = os.path.isdir(cache)  # the suite clears it before a cold run
      os.makedirs(cache, exist_ok=True)
      result["stderr"] = "Loading cached entry for: step\n" if warm else ""
      row.update(cache_before={"tf_entries": int(warm)},
                 cache_after={"tf_entries": 1},
                 cache_new_tf_entries=0 if warm else 1)
    return dict(result, row=row, wall_s=wall)


def _grid_rate(name, spec):
  """img/s of the fake host: bfloat16 1.8x; XLA 1.3x (0.5x for c272
  float32); multiple 8 1.1x (1.01x for i200), 16 1.15x; i200 batch 128
  1.2x, 256 out of memory; PyTorch eager 0.8x, bf16_cl 1.5x, compile
  1.7x of TF's float32 row at multiple 1."""
  rate = {"c8": 100.0, "c110": 2000.0, "c272": 600.0, "i200": 300.0}[name]
  if "mode" in spec:
    return rate * {"eager_fp32": 0.8, "bf16_cl": 1.5,
                   "compile_bf16_cl": 1.7}[spec["mode"]]
  if spec["batch"] > 128:
    return None
  rate *= 1.2 if spec["batch"] == 128 and name == "i200" else 1.0
  rate *= 1.8 if spec["dtype"] == "bfloat16" else 1.0
  if spec["xla"]:
    rate *= 0.5 if (name, spec["dtype"]) == ("c272", "float32") else 1.3
  rate *= {1: 1.0, 8: 1.01 if name == "i200" else 1.1,
           16: 1.15}[spec["multiple"]]
  return round(rate, 2)


def _by_key(records):
  return {(r["key"], r["phase"]): r for r in records}


def test_suite_runs_the_grid_in_order_and_skips_what_is_ruled_out(tmp_path):
  settings = _settings(tmp_path)
  host = FakeHost(_grid_rate)
  suite = host.suite(settings)
  suite.run()
  rows = _read_jsonl(tmp_path / "out" / "rows.jsonl")
  assert rows[0]["kind"] == "env" and rows[0]["device"] == "Fake H200"
  by = _by_key(rows[1:])
  skipped = {k: r for k, r in by.items() if r["status"] == "skipped"}
  want_skips = {
      ("c272/float32/xla/m8/b128", "cold"): "xla_side_far_slower",
      ("c272/float32/xla/m16/b128", "cold"): "xla_side_far_slower",
      ("i200/bfloat16/noxla/m16/b64", "cold"): "m16_needs_m8_gain",
      ("i200/bfloat16/xla/m16/b64", "cold"): "m16_needs_m8_gain",
      ("i200/float32/noxla/m16/b64", "cold"): "m16_needs_m8_gain",
      ("i200/float32/xla/m16/b64", "cold"): "m16_needs_m8_gain",
      ("i200/batch_search/3", "cold"): "batch_search"}
  assert {k: r["rule"] for k, r in skipped.items()} == want_skips
  assert "XLA on is 2.00x slower" in skipped[
      ("c272/float32/xla/m8/b128", "cold")]["reason"]
  assert "+1.0%" in skipped[("i200/float32/noxla/m16/b64", "cold")]["reason"]
  assert skipped[("i200/batch_search/3", "cold")]["reason"] == (
      "batch 256 ended oom")

  # Every other process ran, one at a time, in the plan's order, each
  # after the records of all before it were on disk.
  planned = [(row.key, phase) for row in suite.rows for phase in row.phases]
  measured = [c for c in host.calls if c["spec"]["kind"] != "env"]
  order = [k for k in planned if k not in want_skips]
  assert len(measured) == len(order)
  ran = sorted((r for r in rows[1:] if r["status"] != "skipped"),
               key=lambda r: r["t_s"])
  assert [(r["key"], r["phase"]) for r in ran] == order
  assert len({r["t_s"] for r in ran}) == len(ran)  # 20 fake s apart
  for call in host.calls:
    assert call["on_disk"] == call["in_memory"]
  # Warm after cold for the first XLA row of each config and dtype, with
  # the cache its cold process wrote.
  warm = [k for k in order if k[1] == "warm"]
  assert len(warm) == 6
  for key, _ in warm:
    assert order.index((key, "warm")) == order.index((key, "cold")) + 1
    assert by[(key, "warm")]["cache_hits"] == 1
    assert by[(key, "cold")]["cache_hits"] == 0
  # The batch search follows the fastest i200 row; 256 does not fit.
  search = by[("i200/batch_search/1", "cold")]
  assert (search["dtype"], search["xla"], search["channel_multiple"],
          search["batch"]) == ("bfloat16", True, 8, 128)
  assert "i200/bfloat16/xla/m8/b64" in search["search_basis"]
  assert by[("i200/batch_search/2", "cold")]["status"] == "oom"
  # Time boxes: DEFAULT_COST first, then 3x the measured 20 s, at least 60.
  boxes = [c["timeout_s"] for c in measured]
  assert boxes[0] == gpu_suite.DEFAULT_COST["c110"]["tf"][1]
  assert boxes[3] == 60.0  # c110 float32 noxla m1's class, measured

  table = (tmp_path / "out" / "table.md").read_text()
  lines = {line.split("|")[2].strip().split(" ")[0]: line
           for line in table.splitlines()
           if line.startswith("| ") and line.split("|")[1].strip().isdigit()}
  assert list(lines) == [row.key for row in suite.rows]
  # vs PyTorch: float32 over eager_fp32; bfloat16 over the faster bf16 mode.
  assert "| 1.25 |" in lines["c110/float32/noxla/m1/b128"]
  assert "| 1.06 |" in lines["c110/bfloat16/noxla/m1/b128"]
  assert "[m16_needs_m8_gain]" in lines["i200/float32/xla/m16/b64"]
  assert "(bfloat16, xla, m8)" in lines["i200/batch_search/1"]
  assert "warm 1 hits" in lines["c110/bfloat16/xla/m1/b128"]
  assert "best i200 batch measured: 128" in table
  assert ("fastest c110: tf 5382.0 img/s (c110/bfloat16/xla/m16/b128); "
          "torch 3400.0 img/s (c110/torch/compile_bf16_cl/b128); "
          "TF/PyTorch 1.58") in table
  assert "processes: 46 ok, 1 oom, 7 skipped (rule)" in table

  # A rerun measures nothing and writes the same rows.
  calls = len(host.calls)
  host.suite(settings).run()
  assert len(host.calls) == calls
  again = _read_jsonl(tmp_path / "out" / "rows.jsonl")
  assert [(r["key"], r["status"]) for r in again if r["status"] != "skipped"
         ] == [(r["key"], r["status"]) for r in rows
               if r["status"] != "skipped"]


def test_budget_reserve_time_boxes_and_rerun(tmp_path):
  settings = _settings(tmp_path, configs=["c110"], dtypes=["float32"],
                       xla={False}, multiples={1, 8},
                       torch_modes=["eager_fp32", "bf16_cl"], batch_search=0,
                       budget_s=150.0)
  host = FakeHost(_grid_rate,
                  wall=lambda spec: 10.0 if "mode" in spec else 30.0)
  host.suite(settings).run()
  runs = [(c["spec"].get("mode") or c["spec"]["multiple"], c["timeout_s"])
          for c in host.calls if c["spec"]["kind"] != "env"]
  # m1: DEFAULT_COST (45 s, box 180) within 150 - 100 reserved; m8 (30 s
  # measured) does not fit the 20 s left beside the reserve; the PyTorch
  # rows use the reserve, the second with a box from the first's wall.
  assert runs == [(1, 50.0), ("eager_fp32", 120.0), ("bf16_cl", 60.0)]
  rows = _by_key(_read_jsonl(tmp_path / "out" / "rows.jsonl"))
  skip = rows[("c110/float32/noxla/m8/b128", "cold")]
  assert skip["status"] == "skipped" and skip["rule"] == "budget"
  assert skip["reason"] == "expects ~30 s, 20 s left for it"
  table = (tmp_path / "out" / "table.md").read_text()
  assert "[budget] expects ~30 s" in table
  assert "1 skipped (budget)" in table

  # A rerun with time to spare measures only the missing row, its box
  # from the earlier run's wall: 3 x 30 s.
  host.calls.clear()
  host.suite(dataclasses.replace(settings, budget_s=1000.0)).run()
  assert [(c["spec"]["kind"], c["spec"].get("multiple"), c["timeout_s"])
          for c in host.calls] == [("tf", 8, 90.0)]


def test_timeouts_oom_and_what_they_rule_out(tmp_path):
  settings = _settings(tmp_path, configs=["c272"], dtypes=["float32"],
                       torch_modes=[], batch_search=0,
                       test_hang={"c272/float32/noxla/m8/b128"})

  def rate(name, spec):
    return "hang" if spec["xla"] else _grid_rate(name, spec)
  host = FakeHost(rate)
  host.suite(settings).run()
  rows = _by_key(_read_jsonl(tmp_path / "out" / "rows.jsonl"))

  def status(key, phase="cold"):
    r = rows[(key, phase)]
    return r["status"], r.get("rule"), r.get("reason")
  assert status("c272/float32/noxla/m1/b128")[0] == "ok"
  assert status("c272/float32/noxla/m8/b128") == (
      "timeout", None, "killed by its 60.0 s time box after its first step")
  assert rows[("c272/float32/noxla/m8/b128", "cold")]["first_step_s"] == 4.0
  assert status("c272/float32/xla/m1/b128") == (
      "timeout", None, "killed by its 480 s time box before its first step")
  assert status("c272/float32/xla/m1/b128", "warm")[:2] == (
      "skipped", "compile_timed_out")
  for key in ("c272/float32/xla/m8/b128", "c272/float32/xla/m16/b128"):
    assert status(key)[:2] == ("skipped", "compile_timed_out")
    assert "did not reach its first step within its 480 s" in status(key)[2]
  assert status("c272/float32/noxla/m16/b128")[:2] == (
      "skipped", "m16_needs_m8_gain")
  table = (tmp_path / "out" / "table.md").read_text()
  assert "processes: 1 ok, 4 skipped (rule), 2 timeout" in table


def test_records_resume_interrupted_rows_and_retry(tmp_path):
  settings = _settings(tmp_path, dry_run=True, configs=["c8"],
                       dtypes=["float32"], xla={False}, multiples={1, 8},
                       torch_modes=["eager_fp32"], batch_search=0,
                       require_gpu=False)
  m1, m8 = "c8/float32/noxla/m1/b4", "c8/float32/noxla/m8/b4"
  torch = "c8/torch/eager_fp32/b4"
  common = {"kind": "tf", "config": "c8", "dtype": "float32", "batch": 4,
            "xla": False, "cost_class": "tf"}
  lines = [
      {"kind": "env", "key": "env", "phase": "check", "status": "ok",
       "tf_ok": True, "conv_ok": True, "gpus": 0, "device": "CPU x2"},
      dict(common, key=m1, phase="cold", status="ok", img_per_s=100.0,
           wall_s=10.0, channel_multiple=1),
      dict(common, key=m8, phase="cold", status="started",
           channel_multiple=8),
      {"kind": "torch", "key": torch, "phase": "run", "status": "error",
       "config": "c8", "batch": 4, "error": "RuntimeError: boom",
       "wall_s": 5.0}]
  state = tmp_path / "state"
  state.mkdir()
  (state / "records.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in lines) + '{"key": "c8/flo')
  host = FakeHost(_grid_rate)
  host.suite(settings).run()
  assert not host.calls  # env kept; every row has its final record
  rows = _by_key(_read_jsonl(tmp_path / "out" / "rows.jsonl"))
  assert rows[(m8, "cold")]["status"] == "interrupted"
  assert "ended while this row ran" in rows[(m8, "cold")]["reason"]
  assert rows[(torch, "run")]["status"] == "error"

  host.suite(dataclasses.replace(settings, retry=True)).run()
  assert [c["spec"].get("multiple", c["spec"].get("mode"))
          for c in host.calls] == [8, "eager_fp32"]
  rows = _by_key(_read_jsonl(tmp_path / "out" / "rows.jsonl"))
  assert [rows[(k, p)]["status"] for k, p in
          ((m1, "cold"), (m8, "cold"), (torch, "run"))] == ["ok"] * 3
  assert rows[(m1, "cold")]["img_per_s"] == 100.0  # kept, not re-measured

  # An env check that found no working convolution is made again.
  with open(state / "records.jsonl", "a") as f:
    f.write(json.dumps(dict(lines[0], conv_ok=False)) + "\n")
  host.calls.clear()
  host.suite(settings).run()
  assert [c["spec"]["kind"] for c in host.calls] == ["env"]


def test_flags_are_checked_before_anything_runs(tmp_path):
  proc = subprocess.run(
      [sys.executable, SUITE, "--dry_run", "--configs=c8",
       "--test_hang=c8/float32/noxla/m3/b4", f"--out_dir={tmp_path}",
       f"--state_dir={tmp_path}"], capture_output=True, text=True,
      timeout=600, check=False)
  assert proc.returncode == 1
  assert "--test_hang: no planned row ['c8/float32/noxla/m3/b4']" in (
      proc.stderr)
  assert not os.listdir(tmp_path)


# --- Subprocesses: the wrapper on a fake bundle, and a killed suite ----------


def _fake_bundle(tmp_path):
  """A gpu-bundle v2 of a few 100 KB: part-01..03 of a zstd tar of
  ``gpusite/`` (a payload in ``tensorflow/``, no ``__init__.py``, so the
  real TensorFlow of this environment still imports) and the bundle's own
  tools with their SHA256SUMS. Returns (payload path, bundle dir)."""
  site = tmp_path / "src" / "gpusite"
  (site / "tensorflow").mkdir(parents=True)
  (site / "tensorflow" / "payload.bin").write_bytes(os.urandom(250_000))
  (site / "GPU_BUNDLE.txt").write_text("fake bundle for tests\n")
  bundle = tmp_path / "bundle"
  (bundle / "tools").mkdir(parents=True)
  subprocess.run(f"tar cf - gpusite | zstd -q --long=30 | split -b 100K -d "
                 f"-a 2 --numeric-suffixes=1 - {bundle}/part-", shell=True,
                 check=True, cwd=tmp_path / "src")
  for name in BUNDLE_TOOLS:
    shutil.copy(os.path.join(TOOLS, name), bundle / "tools" / name)
  parts = sorted(p.name for p in bundle.glob("part-*"))
  subprocess.run("sha256sum part-* > tools/SHA256SUMS", shell=True,
                 check=True, cwd=bundle)
  return site / "tensorflow" / "payload.bin", bundle, parts


def _call(tmp_path, name, bundle, carried):
  """A device call's working tree: ``carried`` bundle files in
  ``.gpu-bundle/``, as the device tool sends them beside the checkout."""
  call = tmp_path / name
  (call / ".gpu-bundle").mkdir(parents=True)
  for item in carried:
    if (bundle / item).is_dir():
      shutil.copytree(bundle / item, call / ".gpu-bundle" / item)
    else:
      shutil.copy(bundle / item, call / ".gpu-bundle" / item)
  return call


def _wrapper(call, env, out, args):
  # The call's limit: a budget that no row's expected time exceeds on a
  # loaded machine (the suite's own budget arithmetic has its unit tests).
  proc = subprocess.run(["bash", WRAPPER, "3000"] + args,
                        capture_output=True, text=True, timeout=1200,
                        check=False, env=dict(env, OUT=str(out)), cwd=call)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


HUNG_TORCH = "c8/torch/bf16_cl/b4"


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs zstd")
@pytest.mark.skipif(not all(os.path.exists(os.path.join(TOOLS, name))
                            for name in BUNDLE_TOOLS),
                    reason=f"needs the gpu-bundle tools in {TOOLS}")
def test_wrapper_on_a_fake_bundle(tmp_path):
  payload, bundle, parts = _fake_bundle(tmp_path)
  assert parts == ["part-01", "part-02", "part-03"]
  home = tmp_path / "home"
  env = dict(os.environ, GB_HOME=str(home), GPU_SUITE_CHECK="0",
             PATH=os.path.dirname(sys.executable) + os.pathsep +
             os.environ["PATH"])
  env.pop("LD_LIBRARY_PATH", None)
  state = tmp_path / "state"
  # Time boxes are hang guards only (--default_timebox_s), except the
  # rehearsed hang's, which counts from the hang: no row's outcome depends
  # on how fast this machine is.
  args = ["--dry_run", "--configs=c8", "--dtypes=float32", "--xla=true",
          "--multiples=1", "--torch_modes=eager_fp32,bf16_cl",
          "--batch_search=0", f"--test_hang={HUNG_TORCH}",
          "--default_timebox_s=600", "--timebox_factor=2",
          "--min_timebox_s=5", f"--state_dir={state}"]

  # 0. A fresh machine: no tools there, nothing carried: PyTorch rows only
  # would run; with --only=torch none of the bundle steps runs at all.
  proc = _wrapper(_call(tmp_path, "c0", bundle, []), env, tmp_path / "o0",
                  [a for a in args if not a.startswith("--test_hang")] + [
                      "--only=torch", "--torch_modes=eager_fp32"])
  assert "no bundle tools" not in proc.stdout
  assert not home.exists() or not (home / "parts").exists()

  # 1. The first call carries the tools and part-01 (recv.sh), the measuring
  # call the last part: part-02 is missing, so the PyTorch rows alone run;
  # the hung one is killed by its time box after its first step, and the
  # suite goes on to its table.
  call = _call(tmp_path, "c1", bundle, ["tools", "part-01"])
  recv = subprocess.run(["bash", ".gpu-bundle/tools/recv.sh"], cwd=call,
                        env=env, capture_output=True, text=True, check=False)
  assert "recv: part-01 ok" in recv.stdout, recv.stdout + recv.stderr
  proc = _wrapper(_call(tmp_path, "c2", bundle, ["part-03"]), env,
                  tmp_path / "o1", args)
  assert "missing parts: part-02" in proc.stdout
  assert "PyTorch rows only" in proc.stdout
  assert not (home / "gpusite").exists()
  rows = _read_jsonl(tmp_path / "o1" / "rows.jsonl")
  assert [(r["key"], r["status"]) for r in rows if r["kind"] != "env"] == [
      ("c8/torch/eager_fp32/b4", "ok"), (HUNG_TORCH, "timeout")]
  eager, hung = [r for r in rows if r["kind"] != "env"]
  assert hung["timebox_s"] == max(5.0, 2 * eager["wall_s"])
  assert hung["wall_s"] >= hung["timebox_s"] and hung["first_step_s"] > 0
  assert "time box after its first step" in hung["reason"]
  assert "counted from the hang" in hung["reason"]
  assert eager["pid"] != hung["pid"] != os.getpid()
  table = (tmp_path / "o1" / "table.md").read_text()
  assert "| timeout |" in table and "1 ok, 1 timeout" in table

  # 2. A damaged part is refused and named; the intact one completes the
  # bundle: TensorFlow is unpacked and env.sh's paths go to the TF rows; the
  # XLA row's warm process hits the cache its cold one wrote; the PyTorch
  # rows of the first call are kept.
  call = _call(tmp_path, "c3", bundle, ["part-02"])
  damaged = call / ".gpu-bundle" / "part-02"
  damaged.write_bytes(b"x" + damaged.read_bytes()[1:])
  proc = _wrapper(call, env, tmp_path / "o2", args)
  assert "refused damaged parts: part-02" in proc.stdout
  assert "missing parts: part-02" in proc.stdout
  proc = _wrapper(_call(tmp_path, "c4", bundle, ["part-02"]), env,
                  tmp_path / "o2", args)
  assert "check.py skipped" in proc.stdout
  site = home / "gpusite"
  assert (site / ".unpacked").exists()
  assert (site / "tensorflow" / "payload.bin").read_bytes() == (
      payload.read_bytes())
  by = _by_key(_read_jsonl(tmp_path / "o2" / "rows.jsonl"))
  assert by[("env", "check")]["conv_ok"]
  key = "c8/float32/xla/m1/b4"
  cold, warm = by[(key, "cold")], by[(key, "warm")]
  assert cold["status"] == warm["status"] == "ok"
  assert cold["cache_new_tf_entries"] >= 1 and cold["cache_hits"] == 0
  assert warm["cache_hits"] >= 1 and warm["cache_new_tf_entries"] == 0
  assert warm["cache_before"]["tf_entries"] == cold["cache_after"][
      "tf_entries"]
  assert cold["pid"] != warm["pid"]
  # The TF child reports its first step as it ends (what a hung row leaves).
  log = (state / "logs" / (key.replace("/", "_") + ".cold.out")).read_text()
  assert '"progress": "first_step"' in log
  assert by[("c8/torch/eager_fp32/b4", "run")]["pid"] == eager["pid"]
  assert by[(HUNG_TORCH, "run")]["status"] == "timeout"
  budget = [line for line in proc.stdout.splitlines()
            if "gpu_suite.py with a budget of" in line]
  assert budget and int(budget[0].rsplit(" ", 1)[1].rstrip("s")) <= 2970
  assert "warm 1 hits" in (tmp_path / "o2" / "table.md").read_text()

  # 3. Again: nothing is unpacked or measured; the same rows.
  proc = _wrapper(_call(tmp_path, "c5", bundle, []), env, tmp_path / "o3",
                  args)
  assert "unpacking" not in proc.stdout and "run  " not in proc.stdout
  assert _read_jsonl(tmp_path / "o3" / "rows.jsonl") == _read_jsonl(
      tmp_path / "o2" / "rows.jsonl")


def test_killed_suite_kills_its_measurement_and_the_row_is_interrupted(
    tmp_path):
  out, state = tmp_path / "out", tmp_path / "state"
  hung = "c8/torch/eager_fp32/b4"
  args = [sys.executable, SUITE, "--dry_run", "--only=torch", "--configs=c8",
          "--torch_modes=eager_fp32", f"--out_dir={out}",
          f"--state_dir={state}"]
  suite = subprocess.Popen(args + [f"--test_hang={hung}"], cwd=ROOT,
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
  progress = state / "logs" / (hung.replace("/", "_") + ".run.out")
  deadline = time.time() + 900  # a hang guard, not a speed check
  child = None
  while time.time() < deadline and child is None:
    time.sleep(0.5)
    if progress.exists():
      for line in progress.read_text().splitlines():
        if line.startswith("GPU_SUITE ") and '"progress"' in line:
          child = json.loads(line[len("GPU_SUITE "):])["pid"]
  if child is None:
    suite.kill()
    suite.wait()
    pytest.fail("the hung row never reached its first step")
  suite.send_signal(signal.SIGKILL)  # what a command's time limit does
  suite.wait()
  for _ in range(50):  # the child dies with its parent
    if not os.path.exists(f"/proc/{child}") or open(
        f"/proc/{child}/stat").read().split()[2] == "Z":
      break
    time.sleep(0.1)
  else:
    os.kill(child, signal.SIGKILL)
    pytest.fail("the measurement outlived the killed suite")
  records = _read_jsonl(state / "records.jsonl")
  assert [(r["key"], r["status"]) for r in records] == [(hung, "started")]

  proc = subprocess.run(args, capture_output=True, text=True, timeout=900,
                        check=False, cwd=ROOT)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "run  " not in proc.stdout  # interrupted is final without --retry
  rows = _read_jsonl(out / "rows.jsonl")
  assert [(r["key"], r["status"]) for r in rows] == [(hung, "interrupted")]

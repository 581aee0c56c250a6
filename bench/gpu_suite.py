"""The trainer's step on one GPU: a grid in order of importance, every row
in a time-boxed process of its own, results written as each row ends.

    bash bench/gpu_suite.sh 450                   # the GPU host (bench/GPU.md)
    python bench/gpu_suite.py --dry_run            # rehearsal on a CPU
    python bench/gpu_suite.py --dry_run --test_hang=c8/float32/noxla/m8/b4

Rows (bench/gpu_plan.py): the configs c110, c272, i200 x compute dtype
(float32, bfloat16) x XLA (off, on) x channel multiple (1, 8, 16) in the
order of TIERS; then the PyTorch reference (tests/torch_pyramidnet.py)
eager fp32 and bf16 autocast + channels_last; then, for ImageNet configs,
doubled batches at the fastest measured setting until one no longer fits
or pays (--batch_search); then torch.compile. Each TF row times
``step.TrainStep`` as bench/train_bench.py does (bench_common.tf_train_row):
first step (tracing + compilation/autotuning + one step), images/s over
--steps steps in one host call, and peak memory (TF's GPU allocator peak;
on a CPU the process's peak RSS). The first XLA row of each config and
dtype runs twice, cold (fresh persistent compile cache) and warm (a second
process on the same cache: ``compile_cache`` entry counts before/after, and
TF's "Loading cached entry" lines as hits).

--dry_run rehearses the same code on a CPU: the tiny configs c8 and i14,
float32 only, 2 timed steps and no warm-up, a batch search of 2, CPU time
boxes, no GPU required (each default can still be set by its flag).

Why the machinery: a GPU host is lent for minutes. So the rows run in
order of importance; rules skip rows that measured rows already rule out
(gpu_plan.RULES; each skip is printed and recorded with its rule and
reason); every row runs in a fresh process with a time box, so a hang or
crash costs that row alone; a row is not started without the time it is
expected to need (DEFAULT_COST, then measured walls); every record is
appended to --state_dir as it ends and --out_dir (rows.jsonl, table.md,
suite.log) is rewritten after every row. Records survive a rerun: rows
already measured are not measured again (--retry measures again the ones
that failed), so a rerun after a cut-off run measures only what is missing.

Processes: this parent imports neither TensorFlow nor PyTorch. TF rows get
GPU_SUITE_TF_PYTHONPATH, the first working entry of
GPU_SUITE_TF_LD_LIBRARY_PATHS (';'-separated, each put before the inherited
LD_LIBRARY_PATH) and GPU_SUITE_XLA_FLAGS, which bench/gpu_suite.sh takes
from the TensorFlow bundle's env.sh; PyTorch rows get the environment as it
is (the bundle's CUDA 12 libraries never come before the host's) and never
import TF.

Time boxes are kept by bench_common.run_row_process on an injectable clock;
--default_timebox_s replaces DEFAULT_COST's boxes (a host far slower than
its estimates, or a test that wants hang guards only), and a rehearsed hang
(--test_hang) is killed its box after it hangs, never before its first
step.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from typing import Dict, List, Optional, Set

from absl import app
from absl import flags

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _ROOT)

from bench import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import gpu_plan  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench.bench_common import CONFIGS  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench.gpu_plan import FINAL, RESERVED_TORCH_MODES, TORCH_MODES, Row  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench.gpu_plan import best_rate, final_record, tf_key  # pylint: disable=g-import-not-at-top,wrong-import-position

GPU_CONFIGS = ("c110", "c272", "i200")
DRY_CONFIGS = ("c8", "i14")

# (expected seconds, time box seconds) of one process of a class before any
# process of that class and config ran here; afterwards the slowest measured
# wall of the class is the estimate and --timebox_factor times it the time
# box. GPU figures are guesses (an earlier GPU measurement put the cold XLA
# compile of c110 at 168 s); the CPU ones were measured on 2 cores.
DEFAULT_COST = {
    "c110": {"tf": (45, 180), "tf_xla": (200, 360), "tf_xla_warm": (60, 240),
             "torch": (30, 120), "torch_compile": (150, 300)},
    "c272": {"tf": (90, 300), "tf_xla": (330, 480), "tf_xla_warm": (90, 300),
             "torch": (45, 180), "torch_compile": (240, 420)},
    "i200": {"tf": (90, 300), "tf_xla": (330, 480), "tf_xla_warm": (90, 300),
             "torch": (45, 180), "torch_compile": (240, 420)},
    "c8": {"tf": (12, 60), "tf_xla": (25, 90), "tf_xla_warm": (15, 60),
           "torch": (8, 60), "torch_compile": (60, 180)},
    "i14": {"tf": (15, 60), "tf_xla": (30, 90), "tf_xla_warm": (20, 60),
            "torch": (10, 60), "torch_compile": (60, 180)},
}

_PREFIX = "GPU_SUITE "
# The progress kind a rehearsed hang (--test_hang) prints as it hangs.
_HANG = "hang"
_OOM_MARKS = ("ResourceExhaustedError", "OOM when allocating",
              "out of memory", "OutOfMemoryError", "RESOURCE_EXHAUSTED")
# TF's warning when its wheel has no kernel binaries for the GPU: the driver
# then compiles TF's kernels from PTX, in the first steps of a process.
_PTX_JIT_MARK = "jit-compiled from PTX"

flags.DEFINE_bool("dry_run", False, "Rehearsal on a CPU: the tiny configs "
                  "c8 and i14, float32, 2 steps, CPU time boxes, no GPU "
                  "required.")
flags.DEFINE_list("configs", [], "Configs (default: c110,c272,i200; "
                  "--dry_run: c8,i14).")
flags.DEFINE_list("dtypes", [], "Compute dtypes, float32 and/or bfloat16 "
                  "(default: both; --dry_run: float32, since bfloat16 rows "
                  "run the same suite code).")
flags.DEFINE_list("xla", ["false", "true"], "XLA settings (false, true).")
flags.DEFINE_list("multiples", ["1", "8", "16"], "Channel multiples.")
flags.DEFINE_list("torch_modes", list(TORCH_MODES), "PyTorch modes "
                  f"({', '.join(TORCH_MODES)}).")
flags.DEFINE_enum("only", "all", ["all", "tf", "torch"], "Which rows: tf = "
                  "the TF grid and the batch search, torch = the PyTorch "
                  "rows (bench/gpu_suite.sh adds --only=torch when "
                  "TensorFlow could not be unpacked).")
flags.DEFINE_integer("batch_search", -1, "ImageNet configs: larger batches "
                     "(x2 each) to try at the fastest setting; 0 = none "
                     "(-1: 3; --dry_run: 2).")
flags.DEFINE_integer("steps", 0, "Timed steps (0: 20; --dry_run: 2).")
flags.DEFINE_integer("warmup", -1, "Untimed steps after the first "
                     "(-1: 3; --dry_run: 0).")
flags.DEFINE_float("budget_s", 0, "Seconds for the whole suite (0: 420); "
                   "no row starts without its expected time left.")
flags.DEFINE_float("torch_reserve_s", -1, "Seconds kept for the "
                   f"{'/'.join(RESERVED_TORCH_MODES)} PyTorch rows while TF "
                   "rows run and those rows are still to come (-1: 100; "
                   "--dry_run: 25).")
flags.DEFINE_float("timebox_factor", 3.0, "Time box of a process: this "
                   "times the slowest measured wall of its class and config "
                   "(before one is measured: DEFAULT_COST).")
flags.DEFINE_float("min_timebox_s", -1, "Smallest time box derived from a "
                   "measured wall (-1: 60; --dry_run: 20).")
flags.DEFINE_float("default_timebox_s", 0, "Time box of a process before "
                   "one of its class has been measured for its config, and "
                   "of the env check (0: DEFAULT_COST's box, 240 s for the "
                   "env check). A host far slower than DEFAULT_COST's "
                   "estimates needs more; a large value makes these boxes "
                   "mere hang guards.")
flags.DEFINE_float("xla_far_slower", 1.5, "Rule xla_side_far_slower: one "
                   "XLA side this many times slower than the other at some "
                   "multiple skips its remaining multiples.")
flags.DEFINE_float("m16_min_gain", 0.03, "Rule m16_needs_m8_gain: multiple "
                   "16 is measured only where 8 beat 1 by this fraction.")
flags.DEFINE_float("batch_min_gain", 0.05, "Batch search: stop when a "
                   "doubled batch gained less than this fraction.")
flags.DEFINE_string("out_dir", None, "Results (rows.jsonl, table.md, "
                    "suite.log), rewritten after every row (default: $OUT, "
                    "else ./gpu_suite_out).")
flags.DEFINE_string("state_dir", None, "Records, child logs and compile "
                    "caches, kept for reruns (default: /tmp/gpu_suite; "
                    "--dry_run: /tmp/gpu_suite_dry).")
flags.DEFINE_bool("fresh", False, "Forget the records of earlier runs.")
flags.DEFINE_bool("retry", False, "Measure again rows whose earlier run "
                  "failed, timed out or was interrupted.")
flags.DEFINE_bool("require_gpu", None, "Skip TF rows when TF sees no GPU "
                  "(default: on unless --dry_run).")
flags.DEFINE_list("test_hang", [], "Rehearsal hook: the processes of these "
                  "row keys (the cold one of an XLA row) hang after their "
                  "first step, so that their time box kills them; the box "
                  "of such a process counts from its hang, so the kill "
                  "comes after its first step on a machine of any speed.")
FLAGS = flags.FLAGS


@dataclasses.dataclass
class Settings:
  """Everything the suite reads (``resolve_settings``: from the flags)."""
  dry_run: bool
  configs: List[str]
  dtypes: List[str]
  xla: Set[bool]
  multiples: Set[int]
  torch_modes: List[str]
  only: str
  batch_search: int
  steps: int
  warmup: int
  budget_s: float
  torch_reserve_s: float
  timebox_factor: float
  min_timebox_s: float
  xla_far_slower: float
  m16_min_gain: float
  batch_min_gain: float
  require_gpu: bool
  out_dir: str
  state_dir: str
  fresh: bool = False
  retry: bool = False
  test_hang: Set[str] = dataclasses.field(default_factory=set)
  default_timebox_s: float = 0.0

  @property
  def options(self) -> Dict:
    """The thresholds of gpu_plan's rules."""
    return {"xla_far_slower": self.xla_far_slower,
            "m16_min_gain": self.m16_min_gain,
            "batch_min_gain": self.batch_min_gain,
            "multiples": set(self.multiples)}

  def plan(self) -> List[Row]:
    return gpu_plan.plan(self.configs, set(self.dtypes), self.xla,
                         self.multiples, self.torch_modes, self.only,
                         self.batch_search)


def resolve_settings() -> Settings:
  """Settings from the flags, with the --dry_run defaults filled in."""
  dry = FLAGS.dry_run

  def pick(value, unset, gpu, cpu):
    return (cpu if dry else gpu) if value == unset else value
  for value in FLAGS.multiples:
    if not value.isdigit() or int(value) < 1:
      raise app.UsageError(f"--multiples: {value!r} is not a positive int")
  check = bench_common.check_choices
  settings = Settings(
      dry_run=dry,
      configs=check("configs", FLAGS.configs or list(
          DRY_CONFIGS if dry else GPU_CONFIGS), list(CONFIGS)),
      dtypes=check("dtypes", FLAGS.dtypes or (
          ["float32"] if dry else ["float32", "bfloat16"]),
                   ["float32", "bfloat16"]),
      xla={v == "true" for v in check("xla", FLAGS.xla, ["false", "true"])},
      multiples={int(value) for value in FLAGS.multiples},
      torch_modes=check("torch_modes", FLAGS.torch_modes, list(TORCH_MODES)),
      only=FLAGS.only,
      batch_search=pick(FLAGS.batch_search, -1, 3, 2),
      steps=pick(FLAGS.steps, 0, 20, 2),
      warmup=pick(FLAGS.warmup, -1, 3, 0),
      budget_s=FLAGS.budget_s or 420.0,
      torch_reserve_s=pick(FLAGS.torch_reserve_s, -1, 100.0, 25.0),
      timebox_factor=FLAGS.timebox_factor,
      min_timebox_s=pick(FLAGS.min_timebox_s, -1, 60.0, 20.0),
      xla_far_slower=FLAGS.xla_far_slower,
      m16_min_gain=FLAGS.m16_min_gain,
      batch_min_gain=FLAGS.batch_min_gain,
      require_gpu=(not dry if FLAGS.require_gpu is None
                   else FLAGS.require_gpu),
      out_dir=FLAGS.out_dir or os.environ.get("OUT") or os.path.join(
          os.getcwd(), "gpu_suite_out"),
      state_dir=FLAGS.state_dir or ("/tmp/gpu_suite_dry" if dry else
                                    "/tmp/gpu_suite"),
      fresh=FLAGS.fresh, retry=FLAGS.retry, test_hang=set(FLAGS.test_hang),
      default_timebox_s=FLAGS.default_timebox_s)
  for name, value in (("batch_search", settings.batch_search),
                      ("steps", settings.steps - 1),
                      ("warmup", settings.warmup),
                      ("budget_s", settings.budget_s),
                      ("torch_reserve_s", settings.torch_reserve_s),
                      ("min_timebox_s", settings.min_timebox_s),
                      ("default_timebox_s", settings.default_timebox_s)):
    if value < 0:
      raise app.UsageError(f"--{name} is out of range")
  if settings.timebox_factor < 1:
    raise app.UsageError("--timebox_factor must be at least 1")
  unknown = settings.test_hang - {row.key for row in settings.plan()}
  if unknown:
    raise app.UsageError(f"--test_hang: no planned row {sorted(unknown)}")
  return settings


# --- The suite --------------------------------------------------------------


class Suite:
  """Runs the plan: records, time budget, output files. ``clock`` gives the
  time in seconds (tests pass a fake one)."""

  def __init__(self, settings: Settings, clock=time.time):
    self.s = settings
    self.clock = clock
    self.start = clock()
    self.deadline = self.start + settings.budget_s
    os.makedirs(settings.out_dir, exist_ok=True)
    if settings.fresh:
      shutil.rmtree(settings.state_dir, ignore_errors=True)
    os.makedirs(os.path.join(settings.state_dir, "logs"), exist_ok=True)
    self.records_path = os.path.join(settings.state_dir, "records.jsonl")
    self.log_path = os.path.join(settings.out_dir, "suite.log")
    self.records = self._load()
    self.env = None
    self.rows = settings.plan()

  # Records.

  def _load(self) -> list:
    """Earlier runs' final records; skips are decided again, and a row
    that started but never ended (the suite was killed) is interrupted."""
    if not os.path.exists(self.records_path):
      return []
    records, started = [], {}
    with open(self.records_path) as f:
      for line in f:
        try:
          r = json.loads(line)
        except ValueError:
          continue  # a line cut by a kill
        ident = (r.get("key"), r.get("phase"))
        if r.get("status") == "started":
          started[ident] = r
        elif r.get("status") in FINAL:
          started.pop(ident, None)
          records.append(r)
    for r in started.values():
      records.append(dict(r, status="interrupted",
                          reason="the suite ended while this row ran"))
    if self.s.retry:
      records = [r for r in records if r.get("kind") == "env" or
                 r.get("status") == "ok"]
    return records

  def _append(self, record: dict):
    with open(self.records_path, "a") as f:
      f.write(json.dumps(record) + "\n")

  def _elapsed(self) -> float:
    return round(self.clock() - self.start, 1)

  def log(self, line: str):
    stamp = f"[{self._elapsed():6.1f}s] "
    print(stamp + line, flush=True)
    with open(self.log_path, "a") as f:
      f.write(stamp + line + "\n")

  def record(self, record: dict, quiet=False):
    record["t_s"] = self._elapsed()
    self.records.append(record)
    self._append(record)
    if not quiet:
      print(_PREFIX + json.dumps(record), flush=True)
    self.write_outputs()

  def write_outputs(self):
    _atomic_write(os.path.join(self.s.out_dir, "rows.jsonl"), "".join(
        json.dumps(r) + "\n" for r in self._ordered()))
    _atomic_write(os.path.join(self.s.out_dir, "table.md"), self.table())

  def _ordered(self):
    order = {row.key: i for i, row in enumerate(self.rows)}
    env = [r for r in self.records if r.get("kind") == "env"][-1:]
    rest = [r for r in self.records if r.get("kind") != "env"]
    return env + sorted(rest, key=lambda r: (order.get(r["key"], 1e9),
                                             r.get("phase") == "warm"))

  # Time.

  def remaining(self) -> float:
    return self.deadline - self.clock()

  def _walls(self, row, phase):
    return [r["wall_s"] for r in self.records
            if r.get("status") in FINAL and r.get("config") == row.config and
            r.get("cost_class") == row.cost_class(phase) and
            r.get("wall_s") and r.get("status") != "timeout"]

  def cost(self, row, phase):
    """(expected seconds, time box seconds) of the row's process."""
    walls = self._walls(row, phase)
    if walls:
      expected = max(walls)
      return expected, max(self.s.min_timebox_s,
                           self.s.timebox_factor * expected)
    defaults = DEFAULT_COST.get(row.config, DEFAULT_COST["i200"])
    expected, box = defaults[row.cost_class(phase)]
    return expected, self.s.default_timebox_s or box

  def reserve(self, row) -> float:
    """Seconds a TF row leaves for the reserved PyTorch rows still to come
    in this run (no record yet: neither measured nor skipped)."""
    if row.kind != "tf":
      return 0.0
    decided = {r.get("key") for r in self.records}
    pending = any(r.kind == "torch" and r.mode in RESERVED_TORCH_MODES and
                  r.key not in decided for r in self.rows)
    return self.s.torch_reserve_s if pending else 0.0

  # Processes.

  def _tf_env(self, ld_path: Optional[str], cache_logging: bool):
    env = dict(os.environ)
    extra = os.environ.get("GPU_SUITE_TF_PYTHONPATH", "")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_ROOT, extra, os.environ.get("PYTHONPATH", "")) if p)
    if ld_path is not None:
      env["LD_LIBRARY_PATH"] = os.pathsep.join(
          p for p in (ld_path, os.environ.get("LD_LIBRARY_PATH", "")) if p)
    xla_flags = os.environ.get("GPU_SUITE_XLA_FLAGS", "")
    if xla_flags:
      env["XLA_FLAGS"] = " ".join(
          p for p in (env.get("XLA_FLAGS", ""), xla_flags) if p)
    return bench_common.cache_log_env(env) if cache_logging else env

  def _child(self, spec, env, timeout_s, log_name):
    """One process (tests replace this method). A rehearsed hang's time
    box counts from its hang."""
    cmd = [sys.executable, os.path.abspath(__file__),
           "--child=" + json.dumps(spec)]
    log = os.path.join(self.s.state_dir, "logs", log_name.replace("/", "_"))
    return bench_common.run_row_process(
        cmd, _PREFIX, timeout_s=timeout_s, env=env, cwd=_ROOT, log_path=log,
        box_from=_HANG if spec.get("hang") else None)

  def _reusable_env(self):
    for r in reversed(self.records):
      if r.get("kind") == "env":
        if r.get("conv_ok") and (r.get("gpus") or not self.s.require_gpu):
          return r
        return None
    return None

  def check_env(self):
    """The env row: TF's version and devices, and whether a convolution
    forward/backward runs (and matches the CPU) with and without XLA,
    trying each GPU_SUITE_TF_LD_LIBRARY_PATHS entry until one works. An
    earlier run's check that found a working convolution is kept."""
    earlier = self._reusable_env()
    if earlier is not None:
      self.env = earlier
      self.log(f"env: reusing the earlier check ({earlier.get('device')})")
      return
    candidates = [c for c in os.environ.get(
        "GPU_SUITE_TF_LD_LIBRARY_PATHS", "").split(";") if c] or [None]
    tries = []
    record = None
    for index, ld_path in enumerate(candidates):
      box = min(self.s.default_timebox_s or 240.0,
                max(30.0, self.remaining()))
      result = self._child({"kind": "env"}, self._tf_env(ld_path, False),
                           box, f"env.{index}")
      got = result["row"] or {}
      tries.append({"ld_library_path": ld_path, "wall_s": result["wall_s"],
                    "tf_ok": bool(got.get("tf_ok")),
                    "conv_ok": bool(got.get("conv_ok")),
                    "error": (None if result["row"] else
                              bench_common.error_tail(result))})
      record = dict(got, kind="env", key="env", phase="check",
                    ld_library_path=ld_path,
                    xla_flags=os.environ.get("GPU_SUITE_XLA_FLAGS") or None,
                    ptx_jit=_PTX_JIT_MARK in result["stderr"])
      if not result["row"]:
        record.update(tf_ok=False, status="error",
                      tf_error=bench_common.error_tail(result))
      else:
        record["status"] = "ok" if got.get("tf_ok") else "error"
      if got.get("conv_ok") and (got.get("gpus") or not self.s.require_gpu):
        break
    record["tries"] = tries
    record["require_gpu"] = self.s.require_gpu
    record["nvidia_smi"] = _nvidia_smi()
    self.env = record
    self.record(record)
    self.log(f"env: {record.get('device')}, TF {record.get('tf_version')}, "
             f"conv {'ok' if record.get('conv_ok') else 'FAILED'}, XLA "
             f"{'ok' if record.get('xla_ok') else 'FAILED'}"
             + ("; TF kernels JIT-compiled from PTX" if record["ptx_jit"]
                else ""))

  def run(self):
    self.log(f"gpu_suite: {len(self.rows)} rows planned, budget "
             f"{self.s.budget_s:.0f} s, state {self.s.state_dir}, out "
             f"{self.s.out_dir}; {len(self.records)} earlier records")
    if any(row.kind == "tf" for row in self.rows):
      self.check_env()
    for row in self.rows:
      for phase in row.phases:
        self.run_phase(row, phase)
    self.write_outputs()
    print("\n" + self.table(), flush=True)

  def _skip(self, fields, phase, rule, reason):
    self.record(dict(fields, phase=phase, status="skipped", rule=rule,
                     reason=reason), quiet=True)
    self.log(f"skip {fields['key']} ({phase}): [{rule}] {reason}")

  def run_phase(self, row, phase):
    if final_record(self.records, row.key, phase) is not None:
      return  # measured by an earlier run
    fields = row.fields()
    if row.search_of:
      setting, why = gpu_plan.resolve_search(row, self.records,
                                             self.s.options)
      if setting is None:
        return self._skip(fields, phase, "batch_search", why)
      row.dtype, row.xla, row.multiple = setting
      fields = dict(row.fields(), search_basis=why)
    for name, rule in gpu_plan.RULES:
      reason = rule(row, self.records, self.env, self.s.options)
      if reason:
        return self._skip(fields, phase, name, reason)
    if phase == "warm":
      cold = final_record(self.records, row.key, "cold")
      if cold is None or cold["status"] != "ok":
        return self._skip(fields, phase, "warm_needs_cold",
                          "the cold run has no result")
    expected, box = self.cost(row, phase)
    available = self.remaining() - self.reserve(row)
    if available < expected:
      return self._skip(fields, phase, "budget",
                        f"expects ~{expected:.0f} s, {max(0, available):.0f}"
                        f" s left for it")
    box = round(min(box, available), 1)
    fields.update(phase=phase, cost_class=row.cost_class(phase),
                  timebox_s=box)
    self._append(dict(fields, status="started", t_s=self._elapsed()))
    self.log(f"run  {row.key} ({phase}), time box {box:.0f} s")
    spec = dict(kind=row.kind, cfg=CONFIGS[row.config], dtype=row.dtype,
                batch=row.batch, steps=self.s.steps, warmup=self.s.warmup,
                hang=row.key in self.s.test_hang and phase != "warm")
    if row.kind == "tf":
      cache_dir = None
      if row.xla:
        cache_dir = os.path.join(self.s.state_dir, "cache",
                                 row.key.replace("/", "_"))
        if phase == "cold":
          shutil.rmtree(cache_dir, ignore_errors=True)
      spec.update(xla=row.xla, multiple=row.multiple, cache_dir=cache_dir)
      env = self._tf_env(self.env.get("ld_library_path") if self.env else
                         None, cache_logging=row.xla)
    else:
      spec["mode"] = row.mode
      env = dict(os.environ)
      env["PYTHONPATH"] = os.pathsep.join(
          p for p in (_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    result = self._child(spec, env, box, f"{row.key}.{phase}")
    self.record(self._result_record(fields, result))
    last = self.records[-1]
    self.log(f"done {row.key} ({phase}): {last['status']}"
             + (f", {last.get('img_per_s')} img/s, first step "
                f"{last.get('first_step_s')} s" if last["status"] == "ok"
                else f": {last.get('reason') or last.get('error')}"))
    if last["status"] != "ok":
      with open(self.log_path, "a") as f:
        f.write("  stderr tail:\n" + "".join(
            f"    {line}\n" for line in result["stderr"].splitlines()[-25:]))

  def _result_record(self, fields, result):
    record = dict(fields, wall_s=result["wall_s"],
                  returncode=result["returncode"])
    record.update({k: v for k, v in result["progress"].items()
                   if k != "progress"})
    hits = len(bench_common.CACHE_HIT_LINE.findall(result["stderr"]))
    if fields.get("xla"):
      record["cache_hits"] = hits
    if result["row"] is not None and result["returncode"] == 0:
      record.update(result["row"])
      record["status"] = "ok"
    elif result["timed_out"]:
      record["status"] = "timeout"
      reached = record.get("first_step_s") is not None
      record["reason"] = (f"killed by its {fields['timebox_s']} s time box "
                          + ("after" if reached else "before")
                          + " its first step")
      if result["progress"].get("progress") == _HANG:
        record["reason"] += " (a rehearsed hang: counted from the hang)"
    else:
      oom = any(mark in result["stderr"] for mark in _OOM_MARKS)
      record["status"] = "oom" if oom else "error"
      record["error"] = bench_common.error_tail(result)
    return record

  # Table.

  def table(self) -> str:
    env = self.env or {}
    lines = [f"# gpu_suite{' (dry run)' if self.s.dry_run else ''}: "
             f"{env.get('device', '?')}; TF {env.get('tf_version', '?')}; "
             f"{self.s.steps} timed steps after {self.s.warmup} warm-up; "
             f"budget {self.s.budget_s:.0f} s; rewritten after every row",
             ""]
    if env:
      failed = env.get("tf_error") or "failed"
      conv = "ok" if env.get("conv_ok") else env.get("conv_error", failed)
      xla = "ok" if env.get("xla_ok") else env.get("xla_error", failed)
      jit = "; TF kernels JIT-compiled from PTX" if env.get("ptx_jit") else ""
      lines.append(
          f"env: GPUs {env.get('gpus')}; CUDA {env.get('cuda_version')}, "
          f"cuDNN {env.get('cudnn_version')}; conv {conv}; XLA {xla}{jit}; "
          f"LD_LIBRARY_PATH {env.get('ld_library_path') or '(inherited)'}; "
          f"nvidia-smi: {env.get('nvidia_smi') or '-'}")
      lines.append("")
    kinds = sorted({r["mem_kind"] for r in self.records if r.get("mem_kind")})
    lines += [f"peak MB: {', '.join(kinds) or '-'} (gpu_peak: the "
              "framework allocator's peak; cpu_rss: the process's peak "
              "RSS); vs PyTorch: img/s over the PyTorch row of the same "
              "config and batch (float32: eager_fp32; bfloat16: the faster "
              "of bf16_cl and compile_bf16_cl)", ""]
    lines += ["| # | row | tier | status | batch | first step s (cold) | "
              "first step s (warm) | XLA cache | "
              "img/s | img/s (warm) | peak MB | vs PyTorch | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(self.rows, 1):
      lines.append(self._table_line(i, row))
    lines += [""] + self.summary()
    return "\n".join(lines) + "\n"

  def _phase_records(self, row):
    out = {}
    for r in self.records:
      if r.get("key") == row.key:
        out[r.get("phase")] = r  # the last record of each phase
    return out

  def _table_line(self, index, row):
    phases = self._phase_records(row)
    main = phases.get("run") or phases.get("cold")
    warm = phases.get("warm")
    label = row.key
    if main and main.get("search_basis"):
      label += (f" ({main['dtype']}, {'xla' if main['xla'] else 'noxla'}, "
                f"m{main['channel_multiple']})")
    if main is None:
      return (f"| {index} | {label} | {row.tier} | not reached | {row.batch} "
              "| | | | | | | | |")

    def num(r, k):
      return "" if r is None or r.get(k) is None else str(r[k])
    cache = _cache_text(main, warm) if row.xla else ""
    notes = []
    for r in (main, warm):
      if r is not None and r.get("status") != "ok":
        text = r.get("reason") or r.get("error") or ""
        rule = f"[{r['rule']}] " if r.get("rule") else ""
        notes.append(f"{r.get('phase')}: {r['status']} {rule}{text}")
    status = main["status"] + (f"/{warm['status']}" if warm else "")
    ratio = self._vs_torch(row, main)
    note = "; ".join(notes).replace("|", "/")
    return (f"| {index} | {label} | {row.tier} | {status} | "
            f"{num(main, 'batch')} | {num(main, 'first_step_s')} | "
            f"{num(warm, 'first_step_s')} | {cache} | "
            f"{num(main, 'img_per_s')} | {num(warm, 'img_per_s')} | "
            f"{num(main, 'peak_mem_mb')} | {ratio} | {note} |")

  def _torch_rate(self, config, dtype, batch):
    """The PyTorch reference of a TF row: eager fp32 for float32, the
    faster bf16 mode for bfloat16 (same config and batch)."""
    modes = (["eager_fp32"] if dtype == "float32" else
             ["bf16_cl", "compile_bf16_cl"])
    rates = [best_rate(self.records, Row("torch", config, dtype, batch,
                                     mode=m).key) for m in modes]
    rates = [r for r in rates if r]
    return max(rates) if rates else None

  def _vs_torch(self, row, main):
    if row.kind != "tf" or main.get("status") != "ok":
      return ""
    ref = self._torch_rate(row.config, main["dtype"], main["batch"])
    rate = best_rate(self.records, row.key)
    return f"{rate / ref:.2f}" if ref and rate else ""

  def _effects(self) -> List[str]:
    """Channel multiple and XLA effects, each against its baseline row."""
    tf_rows = [r for r in self.rows if r.kind == "tf" and not r.search_of]
    lines = _ratio_lines(
        self.records, tf_rows, "multiple",
        lambda r: None if r.multiple == 1 else tf_key(
            r.config, r.dtype, r.xla, 1, r.batch))
    lines += _ratio_lines(
        self.records, tf_rows, "XLA",
        lambda r: None if not r.xla else tf_key(
            r.config, r.dtype, False, r.multiple, r.batch))
    lines += _ratio_lines(
        self.records, tf_rows, "bfloat16",
        lambda r: None if r.dtype != "bfloat16" else tf_key(
            r.config, "float32", r.xla, r.multiple, r.batch))
    return lines

  def summary(self) -> List[str]:
    lines = []
    counts = {}
    for row in self.rows:
      for phase in row.phases:
        r = _phase_status(self.records, row.key, phase)
        counts[r] = counts.get(r, 0) + 1
    lines.append("processes: " + ", ".join(
        f"{n} {status}" for status, n in sorted(counts.items())))
    for name in self.s.configs:
      best = {}  # at the config's own batch, where both sides ran
      for r in self.records:
        if r.get("config") == name and r.get("status") == "ok" and (
            r.get("kind") in ("tf", "torch")) and (
                r.get("batch") == CONFIGS[name]["batch"]):
          side = r["kind"]
          if side not in best or r["img_per_s"] > best[side]["img_per_s"]:
            best[side] = r
      if not best:
        continue
      parts = [f"{side} {r['img_per_s']} img/s ({r['key']})"
               for side, r in sorted(best.items())]
      if len(best) == 2:
        ratio = best["tf"]["img_per_s"] / best["torch"]["img_per_s"]
        parts.append(f"TF/PyTorch {ratio:.2f}")
      lines.append(f"fastest {name}: " + "; ".join(parts))
    lines += self._effects()
    for row in self.rows:
      if row.search_of and row.search_index == 1:
        base = CONFIGS[row.search_of]["batch"]
        fits = [r for r in self.records if r.get("config") == row.search_of
                and r.get("status") == "ok" and r.get("kind") == "tf"]
        if fits:
          top = max(fits, key=lambda r: r["img_per_s"])
          lines.append(f"best {row.search_of} batch measured: {top['batch']} "
                       f"({top['img_per_s']} img/s, peak {top['peak_mem_mb']}"
                       f" MB; base batch {base})")
    return lines


def _cache_text(cold, warm) -> str:
  """The XLA cache column: entries the cold run wrote, hits of the warm."""
  def grown(r, what):
    before = (r.get("cache_before") or {}).get(what)
    after = (r.get("cache_after") or {}).get(what)
    return "?" if before is None or after is None else f"+{after - before}"
  parts = []
  if cold and cold.get("status") == "ok":
    parts.append(f"cold {grown(cold, 'tf_entries')} TF, "
                 f"{grown(cold, 'autotune_entries')} autotune")
  if warm and warm.get("status") == "ok":
    parts.append(f"warm {warm.get('cache_hits', 0)} hits, "
                 f"{grown(warm, 'tf_entries')} TF, "
                 f"{grown(warm, 'autotune_entries')} autotune")
  return "; ".join(parts)


def _ratio_lines(records, rows, what, pairs) -> List[str]:
  """'what' ratios of measured TF rows: pairs maps a row to the key of the
  row it is compared with (None: not compared)."""
  lines = []
  for row in rows:
    base_key = pairs(row)
    if base_key is None:
      continue
    mine, base = best_rate(records, row.key), best_rate(records, base_key)
    if mine and base:
      lines.append(f"{what} {row.key}: {mine / base:.2f}x of {base_key}")
  return lines


def _phase_status(records, key, phase):
  status = "not reached"
  for r in records:
    if r.get("key") == key and r.get("phase") == phase:
      status = r["status"] if r["status"] != "skipped" else (
          "skipped (budget)" if r.get("rule") == "budget" else
          "skipped (rule)")
  return status


def _atomic_write(path, text):
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def _nvidia_smi() -> Optional[str]:
  if not shutil.which("nvidia-smi"):
    return None
  try:
    proc = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
         "clocks.sm,clocks.max.sm,temperature.gpu,power.draw",
         "--format=csv,noheader"], capture_output=True, text=True,
        timeout=20, check=False)
  except (OSError, subprocess.SubprocessError) as e:
    return f"failed: {e}"
  return proc.stdout.strip() or proc.stderr.strip()


# --- Child processes (no absl app: see _child_main) -------------------------


def _emit(record):
  print(_PREFIX + json.dumps(record), flush=True)


def _progress(first_step_s, hang):
  _emit({"progress": "first_step", "first_step_s": first_step_s,
         "pid": os.getpid()})
  if hang:
    _emit({"progress": _HANG, "pid": os.getpid()})
    while True:  # the rehearsal's hung row: only its time box ends it
      time.sleep(3600)


def _child_env_check():
  """TF version, devices, and a conv forward/backward with and without XLA
  on the first device, against the CPU in float64."""
  import pyramidnet_tf  # pylint: disable=g-import-not-at-top,unused-import  (hides Keras) # noqa: F401
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = {"tf_ok": True, "tf_version": tf.__version__}
  build = tf.sysconfig.get_build_info()
  out["cuda_version"] = build.get("cuda_version")
  out["cudnn_version"] = build.get("cudnn_version")
  gpus = tf.config.list_physical_devices("GPU")
  out["gpus"] = len(gpus)
  out["device"] = (tf.config.experimental.get_device_details(gpus[0]).get(
      "device_name", "GPU") if gpus else f"CPU x{os.cpu_count()}")
  device = "/GPU:0" if gpus else "/CPU:0"
  rng = np.random.default_rng(0)
  x = rng.standard_normal((8, 16, 16, 24))
  w = rng.standard_normal((3, 3, 24, 40)) * 0.1

  def conv_grads(x, w):
    with tf.GradientTape() as tape:
      tape.watch([x, w])
      y = tf.nn.conv2d(x, w, 1, "SAME")
      loss = tf.reduce_sum(y * y)
    return [y] + tape.gradient(loss, [x, w])

  with tf.device("/CPU:0"):
    want = [t.numpy() for t in conv_grads(tf.constant(x), tf.constant(w))]

  def check(fn, name):
    try:
      with tf.device(device):
        got = [t.numpy() for t in fn(tf.constant(x, tf.float32),
                                     tf.constant(w, tf.float32))]
      error = max(float(np.linalg.norm(g - r) / np.linalg.norm(r))
                  for g, r in zip(got, want))
      out[f"{name}_rel_error"] = error
      out[f"{name}_ok"] = error < 1e-2  # TF32 on tensor cores: ~1e-3
      if error >= 1e-2:
        out[f"{name}_error"] = f"relative error {error:.2e} vs float64"
    except Exception as e:  # pylint: disable=broad-except
      out[f"{name}_ok"] = False
      out[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
  check(conv_grads, "conv")
  check(tf.function(conv_grads, jit_compile=True), "xla")
  _emit(out)


def _child_tf(spec):
  cache_dir = spec.get("cache_dir")
  if cache_dir:
    # Before TF lists its devices, which fixes TF_XLA_FLAGS.
    from pyramidnet_tf.runtime import compile_cache  # pylint: disable=g-import-not-at-top
    compile_cache.configure(cache_dir)
    before = compile_cache.stats(cache_dir)
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import config as config_lib  # pylint: disable=g-import-not-at-top
  strategy = distribute.create_strategy(
      config_lib.RuntimeConfig(distribution="one_device"))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  row = bench_common.tf_train_row(
      tf, strategy, spec["cfg"], spec["dtype"], spec["xla"], spec["multiple"],
      spec["batch"], spec["steps"], spec["warmup"],
      on_first_step=lambda s: _progress(s, spec["hang"]))
  if cache_dir:
    after = compile_cache.stats(cache_dir)
    row["cache_before"] = {k: v for k, v in before.items() if k != "files"}
    row["cache_after"] = {k: v for k, v in after.items() if k != "files"}
    row["cache_new_tf_entries"] = compile_cache.new_entries(before, after)
  row["pid"] = os.getpid()
  _emit(row)


def _child_torch(spec):
  import torch  # pylint: disable=g-import-not-at-top
  dtype, channels_last, compiled = TORCH_MODES[spec["mode"]]
  row = bench_common.torch_train_row(
      spec["cfg"], dtype, spec["batch"], spec["steps"], spec["warmup"],
      channels_last=channels_last, compile_model=compiled,
      on_first_step=lambda s: _progress(s, spec["hang"]))
  row["torch_version"] = torch.__version__
  row["device"] = (torch.cuda.get_device_name(0) if torch.cuda.is_available()
                   else "cpu")
  row["pid"] = os.getpid()
  _emit(row)


def _child_main(spec):
  """One measurement. Not under absl's app.run: importing TensorFlow
  registers an after-init callback that lists its devices, and under
  app.run that would fix TF_XLA_FLAGS before the compile cache is set."""
  if spec["kind"] == "env":
    _child_env_check()
  elif spec["kind"] == "tf":
    _child_tf(spec)
  else:
    _child_torch(spec)


def main(argv):
  del argv
  Suite(resolve_settings()).run()


if __name__ == "__main__":
  if len(sys.argv) == 2 and sys.argv[1].startswith("--child="):
    _child_main(json.loads(sys.argv[1][len("--child="):]))
  else:
    app.run(main)

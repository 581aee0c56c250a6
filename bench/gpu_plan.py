"""The GPU suite's plan and skip rules (bench/gpu_suite.py), without flags or
frameworks, so that tests can check them on made-up records.

A record is one process's outcome as gpu_suite writes it: {"key", "phase"
("cold", "warm" or "run"), "status" (FINAL, or "skipped"), "kind", "config",
"dtype", "xla", "channel_multiple", "batch", "img_per_s", ...}. A rule
``rule(row, records, env, options)`` returns why ``row`` is not worth
measuring given the records so far, or None; ``options`` holds the
thresholds (gpu_suite's flags): xla_far_slower, m16_min_gain,
batch_min_gain and the multiples planned.
"""

import dataclasses
from typing import List, Optional

from bench.bench_common import CONFIGS

FINAL = ("ok", "error", "oom", "timeout", "interrupted")

# (dtype, XLA, channel multiple), measured in this order for every config.
# Cheap rows that answer the most first: the trainer's GPU default, then
# bfloat16, then the multiple 8 that tensor cores want, and only then XLA,
# whose cold compile costs minutes per config; multiple 16 last (RULES).
TIERS = (
    ("float32", False, 1),  # the trainer's defaults on a GPU
    ("bfloat16", False, 1),
    ("bfloat16", False, 8),
    ("bfloat16", True, 1),
    ("float32", False, 8),
    ("bfloat16", True, 8),
    ("float32", True, 1),
    ("bfloat16", False, 16),
    ("bfloat16", True, 16),
    ("float32", False, 16),
    ("float32", True, 8),
    ("float32", True, 16),
)

# PyTorch reference modes: name -> (dtype, channels_last, torch.compile).
TORCH_MODES = {
    "eager_fp32": ("float32", False, False),
    "bf16_cl": ("bfloat16", True, False),
    "compile_bf16_cl": ("bfloat16", True, True),
}
# The modes whose time is reserved while TF rows run (--torch_reserve_s).
RESERVED_TORCH_MODES = ("eager_fp32", "bf16_cl")


@dataclasses.dataclass
class Row:
  """One planned measurement (``phases``: one process each)."""
  kind: str  # "tf" or "torch"
  config: str
  dtype: str
  batch: int
  xla: bool = False
  multiple: int = 1
  mode: str = ""  # PyTorch mode
  tier: str = ""
  warm: bool = False  # also a warm-cache process (XLA)
  search_of: str = ""  # batch search: the ImageNet config it enlarges
  search_index: int = 0

  @property
  def key(self) -> str:
    if self.search_of:
      return f"{self.config}/batch_search/{self.search_index}"
    if self.kind == "torch":
      return f"{self.config}/torch/{self.mode}/b{self.batch}"
    return (f"{self.config}/{self.dtype}/{'xla' if self.xla else 'noxla'}"
            f"/m{self.multiple}/b{self.batch}")

  @property
  def phases(self):
    if self.kind == "torch":
      return ("run",)
    return ("cold", "warm") if self.warm else ("cold",)

  def cost_class(self, phase: str) -> str:
    if self.kind == "torch":
      return "torch_compile" if TORCH_MODES[self.mode][2] else "torch"
    if not self.xla:
      return "tf"
    return "tf_xla_warm" if phase == "warm" else "tf_xla"

  def fields(self) -> dict:
    out = {"key": self.key, "kind": self.kind, "config": self.config,
           "dtype": self.dtype, "batch": self.batch, "tier": self.tier}
    if self.kind == "tf":
      out.update(xla=self.xla, channel_multiple=self.multiple)
    else:
      out.update(mode=self.mode)
    if self.search_of:
      out["search_index"] = self.search_index
    return out


def plan(configs, dtypes, xlas, multiples, torch_modes, only="all",
         batch_search=0) -> List[Row]:
  """The rows in order of importance: TIERS over every config (the first
  XLA row of each config and dtype also warm), then the PyTorch modes that
  are not compiled, then the ImageNet batch search (``batch_search`` doubled
  batches each), then the torch.compile modes, whose compilation takes
  minutes on a large network."""
  rows = []
  if only in ("all", "tf"):
    warmed = set()  # (config, dtype) that have their warm run
    for tier, (dtype, xla, multiple) in enumerate(TIERS, 1):
      if dtype not in dtypes or xla not in xlas or multiple not in multiples:
        continue
      for name in configs:
        warm = xla and (name, dtype) not in warmed
        if warm:
          warmed.add((name, dtype))
        rows.append(Row("tf", name, dtype, CONFIGS[name]["batch"], xla,
                        multiple, tier=f"T{tier}", warm=warm))

  def torch_rows(compiled):
    for mode in torch_modes:
      if TORCH_MODES[mode][2] != compiled:
        continue
      for name in configs:
        rows.append(Row("torch", name, TORCH_MODES[mode][0],
                        CONFIGS[name]["batch"], mode=mode, tier="torch"))
  if only in ("all", "torch"):
    torch_rows(False)
  if only in ("all", "tf"):
    for name in configs:
      if CONFIGS[name]["dataset"] != "imagenet":
        continue
      for index in range(1, batch_search + 1):
        rows.append(Row("tf", name, "", CONFIGS[name]["batch"] * 2 ** index,
                        tier="batch", search_of=name, search_index=index))
  if only in ("all", "torch"):
    torch_rows(True)
  return rows


# --- Rules: each returns why a row is not measured, or None. ---------------


def final_record(records, key, phase=None):
  """The last final record of a row (phase: that phase only)."""
  found = None
  for r in records:
    if r.get("key") == key and r.get("status") in FINAL and (
        phase is None or r.get("phase") == phase):
      found = r
  return found


def best_rate(records, key) -> Optional[float]:
  """A row's best measured img/s (cold and warm are two samples)."""
  rates = [r["img_per_s"] for r in records if r.get("key") == key and
           r.get("status") == "ok" and r.get("img_per_s")]
  return max(rates) if rates else None


def tf_key(config, dtype, xla, multiple, batch):
  return Row("tf", config, dtype, batch, xla, multiple).key


def rule_tf_env(row, records, env, options):
  """TF rows need what the env row checked: TF imports, sees the GPU (when
  one is required) and runs a convolution; XLA rows need XLA too."""
  del records, options
  if row.kind != "tf" or env is None:
    return None
  if not env.get("tf_ok"):
    return ("TensorFlow is not usable: "
            f"{env.get('tf_error', 'env check failed')}")
  if env.get("require_gpu") and not env.get("gpus"):
    return "TensorFlow sees no GPU (env row)"
  if not env.get("conv_ok"):
    return f"a convolution failed the env check: {env.get('conv_error')}"
  if row.xla and not env.get("xla_ok"):
    return f"XLA failed the env check: {env.get('xla_error')}"
  return None


def rule_compile_timed_out(row, records, env, options):
  """A time box that ended before the first step: compilation/autotuning
  of that config on that path does not fit one, so its other rows
  would not either."""
  del env, options
  if row.kind != "tf":
    return None
  for r in records:
    if (r.get("kind") == "tf" and r.get("status") == "timeout" and
        r.get("config") == row.config and r.get("xla") == row.xla and
        r.get("phase") == "cold" and r.get("first_step_s") is None):
      return (f"{r['key']} did not reach its first step within its "
              f"{r.get('timebox_s')} s time box")
  return None


def rule_xla_side_far_slower(row, records, env, options):
  """Where one XLA side is --xla_far_slower times slower than the other at
  some multiple, its remaining multiples are not worth the time (the row's
  own multiple is no evidence against it: its warm process still runs)."""
  del env
  if row.kind != "tf" or row.search_of:
    return None
  for multiple in sorted(options["multiples"] - {row.multiple}):
    mine = best_rate(records, tf_key(row.config, row.dtype, row.xla, multiple,
                                  row.batch))
    other = best_rate(records, tf_key(row.config, row.dtype, not row.xla,
                                   multiple, row.batch))
    if mine and other and mine * options["xla_far_slower"] < other:
      side = "on" if row.xla else "off"
      return (f"XLA {side} is {other / mine:.2f}x slower than XLA "
              f"{'off' if row.xla else 'on'} at multiple {multiple} ({mine} "
              f"vs {other} img/s; threshold {options['xla_far_slower']}x): "
              f"the other XLA-{side} multiples are not measured")
  return None


def rule_m16_needs_m8_gain(row, records, env, options):
  """Multiple 16 pads more than 8; it is measured only where 8 paid (where
  1 and 8 are both planned; else 16 has nothing to be judged by)."""
  del env
  if row.kind != "tf" or row.multiple != 16 or row.search_of or not (
      {1, 8} <= set(options["multiples"])):
    return None
  args = (row.config, row.dtype, row.xla)
  m1 = best_rate(records, tf_key(*args, 1, row.batch))
  m8 = best_rate(records, tf_key(*args, 8, row.batch))
  if m1 is None or m8 is None:
    missing = "1" if m1 is None else "8"
    return f"multiple {missing} has no measured rate at this setting"
  gain = m8 / m1 - 1
  if gain < options["m16_min_gain"]:
    return (f"multiple 8 gained {100 * gain:+.1f}% over 1 ({m8} vs {m1} "
            f"img/s; needs {100 * options['m16_min_gain']:+.1f}%)")
  return None


RULES = (("tf_env", rule_tf_env),
         ("compile_timed_out", rule_compile_timed_out),
         ("xla_side_far_slower", rule_xla_side_far_slower),
         ("m16_needs_m8_gain", rule_m16_needs_m8_gain))


def resolve_search(row, records, options):
  """A batch-search row's setting: (dtype, xla, multiple) of the fastest
  measured row of its config at the config's batch, at 2**index times that
  batch; or (None, reason) when the search stops before it."""
  base = CONFIGS[row.search_of]["batch"]
  best, top = None, 0.0
  for r in records:
    if (r.get("kind") == "tf" and r.get("config") == row.search_of and
        r.get("batch") == base and not r.get("search_index") and
        r.get("status") == "ok"):
      rate = best_rate(records, r["key"])
      if rate > top:
        best, top = r, rate
  if best is None:
    return None, f"no measured {row.search_of} row at batch {base}"
  setting = (best["dtype"], best["xla"], best["channel_multiple"])
  previous_rate = top
  for index in range(1, row.search_index):
    r = final_record(records, f"{row.search_of}/batch_search/{index}", "cold")
    batch = base * 2 ** index
    if r is None:
      return None, f"batch {batch} was not measured"
    if r["status"] != "ok":
      return None, f"batch {batch} ended {r['status']}"
    gain = r["img_per_s"] / previous_rate - 1
    if gain < options["batch_min_gain"]:
      return None, (f"batch {batch} gained {100 * gain:+.1f}% over half of "
                    f"it (needs {100 * options['batch_min_gain']:+.1f}%)")
    previous_rate = r["img_per_s"]
  return setting, f"the fastest {row.search_of} setting: {best['key']}"

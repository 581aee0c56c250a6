"""Persistent XLA compilation and GPU autotune caches.

Why: with --jit_compile the first train step compiles the whole
forward/backward, and on a GPU XLA also autotunes every distinct convolution
(minutes for PyramidNet-110/272). Without a cache that cost is paid again on
every start, resume and evaluation. Two on-disk caches remove it:

* TensorFlow's persistent compilation cache (TF_XLA_FLAGS
  ``--tf_xla_persistent_cache_directory``): one ``.pb`` file per compiled
  cluster, keyed by the function signature and the HLO fingerprint, holding
  the serialized executable. A hit skips XLA's backend compilation (and so
  autotuning) entirely; the TF -> HLO lowering still runs.
* XLA's GPU autotune cache (XLA_FLAGS ``--xla_gpu_per_fusion_autotune_cache_dir``):
  one file per autotuned instruction, so a changed program still reuses the
  tuning of the fusions/convolutions it shares with an earlier one. GPU only.

When the flags are read (checked on TF 2.21): TF_XLA_FLAGS is parsed once,
when TensorFlow first enumerates its devices (``list_physical_devices``, the
first op or strategy), *not* at ``import tensorflow``; XLA_FLAGS once, at the
first XLA compilation. Catch: importing TensorFlow registers an absl
``app.call_after_init`` callback (tensorflow/python/distribute/
combinations.py) that lists the GPUs, so in an absl program TF_XLA_FLAGS is
already fixed when ``main`` starts. Hence
``pyramidnet_tf.cli.compile_cache_flags.parse_flags_and_configure``: an
``app.run(main, flags_parser=...)`` hook that runs right after flag parsing,
before absl's after-init callbacks. ``configure`` warns when called too late.

What a hit needs: the cache key holds TF's function name
(``__inference__forward_backward_<uid>``), and the uid counts what the
process traced before. A fresh start traces functions a resume does not (the
first-batch image summary), so the trainer calls ``align_function_names``
right before the first trace of its step: fresh starts and resumes then give
the step the same name and share one cache entry.

Flags the user already put in TF_XLA_FLAGS / XLA_FLAGS win over ours (and a
log line says so): a deliberate ``--tf_xla_persistent_cache_directory`` on a
fast local disk, say, must not be silently replaced.
"""

import os
import shlex
from typing import Dict, Optional, Tuple

from absl import logging

TF_XLA_ENV = "TF_XLA_FLAGS"
XLA_ENV = "XLA_FLAGS"
DEFAULT_SUBDIR = "xla_cache"
# Subfolders of the cache directory.
TF_CACHE_SUBDIR = "tf_compile"
AUTOTUNE_SUBDIR = "gpu_autotune"
# Prefix of TF's cache files ("xla_compile_cache" is TF's default too).
TF_CACHE_PREFIX = "xla_compile_cache"
_DISABLED = ("", "none")


def resolve_cache_dir(flag_value: Optional[str], model_dir: Optional[str],
                      jit_compile: bool) -> Optional[str]:
  """The cache directory --compile_cache_dir asks for, or None for none.

  None (the flag's default) means <model_dir>/xla_cache when XLA is on: the
  cache then follows the run it belongs to (resumes and evaluations of that
  model directory hit it). An explicit directory is used even without
  --jit_compile (another process may compile into it).
  """
  if flag_value is None:
    if jit_compile and model_dir:
      return os.path.join(model_dir, DEFAULT_SUBDIR)
    return None
  if flag_value.strip().lower() in _DISABLED:
    return None
  return flag_value


def _parse(value: str) -> Dict[str, Optional[str]]:
  """``--a=1 --b`` -> {"a": "1", "b": None}, in order."""
  parsed = {}
  for token in shlex.split(value or ""):
    name, sep, flag_value = token.lstrip("-").partition("=")
    parsed[name] = flag_value if sep else None
  return parsed


def merge_flags(existing: str, wanted: Dict[str, str]) -> Tuple[str, Dict]:
  """Appends ``wanted`` flags to an env-var flag string; the user's win.

  Returns (new value, {name: user value} for each wanted flag the user had
  already set to something else). Idempotent: merging the same flags again
  changes nothing.
  """
  present = _parse(existing)
  kept = {}
  added = []
  for name, value in wanted.items():
    if name in present:
      if present[name] != value:
        kept[name] = present[name]
      continue
    added.append(f"--{name}={value}")
  merged = " ".join(part for part in [(existing or "").strip()] + added
                    if part)
  return merged, kept


def _tensorflow_devices_created() -> bool:
  """True once TF listed its devices (TF_XLA_FLAGS is then parsed)."""
  try:
    from tensorflow.python.eager import context  # pylint: disable=g-import-not-at-top
    ctx = context.context()
    return (ctx._physical_devices is not None or  # pylint: disable=protected-access
            ctx._context_handle is not None)  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return False


def configure(cache_dir: Optional[str], *, read_only: bool = False,
              environ=None) -> Optional[dict]:
  """Points TF's compilation cache and XLA's autotune cache into cache_dir.

  Sets TF_XLA_FLAGS / XLA_FLAGS in ``environ`` (default ``os.environ``),
  keeping every flag the user already set there. Must run before the first
  TensorFlow op of the process (see the module docstring).

  Args:
    cache_dir: the directory (created); None, "" or "none" does nothing.
    read_only: load entries but never write new ones (e.g. many evaluation
      jobs sharing a cache that one training run fills).
    environ: the mapping to edit (tests pass a dict).

  Returns:
    None when disabled, else {"cache_dir", "tf_cache_dir", "autotune_dir",
    "TF_XLA_FLAGS", "XLA_FLAGS", "user_overrides"}.
  """
  environ = os.environ if environ is None else environ
  if cache_dir is None or cache_dir.strip().lower() in _DISABLED:
    return None
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
  tf_dir = os.path.join(cache_dir, TF_CACHE_SUBDIR)
  autotune_dir = os.path.join(cache_dir, AUTOTUNE_SUBDIR)
  if not read_only:
    os.makedirs(tf_dir, exist_ok=True)
    os.makedirs(autotune_dir, exist_ok=True)
  tf_wanted = {"tf_xla_persistent_cache_directory": tf_dir,
               "tf_xla_persistent_cache_prefix": TF_CACHE_PREFIX}
  if read_only:
    tf_wanted["tf_xla_persistent_cache_read_only"] = "true"
  xla_wanted = {"xla_gpu_per_fusion_autotune_cache_dir": autotune_dir}
  overrides = {}
  for env, wanted in ((TF_XLA_ENV, tf_wanted), (XLA_ENV, xla_wanted)):
    merged, kept = merge_flags(environ.get(env, ""), wanted)
    environ[env] = merged
    for name, value in kept.items():
      overrides[name] = value
      logging.warning("compile cache: %s already sets --%s=%s; the user "
                      "value wins over --compile_cache_dir's %s", env, name,
                      value, wanted[name])
  if environ is os.environ and _tensorflow_devices_created():
    logging.warning(
        "compile cache: TensorFlow's devices already exist, so TF_XLA_FLAGS "
        "was already read and the compilation cache in %s may not be used; "
        "call compile_cache.configure before the first TensorFlow op",
        tf_dir)
  logging.info("compile cache: XLA executables in %s, GPU autotune results "
               "in %s%s", tf_dir, autotune_dir,
               " (read-only)" if read_only else "")
  return {"cache_dir": cache_dir, "tf_cache_dir": tf_dir,
          "autotune_dir": autotune_dir, "TF_XLA_FLAGS": environ[TF_XLA_ENV],
          "XLA_FLAGS": environ[XLA_ENV], "user_overrides": overrides}


def _dir_stats(directory: str, suffix: str = "") -> Tuple[int, int, dict]:
  entries, size, mtimes = 0, 0, {}
  if not os.path.isdir(directory):
    return 0, 0, {}
  for root, _, files in os.walk(directory):
    for name in files:
      if suffix and not name.endswith(suffix):
        continue
      path = os.path.join(root, name)
      try:
        info = os.stat(path)
      except OSError:  # removed meanwhile
        continue
      entries += 1
      size += info.st_size
      mtimes[os.path.relpath(path, directory)] = info.st_mtime_ns
  return entries, size, mtimes


def stats(cache_dir: Optional[str]) -> dict:
  """Entries and bytes in each cache (for benchmarks and logs).

  ``files`` maps each TF cache file to its mtime (ns): comparing two
  snapshots tells new entries (compiled) from untouched ones (loaded, since
  TF rewrites an entry only after compiling it).
  """
  if not cache_dir:
    return {"tf_entries": 0, "tf_bytes": 0, "autotune_entries": 0,
            "autotune_bytes": 0, "files": {}}
  cache_dir = os.path.abspath(os.path.expanduser(cache_dir))
  tf_entries, tf_bytes, files = _dir_stats(
      os.path.join(cache_dir, TF_CACHE_SUBDIR), ".pb")
  at_entries, at_bytes, _ = _dir_stats(os.path.join(cache_dir,
                                                    AUTOTUNE_SUBDIR))
  return {"tf_entries": tf_entries, "tf_bytes": tf_bytes,
          "autotune_entries": at_entries, "autotune_bytes": at_bytes,
          "files": files}


def new_entries(before: dict, after: dict) -> int:
  """TF cache entries written between two ``stats`` snapshots."""
  old = before.get("files", {})
  return sum(1 for name, mtime in after.get("files", {}).items()
             if old.get(name) != mtime)


# Function names advance to a multiple of this before the first trace.
_NAME_BLOCK = 1_000_000


def align_function_names(block: int = _NAME_BLOCK) -> int:
  """Makes the names of functions traced from here on start-independent.

  Why: a persistent-cache key includes the traced function's name, which
  ends in TF's process-wide uid counter (``__inference__forward_backward_N``).
  A fresh run and a resumed one consume a different number of uids before the
  train step is traced (restoring a checkpoint, first-batch summaries), so
  without this the first resume of every run would miss the cache it just
  filled. Advancing the counter to the next multiple of ``block`` right
  before the first trace gives both the same names, as long as fewer than
  ``block`` uids were used before (set-up uses a few thousand). Returns the
  counter value reached.
  """
  # TF 2.21 names traced functions with ops.uid(), a private counter; no
  # public API sets it. tests/runtime/test_compile_cache.py checks both the
  # naming (test_aligned_function_names_ignore_earlier_traces) and the cache
  # hit it buys a resume, so a TF that names functions otherwise fails there.
  from tensorflow.python.framework import ops  # pylint: disable=g-import-not-at-top
  uid = ops.uid()
  while uid % block:
    uid = ops.uid()
  return uid

"""compile_cache: flag merging, and a real cache hit across two processes."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests import REPO_ROOT
from pyramidnet_tf.runtime import compile_cache

_ROOT = REPO_ROOT


def _flags(value):
  return compile_cache._parse(value)  # pylint: disable=protected-access


def test_resolve_cache_dir():
  assert compile_cache.resolve_cache_dir(None, "/m", True) == os.path.join(
      "/m", "xla_cache")
  assert compile_cache.resolve_cache_dir(None, "/m", False) is None
  assert compile_cache.resolve_cache_dir(None, None, True) is None
  for off in ("", "none", "None", " NONE "):
    assert compile_cache.resolve_cache_dir(off, "/m", True) is None
  assert compile_cache.resolve_cache_dir("/c", "/m", False) == "/c"


def test_configure_sets_both_caches(tmp_path):
  env = {}
  result = compile_cache.configure(str(tmp_path / "c"), environ=env)
  tf_flags, xla_flags = _flags(env["TF_XLA_FLAGS"]), _flags(env["XLA_FLAGS"])
  assert tf_flags["tf_xla_persistent_cache_directory"] == str(
      tmp_path / "c" / "tf_compile")
  assert xla_flags["xla_gpu_per_fusion_autotune_cache_dir"] == str(
      tmp_path / "c" / "gpu_autotune")
  assert "tf_xla_persistent_cache_read_only" not in tf_flags
  assert os.path.isdir(result["tf_cache_dir"])
  assert os.path.isdir(result["autotune_dir"])
  assert result["user_overrides"] == {}


def test_user_values_win_and_other_flags_survive(tmp_path):
  env = {"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/fast/disk "
                         "--tf_xla_min_cluster_size=2",
         "XLA_FLAGS": "--xla_dump_to=/tmp/dump"}
  result = compile_cache.configure(str(tmp_path), environ=env)
  tf_flags, xla_flags = _flags(env["TF_XLA_FLAGS"]), _flags(env["XLA_FLAGS"])
  assert tf_flags["tf_xla_persistent_cache_directory"] == "/fast/disk"
  assert env["TF_XLA_FLAGS"].count("tf_xla_persistent_cache_directory") == 1
  assert tf_flags["tf_xla_min_cluster_size"] == "2"
  assert xla_flags["xla_dump_to"] == "/tmp/dump"
  assert xla_flags["xla_gpu_per_fusion_autotune_cache_dir"] == str(
      tmp_path / "gpu_autotune")
  assert result["user_overrides"] == {
      "tf_xla_persistent_cache_directory": "/fast/disk"}


def test_idempotent(tmp_path):
  env = {"XLA_FLAGS": "--xla_dump_to=/d"}
  compile_cache.configure(str(tmp_path), environ=env)
  once = dict(env)
  second = compile_cache.configure(str(tmp_path), environ=env)
  assert env == once
  assert second["user_overrides"] == {}  # our own values are not "user's"


def test_read_only(tmp_path):
  env = {}
  compile_cache.configure(str(tmp_path / "shared"), read_only=True,
                          environ=env)
  assert _flags(env["TF_XLA_FLAGS"])[
      "tf_xla_persistent_cache_read_only"] == "true"
  assert not (tmp_path / "shared").exists()  # a reader creates nothing


@pytest.mark.parametrize("value", [None, "", "none"])
def test_disabled_changes_nothing(value):
  env = {"TF_XLA_FLAGS": "--tf_xla_min_cluster_size=2"}
  assert compile_cache.configure(value, environ=env) is None
  assert env == {"TF_XLA_FLAGS": "--tf_xla_min_cluster_size=2"}


def test_stats_and_new_entries(tmp_path):
  tf_dir = tmp_path / "tf_compile"
  tf_dir.mkdir()
  (tf_dir / "a.pb").write_bytes(b"x" * 10)
  (tf_dir / "ignored.tmp").write_bytes(b"y")
  before = compile_cache.stats(str(tmp_path))
  assert (before["tf_entries"], before["tf_bytes"]) == (1, 10)
  (tf_dir / "b.pb").write_bytes(b"z" * 5)
  after = compile_cache.stats(str(tmp_path))
  assert (after["tf_entries"], after["tf_bytes"]) == (2, 15)
  assert compile_cache.new_entries(before, after) == 1
  assert compile_cache.stats(None)["tf_entries"] == 0


# An absl program like the trainer: --compile_cache_dir takes effect through
# the flags parser although TensorFlow reads TF_XLA_FLAGS before main.
_PROGRAM = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, {root!r})
    from absl import app
    from pyramidnet_tf.cli import compile_cache_flags
    import tensorflow as tf

    def main(argv):
      w = tf.Variable(tf.reshape(tf.range(48, dtype=tf.float32), [6, 8]) / 7)

      @tf.function(jit_compile=True)
      def f(x):
        with tf.GradientTape() as tape:
          y = tf.reduce_sum(tf.nn.relu(tf.matmul(x, w)) ** 2)
        return y, tape.gradient(y, w)

      y, g = f(tf.ones([5, 6]))
      print(json.dumps({{"y": float(y), "g": g.numpy().ravel().tolist()}}))

    app.run(main, flags_parser=compile_cache_flags.parse_flags_and_configure)
""")


def _run_program(tmp_path, cache_dir):
  script = tmp_path / "program.py"
  script.write_text(_PROGRAM.format(root=_ROOT))
  env = dict(os.environ, TF_CPP_VMODULE="device_executable_persistor=1")
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env.pop("TF_XLA_FLAGS", None)
  proc = subprocess.run(
      [sys.executable, str(script), f"--compile_cache_dir={cache_dir}"],
      env=env, capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_second_process_loads_the_cached_executable(tmp_path):
  cache_dir = str(tmp_path / "cache")
  out1, log1 = _run_program(tmp_path, cache_dir)
  first = compile_cache.stats(cache_dir)
  assert first["tf_entries"] >= 1 and first["tf_bytes"] > 0
  assert "Serializing and saving cache entry" in log1
  assert "Loading cached entry" not in log1

  out2, log2 = _run_program(tmp_path, cache_dir)
  second = compile_cache.stats(cache_dir)
  assert "Loading cached entry" in log2
  assert "Serializing and saving cache entry" not in log2
  assert compile_cache.new_entries(first, second) == 0
  assert second["files"] == first["files"]  # nothing added or rewritten
  assert out2 == out1


def test_trainer_resume_hits_the_cache_its_fresh_start_filled(tmp_path):
  """Fresh start, then resume, with --jit_compile: the resume compiles
  nothing new (function names aligned), and the trainer's default cache dir
  is <model_dir>/xla_cache."""
  from tests import train_fixtures as fx  # pylint: disable=g-import-not-at-top
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=4,
                              train_per_class=8, eval_per_class=2, size=16,
                              shards=1)
  model_dir = str(tmp_path / "model")
  cache = os.path.join(model_dir, "xla_cache")

  def train(steps):
    out = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
        f"--data_dir={data_dir}", f"--model_dir={model_dir}",
        "--batch_size=8", f"--train_steps={steps}", "--steps_per_loop=2",
        "--jit_compile", "--noeval_at_end", "--eval_every_epochs=0"],
                     TF_CPP_MIN_LOG_LEVEL="0",
                     TF_CPP_VMODULE="device_executable_persistor=1")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stderr

  first = train(2)
  after_first = compile_cache.stats(cache)
  assert after_first["tf_entries"] >= 1, after_first
  assert "Loading cached entry" not in first
  assert "Serializing and saving cache entry" in first
  second = train(4)
  assert "resumed from" in second
  assert "Loading cached entry" in second
  assert "Serializing and saving cache entry" not in second
  after_second = compile_cache.stats(cache)
  assert after_second["tf_entries"] == after_first["tf_entries"]
  assert compile_cache.new_entries(after_first, after_second) == 0


def test_aligned_function_names_ignore_earlier_traces():
  """Traced names carry TF's uid counter; aligning it makes the next name
  independent of how many functions were traced before."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def traced_uid(extra_traces):
    for i in range(extra_traces):
      tf.function(lambda x, i=i: x + i).get_concrete_function(
          tf.TensorSpec([], tf.float32))
    reached = compile_cache.align_function_names(block=10_000)
    concrete = tf.function(lambda x: x * 2).get_concrete_function(
        tf.TensorSpec([], tf.float32))
    name = concrete.name.decode() if isinstance(concrete.name, bytes) else (
        concrete.name)
    return reached, int(name.rsplit("_", 1)[1])

  reached_a, uid_a = traced_uid(1)
  reached_b, uid_b = traced_uid(7)
  assert reached_a % 10_000 == 0 and reached_b % 10_000 == 0
  # The same offset after the aligned value, whatever was traced before.
  assert uid_a - reached_a == uid_b - reached_b
  assert 0 < uid_a - reached_a < 100

"""Fault injection: checkpoints, model directories and the trainer's flags.

Every run is the trainer CLI on a tiny net (depth 8, alpha 4, 16x16 CIFAR
stem) with --deterministic, so a resumed run must end with exactly the
weights of an uninterrupted one: ``lost`` counts the checkpoint tensors that
differ from the uninterrupted run's (or are missing). Independent runs go in
parallel to keep the file's runtime down.

Faults come from outside (deleting, truncating or corrupting files, SIGKILL,
a second trainer, a small tmpfs) or from the trainer's test hook
$PYRAMIDNET_TF_TEST_FAULTS (NaN/Inf at a chosen step, SIGKILL a chosen time
into a save), see fault_injection.InjectedFaults.
"""

import concurrent.futures
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pyramidnet_tf.model_dir import store as model_io
from tests import train_fixtures as fx

TRAIN = "pyramidnet_tf.train"
HOOK = "PYRAMIDNET_TF_TEST_FAULTS"   # fault_injection.FAULTS_ENV
FINAL = 10   # the reference run's length; base runs stop at 8


def _args(data_dir, model_dir, steps, *extra):
  return fx.TINY_MODEL + [
      "--nobottleneck", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=8", f"--train_steps={steps}",
      "--checkpoint_every_steps=2", "--keep_checkpoints=3",
      "--steps_per_loop=2", "--log_every_steps=2", "--eval_every_epochs=0",
      "--noeval_at_end", "--deterministic", "--seed=3"] + list(extra)


def _parallel(calls):
  """Runs ``fx.run_cli(*args, **kwargs)`` for each (args, kwargs) at once."""
  with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
    futures = [pool.submit(fx.run_cli, *a, **k) for a, k in calls]
    return [f.result() for f in futures]


def _error_line(proc, prog="pyramidnet_tf.train") -> str:
  """The one-line error a user-fixable failure must end with."""
  assert proc.returncode not in (0, None), proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines and lines[-1].startswith(f"{prog}: error: "), (
      proc.stderr[-3000:])
  return lines[-1]


def _files(model_dir):
  """The directory's entries but the trainer's lock file."""
  return sorted(n for n in os.listdir(model_dir) if n != ".lock")


def _steps(model_dir):
  return sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(
      model_dir) if n.startswith("ckpt-") and n.endswith(".index"))


def _lost(reference_dir, model_dir, step=FINAL) -> int:
  """Tensors of ckpt-<step> that differ from (or are missing against) the
  uninterrupted run's."""
  path = os.path.join(model_dir, f"ckpt-{step}")
  if not os.path.exists(path + ".index"):
    return len(fx.checkpoint_values(os.path.join(reference_dir,
                                                 f"ckpt-{step}")))
  want = fx.checkpoint_values(os.path.join(reference_dir, f"ckpt-{step}"))
  got = fx.checkpoint_values(path)
  return sum(name not in got or not np.array_equal(value, got[name])
             for name, value in want.items())


def _all_finite(model_dir):
  for step in _steps(model_dir):
    for name, value in fx.checkpoint_values(
        os.path.join(model_dir, f"ckpt-{step}")).items():
      if np.issubdtype(np.asarray(value).dtype, np.floating):
        assert np.isfinite(value).all(), (model_dir, step, name)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          num_classes=4, train_per_class=8, eval_per_class=2,
                          size=16, shards=1)


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """base: 0 -> 8 (ckpt-4, 6, 8 kept); reference: uninterrupted 0 -> 10."""
  root = tmp_path_factory.mktemp("runs")
  base, reference = str(root / "base"), str(root / "reference")
  for proc in _parallel([((TRAIN, _args(data_dir, base, 8)), {}),
                         ((TRAIN, _args(data_dir, reference, FINAL)), {})]):
    fx.clean_exit(proc)
  assert _steps(base) == [4, 6, 8] and _steps(reference) == [6, 8, 10]
  return {"base": base, "reference": reference}


def _copy_base(runs, tmp_path, name):
  target = str(tmp_path / name)
  shutil.copytree(runs["base"], target)
  return target


def test_sigkill_in_training_and_in_saves_resumes_exactly(
    faults, runs, data_dir, tmp_path):
  """Three SIGKILLs at seeded random moments (two inside a save, one in the
  training loop), each followed by a plain rerun; the last rerun ends with
  the uninterrupted run's weights, bit for bit."""
  rng = np.random.default_rng(20240607)
  model_dir = str(tmp_path / "m")
  args = _args(data_dir, model_dir, FINAL)
  # A tiny net's save takes about 60 ms on one core: delays in [0, 80] ms
  # land in the shard write, the merge or the state-file update.
  delay = float(rng.uniform(0.0, 0.08))
  with faults.inject(f"SIGKILL {delay * 1000:.0f} ms into the save of step 4"
                     " (fresh run)") as fault:
    proc = fx.run_cli(TRAIN, args, **{HOOK: f"kill_in_save@4:{delay}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert max(_steps(model_dir), default=0) <= 4
    fault.lost = 0
  with faults.inject("SIGKILL at a random moment of the training loop "
                     "(resumed run)") as fault:
    log_path = tmp_path / "killed.log"
    with open(log_path, "w") as log:
      proc = subprocess.Popen([sys.executable, "-m", TRAIN] + args,
                              cwd=fx.REPO, env=fx.cli_env(), stdout=log,
                              stderr=log)
      try:
        fx.wait_for_text(log_path, "step 6/", proc)
        time.sleep(float(rng.uniform(0.0, 0.1)))
        proc.kill()
      finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log_path.read_text()[-3000:]
    assert "resumed from" in log_path.read_text()
    fault.lost = 0
  delay = float(rng.uniform(0.0, 0.08))
  with faults.inject(f"SIGKILL {delay * 1000:.0f} ms into the final save "
                     "(resumed run)") as fault:
    proc = fx.run_cli(TRAIN, args, **{HOOK: f"kill_in_save@{FINAL}:{delay}"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    fault.lost = 0
  with faults.inject("resume after three SIGKILLs equals the uninterrupted "
                     "run") as fault:
    proc = fx.clean_exit(fx.run_cli(TRAIN, args))
    assert fx.train_result(proc.stderr)["step"] == FINAL
    assert not [n for n in _files(model_dir) if n.endswith("_temp")
                or ".tmp" in n]
    fault.lost = _lost(runs["reference"], model_dir)
    assert fault.lost == 0


def test_nonfinite_values_stop_training_and_are_never_checkpointed(
    faults, data_dir, tmp_path):
  """Inf in BN moving variances (injected at step 5), in the EMA's BN
  statistics (step 3), and a learning rate that blows the BN statistics up
  while the loss stays finite: each stops with one line naming the step and
  the last good checkpoint, which is finite, and no checkpoint after it."""
  bn, ema = str(tmp_path / "bn"), str(tmp_path / "ema")
  lr = str(tmp_path / "lr")
  procs = _parallel([
      ((TRAIN, _args(data_dir, bn, FINAL, "--steps_per_loop=4")),
       {HOOK: "nonfinite@5:moving_variance"}),
      ((TRAIN, _args(data_dir, ema, FINAL, "--ema_decay=0.9")),
       {HOOK: "nonfinite@3:moving_variance_ema"}),
      ((TRAIN, _args(data_dir, lr, 20, "--lr=30", "--checkpoint_every_steps=5",
                     "--steps_per_loop=5", "--log_every_steps=5")), {}),
  ])
  cases = [("Inf BN moving_variance at step 5", bn, procs[0], 5, 4),
           ("Inf EMA BN moving_variance at step 3", ema, procs[1], 3, 2)]
  for name, model_dir, proc, step, good in cases:
    with faults.inject(name) as fault:
      line = _error_line(proc)
      assert f"NaN/Inf at global step {step} " in line, line
      assert "moving_variance" in line, line
      assert f"last good checkpoint is {model_dir}/ckpt-{good} " in line, line
      assert max(_steps(model_dir)) == good
      _all_finite(model_dir)
      fault.lost = 0
  with faults.inject("--lr=30: BN statistics overflow to Inf") as fault:
    line = _error_line(procs[2])
    assert "NaN/Inf at global step" in line, line
    step = int(line.split("NaN/Inf at global step ")[1].split()[0])
    assert all(s < step for s in _steps(lr))
    _all_finite(lr)
    if _steps(lr):
      assert f"last good checkpoint is {lr}/ckpt-{max(_steps(lr))} " in line
    fault.lost = 0


def test_a_second_trainer_is_refused_and_a_killed_ones_lock_is_free(
    faults, runs, data_dir, tmp_path):
  model_dir = _copy_base(runs, tmp_path, "m")
  log_path = tmp_path / "first.log"
  with open(log_path, "w") as log:
    first = subprocess.Popen(
        [sys.executable, "-m", TRAIN] + _args(
            data_dir, model_dir, 100000, "--checkpoint_every_steps=100000",
            "--steps_per_loop=1", "--log_every_steps=1"),
        cwd=fx.REPO, env=fx.cli_env(), stdout=log, stderr=log)
    try:
      fx.wait_for_text(log_path, "step 9/", first)
      with faults.inject("second trainer on a model dir in use") as fault:
        before = _files(model_dir)
        second = fx.run_cli(TRAIN, _args(data_dir, model_dir, 12))
        line = _error_line(second)
        assert f"--model_dir={model_dir} is in use" in line, line
        assert f"pid {first.pid} on host " in line, line
        assert _files(model_dir) == before
        assert first.poll() is None
        fault.lost = 0
      with faults.inject("SIGKILL of the lock holder, then a rerun") as fault:
        first.kill()
        first.wait()
        proc = fx.clean_exit(fx.run_cli(TRAIN, _args(data_dir, model_dir, FINAL)))
        assert "at step 8" in proc.stderr
        fault.lost = _lost(runs["reference"], model_dir)
        assert fault.lost == 0
    finally:
      if first.poll() is None:
        first.kill()
        first.wait()


def _truncate(path):
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _flip_bytes(path):
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    chunk = bytearray(f.read(16))
    f.seek(os.path.getsize(path) // 2)
    f.write(bytes(b ^ 0xFF for b in chunk))


def _leave_save_leftovers(model_dir):
  os.makedirs(os.path.join(model_dir, "ckpt-12_temp"))
  with open(os.path.join(model_dir, "ckpt-12_temp",
                         "part-00000-of-00001.data-00000-of-00001"), "w") as f:
    f.write("partial")
  open(os.path.join(model_dir, "checkpoint.tmp" + "0" * 32), "w").close()
  open(os.path.join(model_dir, "model_config.json.tmp"), "w").close()
  os.makedirs(os.path.join(model_dir, "notes_temp"))   # not ours: kept


DATA = "ckpt-8.data-00000-of-00001"
DAMAGES = {
    # name: (damage, checkpoint resumed from, text of the log's reason)
    "latest checkpoint deleted": (
        lambda d: [os.remove(os.path.join(d, n)) for n in os.listdir(d)
                   if n.startswith("ckpt-8.")], 6, "names ckpt-8, which is "
        "gone"),
    "state file deleted": (
        lambda d: os.remove(os.path.join(d, "checkpoint")), 8, "is missing"),
    "state file empty": (
        lambda d: open(os.path.join(d, "checkpoint"), "w").close(), 8,
        "is empty or unreadable"),
    "latest data file truncated": (
        lambda d: _truncate(os.path.join(d, DATA)), 6, "cannot be read"),
    "latest data file corrupted (checksum)": (
        lambda d: _flip_bytes(os.path.join(d, DATA)), 6, "Checksum"),
    "save leftovers (temp dir, state temp) and state file deleted": (
        lambda d: (_leave_save_leftovers(d),
                   os.remove(os.path.join(d, "checkpoint"))), 8,
        "is missing"),
}


def test_damaged_checkpoints_resume_from_the_newest_intact_one(
    faults, runs, data_dir, tmp_path):
  """Each damage, then a rerun to step 10: it names the checkpoint it
  resumes from and why newer ones were skipped, deletes none at or after
  it, and ends with the uninterrupted run's weights."""
  dirs = {}
  for i, (name, (damage, _, _)) in enumerate(DAMAGES.items()):
    dirs[name] = _copy_base(runs, tmp_path, f"d{i}")
    damage(dirs[name])
  procs = _parallel([((TRAIN, _args(data_dir, d, FINAL)), {})
                     for d in dirs.values()])
  for (name, (_, resumed, reason)), proc in zip(DAMAGES.items(), procs):
    model_dir = dirs[name]
    with faults.inject(name) as fault:
      fx.clean_exit(proc)
      assert f"resumed from {model_dir}/ckpt-{resumed} at step {resumed}" in (
          proc.stderr), proc.stderr[-3000:]
      lines = [l for l in proc.stderr.splitlines()
               if f"resuming from {model_dir}/ckpt-{resumed}" in l]
      assert lines and reason in lines[0], (reason, lines)
      # Kept: the one resumed from and everything after it, up to --keep=3.
      assert _steps(model_dir) == [6, 8, 10], _files(model_dir)
      names = _files(model_dir)
      assert "ckpt-12_temp" not in names and "model_config.json.tmp" not in (
          names) and not [n for n in names if n.startswith("checkpoint.tmp")]
      if "leftovers" in name:
        assert "notes_temp" in names
      fault.lost = _lost(runs["reference"], model_dir)
      assert fault.lost == 0


def test_a_dir_that_lost_every_checkpoint_is_refused(
    faults, runs, data_dir, tmp_path):
  gone = _copy_base(runs, tmp_path, "gone")
  for name in os.listdir(gone):
    if name.startswith("ckpt-"):
      os.remove(os.path.join(gone, name))
  broken = _copy_base(runs, tmp_path, "broken")
  for step in (4, 6, 8):
    _truncate(os.path.join(broken, f"ckpt-{step}.index"))
  before = {d: _files(d) for d in (gone, broken)}
  procs = _parallel([((TRAIN, _args(data_dir, d, FINAL)), {})
                     for d in (gone, broken)])
  for name, model_dir, proc in (("every ckpt-N file deleted", gone, procs[0]),
                                ("every index truncated", broken, procs[1])):
    with faults.inject(name) as fault:
      line = _error_line(proc)
      assert f"--model_dir={model_dir} held checkpoints but has no intact " in (
          line), line
      assert "refusing to restart it from step 0" in line
      assert "delete the directory or pass a new --model_dir" in line
      assert _files(model_dir) == before[model_dir]
      fault.lost = 0


def test_a_dir_without_model_config_checks_the_checkpoint_shapes(
    faults, runs, data_dir, tmp_path):
  other, same = (_copy_base(runs, tmp_path, n) for n in ("other", "same"))
  for d in (other, same):
    os.remove(os.path.join(d, "model_config.json"))
  args = _args(data_dir, other, FINAL)
  args[args.index("--alpha=4")] = "--alpha=6"
  procs = _parallel([((TRAIN, args), {}),
                     ((TRAIN, _args(data_dir, same, FINAL)), {})])
  with faults.inject("model_config.json deleted, other model flags") as fault:
    line = _error_line(procs[0])
    assert f"--model_dir={other}: checkpoint {other}/ckpt-8 does not fit" in (
        line), line
    assert "saved, " in line and "from the flags" in line, line
    assert "no model_config.json" in line, line
    assert _steps(other) == [4, 6, 8]
    fault.lost = 0
  with faults.inject("model_config.json deleted, same flags") as fault:
    fx.clean_exit(procs[1])
    assert os.path.exists(os.path.join(same, "model_config.json"))
    fault.lost = _lost(runs["reference"], same)
    assert fault.lost == 0


@pytest.fixture
def small_disk(tmp_path):
  """A 3 MiB tmpfs (needs root, or a user namespace that allows mounts)."""
  mount_point = tmp_path / "disk"
  mount_point.mkdir()
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                         str(mount_point)], capture_output=True, text=True,
                        check=False)
  if proc.returncode:
    pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
  try:
    yield mount_point
  finally:
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_last_one(
    faults, runs, data_dir, small_disk):
  model_dir = str(small_disk / "m")
  shutil.copytree(runs["base"], model_dir)
  filler = small_disk / "filler"
  stat = os.statvfs(small_disk)
  # 64 KiB left: room for the config and the event file, not for a
  # checkpoint (its data file alone is about 160 KiB).
  filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 64 * 1024))
  with faults.inject("disk full at the checkpoint of step 10") as fault:
    proc = fx.run_cli(TRAIN, _args(data_dir, model_dir, FINAL,
                                   "--histogram_every_steps=1000"))
    line = _error_line(proc)
    assert f"--model_dir={model_dir}: the disk is full" in line, line
    assert "ckpt-10" in line and f"{model_dir}/ckpt-8 (step 8)" in line, line
    assert _steps(model_dir) == [4, 6, 8]
    assert not [n for n in _files(model_dir) if n.startswith("ckpt-10")]
    assert model_io.checkpoint_problem(os.path.join(model_dir, "ckpt-8")) is None
    fault.lost = 0
  with faults.inject("rerun after freeing the disk") as fault:
    filler.unlink()
    fx.clean_exit(fx.run_cli(TRAIN, _args(data_dir, model_dir, FINAL)))
    fault.lost = _lost(runs["reference"], model_dir)
    assert fault.lost == 0


def test_bad_flags_and_unusable_model_dirs_are_one_line_errors(
    faults, runs, data_dir, tmp_path):
  """Checked before TensorFlow builds anything: no model dir is created
  for a bad flag, nothing is written into a refused one."""
  fresh = str(tmp_path / "fresh")
  a_file = tmp_path / "a_file"
  a_file.write_text("not a directory")
  read_only = tmp_path / "read_only"
  read_only.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m",
                            "tmpfs", str(read_only)], capture_output=True,
                           check=False).returncode == 0
  if not mounted:
    read_only.chmod(0o555)
  try:
    cases = [
        ("--keep_checkpoints=0", fresh, ["--keep_checkpoints=0"],
         "--keep_checkpoints must be >= 1"),
        ("--keep_checkpoints=-3", fresh, ["--keep_checkpoints=-3"],
         "--keep_checkpoints must be >= 1"),
        ("--checkpoint_every_steps=-1", fresh,
         ["--checkpoint_every_steps=-1"],
         "--checkpoint_every_steps must be >= 0 (0 = once per epoch)"),
        ("--model_dir is a file", str(a_file), [], "is a file, not a "
         "directory"),
        ("--model_dir below a file", str(a_file / "m"), [],
         "cannot be created (Not a directory)"),
        ("--model_dir not writable", str(read_only), [], "is not writable"),
    ]
    calls = [((TRAIN, _args(data_dir, d, FINAL, *extra)), {})
             for _, d, extra, _ in cases]
    calls.append((("pyramidnet_tf.evaluate", [
        f"--model_dir={runs['base']}", f"--data_dir={data_dir}",
        f"--checkpoint={runs['base']}/ckpt-99"]), {}))
    procs = _parallel(calls)
    for (name, model_dir, _, text), proc in zip(cases, procs):
      with faults.inject(name) as fault:
        line = _error_line(proc)
        assert text in line, line
        assert "training cifar10" not in proc.stderr
        if model_dir != fresh:
          assert f"--model_dir={model_dir} " in line, line
        fault.lost = 0
    assert not os.path.exists(fresh)
    assert a_file.read_text() == "not a directory"
    assert os.listdir(read_only) == []
    with faults.inject("evaluate --checkpoint=<missing>") as fault:
      line = _error_line(procs[-1], "pyramidnet_tf.evaluate")
      assert f"--checkpoint={runs['base']}/ckpt-99: no such checkpoint" in (
          line), line
      assert "has ckpt-8, ckpt-6, ckpt-4" in line, line
      fault.lost = 0
  finally:
    if mounted:
      subprocess.run(["umount", "-l", str(read_only)], check=False)

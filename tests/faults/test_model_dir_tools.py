"""Fault injection: the tools besides the trainer that write, read or
reinterpret a model directory (import_torch, export_torch, evaluate, export,
and the trainer's --init_from, which reads another model directory).

What every case checks: a model directory is never replaced or mixed with
another model without being asked (``--overwrite``), nor while a trainer
writes it; a round trip through the authors' PyTorch format evaluates as
the original; NaN/Inf weights never enter a model directory; a damaged
newest checkpoint is skipped with a warning by every reader, as the
trainer skips it; a full disk or a killed export leaves nothing behind
that a rerun does not remove; and scores that would silently be wrong
(another image size, classes in another order) are refused. ``lost``
counts the files of a model directory changed or removed by a fault.

Every model is the trainer's tiny net (depth 8, alpha 4) on CPU.
"""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from tests import train_fixtures as fx
from tests import torch_pyramidnet
from tests.faults.test_checkpoints import _flip_bytes
from tests.faults.test_checkpoints import _parallel
from tests.faults.test_checkpoints import _truncate
from tests.faults.test_checkpoints import small_disk  # noqa: F401  (fixture)
from tests.faults.test_cli_inputs import _assert_one_line_error
from tests.faults.test_cli_inputs import _file_size_limit

TRAIN = "pyramidnet_tf.train"
EVALUATE = "pyramidnet_tf.evaluate"
EXPORT = "pyramidnet_tf.export"
IMPORT = "pyramidnet_tf.import_torch"
EXPORT_TORCH = "pyramidnet_tf.export_torch"
HANG_GUARD = 900   # seconds; only a hang may take that long, even on a busy machine


def _run(module, args):
  return fx.run_cli(module, args, timeout=HANG_GUARD)


def _train_args(data_dir, model_dir, steps, *extra):
  return fx.TINY_MODEL + [
      "--nobottleneck", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=8", f"--train_steps={steps}",
      "--checkpoint_every_steps=4", "--keep_checkpoints=3",
      "--steps_per_loop=2", "--eval_every_epochs=0", "--noeval_at_end",
      "--deterministic", "--seed=3"] + list(extra)


def _evaluation(proc) -> dict:
  """The JSON record evaluate prints."""
  fx.clean_exit(proc)
  return json.loads(proc.stdout)


def _steps(model_dir):
  return sorted(int(n.split("-")[1].split(".")[0]) for n in os.listdir(
      model_dir) if n.startswith("ckpt-") and n.endswith(".index"))


def _config(model_dir) -> dict:
  with open(os.path.join(model_dir, "model_config.json")) as f:
    return json.load(f)


def _changed(before: dict, directory: str) -> int:
  """Files of ``before`` (``fx.tree_bytes``) changed or gone, plus new
  files, ignoring the lock file that a writer's lock creates."""
  after = fx.tree_bytes(directory)
  keys = (set(before) | set(after)) - {".lock"}
  return sum(before.get(k) != after.get(k) for k in keys)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
  """16x16 CIFAR-style data (4 classes) and a run trained on it at 16 px:
  ckpt-4 and ckpt-8."""
  root = tmp_path_factory.mktemp("model_dir_tools")
  data_dir = fx.write_dataset(str(root / "data"), num_classes=4,
                              train_per_class=8, eval_per_class=4, size=16,
                              shards=1)
  run = str(root / "run")
  fx.clean_exit(_run(TRAIN, _train_args(data_dir, run, 8)))
  assert _steps(run) == [4, 8]
  return {"root": root, "data": data_dir, "run": run}


def _copy(cifar, tmp_path, name):
  target = str(tmp_path / name)
  shutil.copytree(cifar["run"], target)
  return target


def _authors_file(path, num_classes=4, seed=3):
  """A random CIFAR PyramidNet-8 a=4 saved as the authors' train.py does."""
  net = torch_pyramidnet.randomize(torch_pyramidnet.TorchPyramidNet(
      "cifar10", 8, 4, False, num_classes=num_classes), seed=seed)
  torch_pyramidnet.save_like_authors(net, str(path))
  return str(path)


def test_import_torch_never_replaces_a_model_unasked_nor_a_running_one(
    faults, cifar, tmp_path):
  source = _authors_file(tmp_path / "authors.pth.tar")
  trained = _copy(cifar, tmp_path, "trained")
  before = fx.tree_bytes(trained)
  with faults.inject("import_torch --output_dir=<a trainer's model dir>") as (
      fault):
    proc = _run(IMPORT, [f"--checkpoint={source}",
                               f"--output_dir={trained}"])
    _assert_one_line_error(proc, f"--output_dir={trained} already holds a "
                           "model (checkpoints ckpt-4, ckpt-8; "
                           "model_config.json", "--overwrite")
    fault.lost = _changed(before, trained)
    assert fault.lost == 0

  with faults.inject("import_torch --overwrite into a trainer's model dir") as (
      fault):
    fx.clean_exit(_run(IMPORT, [f"--checkpoint={source}",
                                f"--output_dir={trained}", "--overwrite"]))
    # Only the imported model is left: no trainer checkpoint newer than the
    # import for evaluate to take, no train_config.json describing a run
    # these weights are not from; its TensorBoard events are kept.
    assert _steps(trained) == [0]
    names = set(os.listdir(trained))
    assert "train_config.json" not in names and "tensorboard" in names
    assert not [n for n in names if n.startswith(".import_torch.tmp-")]
    assert _config(trained)["metadata"]["source"] == "pytorch"
    fault.lost = 0

  running = _copy(cifar, tmp_path, "running")
  log_path = tmp_path / "trainer.log"
  with open(log_path, "w") as log:
    trainer = subprocess.Popen(
        [sys.executable, "-m", TRAIN] + _train_args(
            cifar["data"], running, 100000, "--checkpoint_every_steps=100000",
            "--steps_per_loop=1", "--log_every_steps=1"),
        cwd=fx.REPO, env=fx.cli_env(), stdout=log, stderr=log)
    try:
      fx.wait_for_text(log_path, "step 10/", trainer)
      with faults.inject("import_torch --overwrite while a trainer writes the "
                         "dir") as fault:
        state = fx.tree_bytes(running)["checkpoint"]
        proc = _run(IMPORT, [f"--checkpoint={source}",
                                   f"--output_dir={running}", "--overwrite"])
        _assert_one_line_error(proc, f"--output_dir={running} is in use by "
                               f"another process (pid {trainer.pid} on host ",
                               "pyramidnet_tf.train")
        assert trainer.poll() is None
        assert _steps(running) == [4, 8]
        assert fx.tree_bytes(running)["checkpoint"] == state
        fault.lost = 0
    finally:
      trainer.kill()
      trainer.wait()


def test_export_torch_and_back_evaluates_as_the_original(
    faults, cifar, tmp_path):
  """CIFAR data at 16 px, then an image folder trained with ImageNet
  statistics: the .pth carries the image size and normalisation, and
  import_torch restores them."""
  folder_data = fx.write_dataset(str(tmp_path / "shapes"), dataset="shapes",
                                 num_classes=4, train_per_class=8,
                                 eval_per_class=4, size=20, encoding="png",
                                 shards=1)
  folder_run = str(tmp_path / "folder_run")
  fx.clean_exit(_run(TRAIN, _train_args(folder_data, folder_run, 4)))
  recorded = {run: _config(run)["metadata"]["preprocessing"]
              for run in (cifar["run"], folder_run)}
  assert recorded[folder_run]["kind"] == "imagenet"
  assert recorded[folder_run]["image_size"] == 16
  cases = {"CIFAR run at 16 px": (cifar["run"], cifar["data"]),
           "image-folder run, ImageNet mean/std": (folder_run, folder_data)}
  for name, (run, data) in cases.items():
    with faults.inject(f"export_torch -> import_torch -> evaluate: {name}") as (
        fault):
      pth = str(tmp_path / f"{os.path.basename(run)}.pth")
      back = str(tmp_path / f"{os.path.basename(run)}_back")
      exported = fx.clean_exit(_run(EXPORT_TORCH, [f"--model_dir={run}",
                                                   f"--output={pth}"]))
      # What a PyTorch user must apply, printed at export.
      assert "PyTorch input (16x16): torchvision.transforms " in (
          exported.stdout), exported.stdout
      assert "Normalize(mean=[" in exported.stdout
      checkpoint = torch.load(pth, weights_only=True)
      assert checkpoint["pyramidnet_tf"]["image_size"] == 16
      assert checkpoint["pyramidnet_tf"]["preprocessing"] == recorded[run]
      fx.clean_exit(_run(IMPORT, [f"--checkpoint={pth}", f"--output_dir={back}"]))
      original, imported = _parallel([
          ((EVALUATE, [f"--model_dir={run}", f"--data_dir={data}"]),
           {"timeout": HANG_GUARD}),
          ((EVALUATE, [f"--model_dir={back}", f"--data_dir={data}"]),
           {"timeout": HANG_GUARD})])
      original, imported = _evaluation(original), _evaluation(imported)
      assert imported["top1_error"] == original["top1_error"], (
          original, imported)
      assert imported["loss"] == pytest.approx(original["loss"], rel=1e-5)
      fault.lost = 0

  with faults.inject("evaluate: an import without a size record on 16 px "
                     "data") as fault:
    plain = str(tmp_path / "plain")
    fx.clean_exit(_run(IMPORT, [f"--checkpoint={_authors_file(tmp_path / 'a.pth')}",
                                f"--output_dir={plain}"]))
    refused, sized = _parallel([
        ((EVALUATE, [f"--model_dir={plain}", f"--data_dir={cifar['data']}"]),
         {"timeout": HANG_GUARD}),
        ((EVALUATE, [f"--model_dir={plain}", f"--data_dir={cifar['data']}",
                     "--image_size=16"]), {"timeout": HANG_GUARD})])
    _assert_one_line_error(refused, f"--data_dir={cifar['data']} holds 16x16 "
                           "images but the model in", "expects 32x32",
                           "--image_size=16")
    assert refused.stdout == ""
    assert _evaluation(sized)["examples"] == 16
    fault.lost = 0


def test_import_torch_refuses_nonfinite_weights(faults, tmp_path):
  path = _authors_file(tmp_path / "nan.pth.tar")
  checkpoint = torch.load(path, weights_only=False)
  state = checkpoint["state_dict"]
  state["module.layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
  state["module.bn_final.running_var"][1] = float("inf")
  torch.save(checkpoint, path)
  out = str(tmp_path / "out")
  with faults.inject("import_torch: a .pth holding NaN and Inf") as fault:
    proc = _run(IMPORT, [f"--checkpoint={path}", f"--output_dir={out}"])
    _assert_one_line_error(proc, f"--checkpoint={path} holds NaN/Inf in 2 "
                           "tensor(s)", "layer2.0.conv1.weight",
                           "bn_final.running_var", "nothing was written")
    assert not os.path.exists(out)
    fault.lost = 0


# Each reader of a model directory on one whose newest checkpoint (ckpt-8)
# is damaged: (tool, arguments, what its output says it used).
def _reader_runs(cifar, model_dir, tmp_path, tag):
  return {
      "evaluate": (EVALUATE, [f"--model_dir={model_dir}",
                              f"--data_dir={cifar['data']}"]),
      "export": (EXPORT, [f"--model_dir={model_dir}",
                          f"--export_dir={tmp_path}/export_{tag}"]),
      "export_torch": (EXPORT_TORCH, [f"--model_dir={model_dir}",
                                      f"--output={tmp_path}/{tag}.pth"]),
      "train --init_from": (TRAIN, _train_args(
          cifar["data"], f"{tmp_path}/finetuned_{tag}", 2,
          f"--init_from={model_dir}")),
  }


DAMAGES = {"truncated": _truncate, "bit-flipped": _flip_bytes}


def test_every_reader_skips_a_damaged_newest_checkpoint(
    faults, cifar, tmp_path):
  dirs, calls, names = {}, [], []
  for damage_name, damage in DAMAGES.items():
    model_dir = _copy(cifar, tmp_path, damage_name.replace("-", "_"))
    damage(os.path.join(model_dir, "ckpt-8.data-00000-of-00001"))
    dirs[damage_name] = model_dir
    for tool, (module, args) in _reader_runs(
        cifar, model_dir, tmp_path, damage_name.replace("-", "_")).items():
      calls.append(((module, args), {"timeout": HANG_GUARD}))
      names.append((damage_name, tool))
  calls.append(((EVALUATE, [f"--model_dir={cifar['run']}",
                            f"--data_dir={cifar['data']}",
                            f"--checkpoint={cifar['run']}/ckpt-4"]),
                {"timeout": HANG_GUARD}))
  procs = _parallel(calls)
  want = _evaluation(procs.pop())
  for (damage_name, tool), proc in zip(names, procs):
    model_dir = dirs[damage_name]
    before_names = sorted(os.listdir(model_dir))
    with faults.inject(f"{tool}: newest checkpoint {damage_name}") as fault:
      fx.clean_exit(proc)
      warning = [l for l in proc.stderr.splitlines()
                 if f"using {model_dir}/ckpt-4, the newest intact checkpoint"
                 in l]
      assert warning and "skipped ckpt-8: " in warning[0], proc.stderr[-3000:]
      if tool == "evaluate":
        got = json.loads(proc.stdout)
        assert got["checkpoint"] == f"{model_dir}/ckpt-4"
        assert (got["top1_error"], got["loss"]) == (
            want["top1_error"], want["loss"])
      elif tool == "export":
        tag = damage_name.replace("-", "_")
        with open(f"{tmp_path}/export_{tag}/pyramidnet_export.json") as f:
          assert json.load(f)["checkpoint"] == f"{model_dir}/ckpt-4"
      elif tool == "export_torch":
        assert "(the weights at step 4)" in proc.stdout, proc.stdout
      else:
        assert f"initialised from {model_dir}/ckpt-4" in proc.stderr, (
            proc.stderr[-3000:])
      assert sorted(os.listdir(model_dir)) == before_names
      fault.lost = 0

  with faults.inject("evaluate --checkpoint=<the damaged one>") as fault:
    model_dir = dirs["truncated"]
    proc = _run(EVALUATE, [f"--model_dir={model_dir}",
                                 f"--data_dir={cifar['data']}",
                                 f"--checkpoint={model_dir}/ckpt-8"])
    _assert_one_line_error(proc, f"--checkpoint={model_dir}/ckpt-8: "
                           f"{model_dir}/ckpt-8 is damaged",
                           f"the newest intact checkpoint is {model_dir}/"
                           "ckpt-4", code=1)
    fault.lost = 0


def test_full_disk_in_export_torch_and_import_torch_leaves_nothing(
    faults, cifar, small_disk, tmp_path):  # noqa: F811
  pth = str(tmp_path / "run.pth")
  fx.clean_exit(_run(EXPORT_TORCH, [f"--model_dir={cifar['run']}",
                                    f"--output={pth}"]))
  filler = small_disk / "filler"
  stat = os.statvfs(small_disk)
  # 16 KiB left: the tiny net's .pth and checkpoint need about 90 KiB.
  filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 16 * 1024))
  with faults.inject("export_torch: disk full") as fault:
    output = str(small_disk / "model.pth")
    proc = _run(EXPORT_TORCH, [f"--model_dir={cifar['run']}",
                                     f"--output={output}"])
    _assert_one_line_error(proc, f"cannot write --output={output}: no space "
                           "left on device", "nothing was written", code=1)
    assert sorted(os.listdir(small_disk)) == ["filler"]
    fault.lost = 0
  with faults.inject("import_torch: disk full") as fault:
    out = str(small_disk / "imported")
    proc = _run(IMPORT, [f"--checkpoint={pth}", f"--output_dir={out}"])
    _assert_one_line_error(proc, f"cannot write --output_dir={out}: no space "
                           "left on device", "nothing was written", code=1)
    assert sorted(os.listdir(small_disk)) == ["filler"]   # no ckpt-0_temp
    fault.lost = 0
  with faults.inject("import_torch: rerun after freeing the disk, with a "
                     "killed import's temporary left") as fault:
    filler.unlink()
    leftover = os.path.join(out, ".import_torch.tmp-0123456789ab")
    os.makedirs(os.path.join(leftover, "ckpt-0_temp"))
    fx.clean_exit(_run(IMPORT, [f"--checkpoint={pth}", f"--output_dir={out}"]))
    assert sorted(os.listdir(out)) == [".lock", "checkpoint",
                                       "ckpt-0.data-00000-of-00001",
                                       "ckpt-0.index", "model_config.json"]
    fault.lost = 0


def test_full_disk_in_export_torch_without_a_tmpfs(faults, cifar, tmp_path):
  """The same refusal where no tmpfs can be mounted: a file-size limit."""
  output = str(tmp_path / "model.pth")
  with faults.inject("export_torch: writes refused (file size limit)"):
    proc = subprocess.run(
        [sys.executable, "-m", EXPORT_TORCH, f"--model_dir={cifar['run']}",
         f"--output={output}"], cwd=fx.REPO, env=fx.cli_env(),
        capture_output=True, text=True, timeout=HANG_GUARD, check=False,
        preexec_fn=_file_size_limit(4096))
    _assert_one_line_error(proc, f"cannot write --output={output}: file too "
                           "large", code=1)
    assert os.listdir(tmp_path) == []


def _temporaries(parent, name):
  return [n for n in os.listdir(parent) if n.startswith(f".{name}.tmp-")]


def test_a_rerun_removes_what_a_killed_export_left(faults, cifar, tmp_path):
  export_dir = str(tmp_path / "export")
  with faults.inject("export: SIGKILL while writing, then a rerun") as fault:
    proc = subprocess.Popen(
        [sys.executable, "-m", EXPORT, f"--model_dir={cifar['run']}",
         f"--export_dir={export_dir}"], cwd=fx.REPO, env=fx.cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      deadline = time.time() + HANG_GUARD
      while not _temporaries(tmp_path, "export"):
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.005)
      proc.send_signal(signal.SIGKILL)
    finally:
      proc.wait()
    assert _temporaries(tmp_path, "export") and not os.path.exists(export_dir)
    rerun = fx.clean_exit(_run(EXPORT, [f"--model_dir={cifar['run']}",
                                        f"--export_dir={export_dir}"]))
    assert "left by an export that did not finish" in rerun.stderr
    assert sorted(os.listdir(tmp_path)) == ["export"]
    fault.lost = 0

  with faults.inject("export: another export's temporary is kept while it "
                     "runs") as fault:
    other = os.path.join(tmp_path, ".export.tmp-0123456789ab")
    os.makedirs(other)
    # An export running in the same directory holds a shared lock on it.
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_SH)
      fx.clean_exit(_run(EXPORT, [f"--model_dir={cifar['run']}",
                                  f"--export_dir={export_dir}"]))
      assert os.path.isdir(other)
    finally:
      os.close(fd)
    fx.clean_exit(_run(EXPORT, [f"--model_dir={cifar['run']}",
                                f"--export_dir={export_dir}"]))
    assert sorted(os.listdir(tmp_path)) == ["export"]
    fault.lost = 0


def test_evaluate_refuses_classes_in_another_order(faults, cifar, tmp_path):
  data = str(tmp_path / "data")
  shutil.copytree(cifar["data"], data)
  with open(os.path.join(data, "manifest.json")) as f:
    manifest = json.load(f)
  manifest["class_names"] = manifest["class_names"][::-1]
  with open(os.path.join(data, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  with faults.inject("evaluate: the data's class names permuted") as fault:
    proc = _run(EVALUATE, [f"--model_dir={cifar['run']}",
                                 f"--data_dir={data}"])
    _assert_one_line_error(proc, "class names are the model's in another "
                           "order (class 0 is 'class_0' for the model and "
                           "'class_3' in the data)")
    assert proc.stdout == ""
    fault.lost = 0


def test_export_torch_output_is_a_directory(faults, cifar, tmp_path):
  with faults.inject("export_torch --output=<a directory>") as fault:
    proc = _run(EXPORT_TORCH, [f"--model_dir={cifar['run']}",
                                     f"--output={tmp_path}"])
    line = _assert_one_line_error(
        proc, f"--output={tmp_path} is a directory; --output is the .pth "
        f"file to write, e.g. --output={tmp_path}/model.pth")
    assert ".tmp" not in line
    assert os.listdir(tmp_path) == []
    fault.lost = 0


def test_nonfinite_values_in_a_model_dir_never_reach_an_output(
    faults, cifar, tmp_path):
  """A checkpoint with NaN (written before import_torch refused them) is
  skipped like a damaged one; with no other checkpoint, readers refuse."""
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top
  model, metadata = store.load_model(cifar["run"])
  variable, _ = model.torch_variables()["bn_final.running_var"]
  variable.assign(np.full(variable.shape, np.nan, np.float32))
  only = str(tmp_path / "only")
  store.save_model(model, only, metadata, step=8)
  key = "model/bn_final/moving_variance/.ATTRIBUTES/VARIABLE_VALUE"
  with faults.inject("export_torch of a model dir holding only a NaN "
                     "checkpoint") as fault:
    output = str(tmp_path / "nan.pth")
    proc = _run(EXPORT_TORCH, [f"--model_dir={only}",
                                     f"--output={output}"])
    _assert_one_line_error(proc, f"{only} holds no intact checkpoint "
                           f"(ckpt-8: {key} holds NaN/Inf)", code=1)
    assert not os.path.exists(output)
    fault.lost = 0

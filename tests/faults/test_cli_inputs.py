"""Bad inputs to the command-line tools: bad files for predict, a full disk
for export, out-of-range and non-finite flags for train, evaluate, export,
describe and import_torch.

What every case checks: the tool ends with a non-zero status and one line
that names the file or flag (no traceback); predict still classifies and
prints every good file; export leaves nothing half written behind.
"""

import errno
import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys

from absl import flags
import numpy as np
from PIL import Image
import pytest

from tests import train_fixtures as fx

FLAGS = flags.FLAGS
TINY = fx.TINY_MODEL + ["--nobottleneck"]


def _error_lines(stderr: str):
  """The tools' own error lines (TensorFlow's start-up log lines aside)."""
  return [l for l in stderr.splitlines()
          if l.startswith(("pyramidnet_tf.", "FATAL Flags parsing error"))]


def _assert_one_line_error(proc, *needles, code=2):
  """One error line holding every needle; exit 2 for a usage error (a flag
  or path the user gave), 1 for a failure while working."""
  assert proc.returncode == code, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = _error_lines(proc.stderr)
  assert len(lines) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """A tiny trained model directory, its data and its export."""
  root = tmp_path_factory.mktemp("cli_inputs")
  data_dir = fx.write_dataset(str(root / "data"), num_classes=4,
                              train_per_class=4, eval_per_class=2, size=16)
  model_dir = str(root / "model")
  proc = fx.run_cli("pyramidnet_tf.train", TINY + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=8",
      "--train_steps=2", "--eval_every_epochs=0", "--noeval_at_end"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  export_dir = str(root / "export")
  proc = fx.run_cli("pyramidnet_tf.export", [f"--model_dir={model_dir}",
                                             f"--export_dir={export_dir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root, data_dir, model_dir, export_dir


def _encoded(image: np.ndarray, fmt: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format=fmt)
  return buffer.getvalue()


@pytest.fixture(scope="module")
def image_files(exported):
  """(good files, {bad file: what its error must say}) in argument order."""
  from pyramidnet_tf import images  # pylint: disable=g-import-not-at-top
  root = exported[0] / "images"
  root.mkdir()
  rng = np.random.default_rng(5)
  pixels = fx.class_image(1, 4, 16, rng)
  png = _encoded(pixels, "PNG")
  jpeg = _encoded(pixels, "JPEG")
  tiff = _encoded(pixels, "TIFF")
  files = {
      "good.png": png, "good.jpg": jpeg, "good.gif": _encoded(pixels, "GIF"),
      "good.bmp": _encoded(pixels, "BMP"),
      "good.webp": _encoded(pixels, "WEBP"), "good.tiff": tiff,
      # What data_prep.folder writes for good.tiff.
      "good_tiff_as_folder.jpg": images.prepare(tiff).encoded,
      "report.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n",
      "empty.png": b"",
      "blob.png": bytes(range(1, 40)),
      "page.jpg": b"<!DOCTYPE html><html><body>404</body></html>",
      "photo.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
      "truncated.png": png[:len(png) // 2],
      "truncated.jpg": jpeg[:len(jpeg) // 2],
      "corrupt.tiff": tiff[:8] + b"\xff" * 64,
  }
  for name, data in files.items():
    (root / name).write_bytes(data)
  (root / "folder").mkdir()
  (root / "folder" / "inside.png").write_bytes(png)
  bad = {
      "report.pdf": "is not an image: PDF document",
      "empty.png": "is not an image: empty file",
      "blob.png": "is not an image: unknown bytes 01 02 03 04",
      "page.jpg": "is not an image: HTML document",
      "photo.heic": "unsupported image format: HEIC/HEIF image",
      "truncated.png": "corrupt or truncated PNG image (Invalid PNG data",
      "truncated.jpg": "corrupt or truncated JPEG image (",
      "corrupt.tiff": "corrupt or truncated TIFF image (",
      "missing.png": "does not exist",
      "folder": "is a directory",
  }
  good = [n for n in files if n not in bad]
  # Bad files between good ones: nothing after a bad file may be lost.
  order = []
  for i, name in enumerate(bad):
    order.append(name)
    if i < len(good):
      order.append(good[i])
  order += good[len(bad):]
  paths = {name: str(root / name) for name in order}
  return ([paths[n] for n in order if n in good],
          {paths[n]: bad[n] for n in order if n in bad},
          [paths[n] for n in order])


def _text_results(stdout: str) -> dict:
  results, current = {}, None
  for line in stdout.splitlines():
    if not line.startswith("  "):
      current = line
      results[current] = []
    else:
      rank, rest = line.strip().split(". ", 1)
      name, rest = rest.split(" (class ")
      index, prob = rest.split(") ")
      assert int(rank) == len(results[current]) + 1
      results[current].append((name, int(index), float(prob)))
  return results


@pytest.mark.parametrize("mode", ["text", "json"])
def test_predict_classifies_every_good_file_past_bad_ones(
    exported, image_files, faults, mode):
  export_dir = exported[3]
  good, bad, order = image_files
  proc = fx.run_cli("pyramidnet_tf.predict", [f"--saved_model={export_dir}"] +
                    (["--json"] if mode == "json" else []) + order)
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  if mode == "json":
    lines = [json.loads(l) for l in proc.stdout.splitlines()]
    results = {l["image"]: [(t["class_name"], t["class"], t["probability"])
                            for t in l["top5"]] for l in lines}
  else:
    results = _text_results(proc.stdout)
  errors = [l for l in proc.stderr.splitlines()
            if l.startswith("pyramidnet_tf.predict: ")]
  for path, reason in bad.items():
    with faults.inject(f"predict ({mode}): {os.path.basename(path)}, "
                       f"{reason.split(' (')[0]}"):
      mine = [l for l in errors if l.startswith(f"pyramidnet_tf.predict: "
                                                f"{path}: ")]
      assert len(mine) == 1, errors
      assert reason in mine[0], mine[0]
      assert path not in results
  with faults.inject(f"predict ({mode}): good files among bad ones") as fault:
    fault.lost = len([p for p in good if p not in results])
    assert list(results) == good  # all of them, in argument order
    for top in results.values():
      assert len(top) == 4  # 4 classes
      assert sum(p for _, _, p in top) == pytest.approx(1.0, abs=1e-3)
    # TIFF is classified as data_prep.folder would have stored it.
    tiff = next(p for p in good if p.endswith("good.tiff"))
    folder = next(p for p in good if p.endswith("good_tiff_as_folder.jpg"))
    assert results[tiff] == results[folder]
  # Non-zero only after every file was tried, saying how many failed.
  assert proc.returncode == 1
  assert errors[-1] == (f"pyramidnet_tf.predict: {len(bad)} of {len(order)} "
                        "files could not be classified (see above)")


def test_predict_on_a_model_dir_says_to_export_first(exported, tmp_path,
                                                    faults):
  _, _, model_dir, _ = exported
  image = str(tmp_path / "x.png")
  Image.new("RGB", (16, 16)).save(image)
  with faults.inject("predict: --saved_model is a trainer model dir"):
    proc = fx.run_cli("pyramidnet_tf.predict", [f"--saved_model={model_dir}",
                                                image])
    _assert_one_line_error(
        proc, f"python -m pyramidnet_tf.export --model_dir={model_dir} "
        "--export_dir=")
  with faults.inject("predict: --saved_model does not exist"):
    proc = fx.run_cli("pyramidnet_tf.predict",
                      [f"--saved_model={model_dir}-nope", image])
    _assert_one_line_error(proc, f"--saved_model={model_dir}-nope does not "
                           "exist")


def _mount_tmpfs(directory: str, size: int) -> bool:
  os.makedirs(directory, exist_ok=True)
  if os.geteuid() != 0 or not shutil.which("mount"):
    return False
  proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}",
                         "tmpfs", directory], capture_output=True, check=False)
  return proc.returncode == 0


def _file_size_limit(limit: int):
  def apply():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
  return apply


def _export(model_dir, export_dir, preexec_fn=None):
  return subprocess.run(
      [sys.executable, "-m", "pyramidnet_tf.export",
       f"--model_dir={model_dir}", f"--export_dir={export_dir}"],
      cwd=fx.REPO, env=fx.cli_env(), capture_output=True, text=True,
      timeout=240, check=False, preexec_fn=preexec_fn)


def test_export_on_a_full_disk_leaves_nothing_half_written(exported, faults):
  root, _, model_dir, export_dir = exported
  size = sum(len(v) for v in fx.tree_bytes(export_dir).values())
  disk = str(root / "small_disk")
  # Room for one export, not for a second one beside it.
  if _mount_tmpfs(disk, size * 3 // 2):
    try:
      target = os.path.join(disk, "export")
      first = _export(model_dir, target)
      assert first.returncode == 0, first.stderr[-3000:]
      before = fx.tree_bytes(target)
      with faults.inject("export: disk full, replacing an export") as fault:
        proc = _export(model_dir, target)
        _assert_one_line_error(proc, f"--export_dir={target}",
                               "no space left on device",
                               "previous export is unchanged", code=1)
        fault.lost = sum(before[k] != v for k, v in fx.tree_bytes(target).items()
                         if k in before) + len(set(before) - set(fx.tree_bytes(
                             target)))
        assert fault.lost == 0
        assert os.listdir(disk) == ["export"]  # no temporary left
      with faults.inject("export: disk full, new export dir"):
        proc = _export(model_dir, os.path.join(disk, "second"))
        _assert_one_line_error(proc, f"--export_dir={disk}/second",
                               "no space left on device", code=1)
        assert os.listdir(disk) == ["export"]
    finally:
      subprocess.run(["umount", disk], check=False)
    # Too small for the variables, which are written first (by an op inside
    # a tf.function, whose error text is wrapped differently).
    tiny = str(root / "tiny_disk")
    variables = os.path.join(export_dir, "variables",
                             "variables.data-00000-of-00001")
    assert _mount_tmpfs(tiny, os.path.getsize(variables) // 2)
    try:
      with faults.inject("export: disk full while writing the variables"):
        proc = _export(model_dir, os.path.join(tiny, "export"))
        _assert_one_line_error(proc, f"--export_dir={tiny}/export",
                               "no space left on device", code=1)
        assert os.listdir(tiny) == []
    finally:
      subprocess.run(["umount", tiny], check=False)
  else:  # no tmpfs here: a file-size limit makes the writes fail instead
    with faults.inject("export: writes refused (file size limit)"):
      proc = _export(model_dir, os.path.join(disk, "export"),
                     _file_size_limit(size // 8))
      _assert_one_line_error(proc, f"--export_dir={disk}/export",
                             "file too large", code=1)
      assert os.listdir(disk) == []


def test_export_bad_flags_and_inputs(exported, tmp_path, faults):
  _, data_dir, model_dir, _ = exported
  with faults.inject("export: --image_size=2 below the total stride"):
    proc = fx.run_cli("pyramidnet_tf.export", [
        f"--model_dir={model_dir}", f"--export_dir={tmp_path}/a",
        "--image_size=2"])
    _assert_one_line_error(proc, "--image_size must be 0", ">= 4")
  with faults.inject("export: --export_dir holds other data"):
    proc = fx.run_cli("pyramidnet_tf.export", [
        f"--model_dir={model_dir}", f"--export_dir={data_dir}"])
    _assert_one_line_error(proc, f"--export_dir={data_dir} exists")
    assert os.path.exists(os.path.join(data_dir, "manifest.json"))
  with faults.inject("export: --top_k=0"):
    proc = fx.run_cli("pyramidnet_tf.export", [
        f"--model_dir={model_dir}", f"--export_dir={tmp_path}/b",
        "--top_k=0"])
    _assert_one_line_error(proc, "--top_k must be an integer >= 1; got 0")


# Trainer flags: (flags, what the error says). Checked in this process by
# the trainer's own flag parsing and _validate_flags, which run before any
# TensorFlow work.
TRAIN_FLAG_CASES = [
    (["--lr=nan"], "--lr must be a finite number > 0; got nan"),
    (["--lr=inf"], "--lr must be a finite number > 0; got inf"),
    (["--lr=0"], "--lr must be a finite number > 0; got 0"),
    (["--weight_decay=nan"], "--weight_decay must be a finite number >= 0"),
    (["--weight_decay=-0.001"], "--weight_decay must be a finite number >= 0"),
    (["--epochs=nan"], "--epochs must be a finite number > 0; got nan"),
    (["--epochs=inf"], "--epochs must be a finite number > 0; got inf"),
    (["--epochs=nan", "--train_steps=5"],
     "--epochs must be a finite number; got nan"),
    (["--warmup_epochs=nan"], "--warmup_epochs must be a finite number >= 0"),
    (["--warmup_epochs=-1"], "--warmup_epochs must be a finite number >= 0"),
    (["--momentum=nan"], "--momentum must be a finite number in [0, 1)"),
    (["--lr_decay_factor=0"], "--lr_decay_factor must be a finite number in "
     "(0, 1]"),
    (["--lr_decay_factor=inf"], "--lr_decay_factor must be"),
    (["--lr_decay_epochs=-1,5"], "--lr_decay_epochs takes 0-based epochs >= 0"),
    (["--cutmix_beta=nan"], "--cutmix_beta must be a finite number > 0"),
    (["--mixup_alpha=nan"], "--mixup_alpha must be a finite number >= 0"),
    (["--clip_grad_norm=nan"], "--clip_grad_norm must be a finite number >= 0"),
    (["--eval_every_epochs=nan"], "--eval_every_epochs must be a finite "
     "number >= 0"),
    (["--log_every_steps=-1"], "--log_every_steps must be an integer >= 0"),
    (["--histogram_every_steps=-5"], "--histogram_every_steps must be an "
     "integer >= 0"),
    (["--seed=-1"], "--seed must be an integer in 0..2147483647; got -1"),
    (["--shuffle_buffer=-1"], "--shuffle_buffer must be an integer >= 0"),
    (["--drop_rate=nan"], "--drop_rate must be a finite number in [0, 1)"),
    (["--shakedrop_pl=nan"], "--shakedrop_pl must be a finite number in "
     "[0, 1]"),
    (["--num_classes=-3"], "--num_classes must be an integer >= 0"),
    (["--image_size=-5"], "--image_size must be an integer >= 0"),
    (["--image_size=2"], "--image_size must be 0 (32 for CIFAR-architecture "
     "data, 224 for ImageNet) or an integer >= 4"),
    (["--dataset=imagenet", "--depth=18", "--image_size=16"],
     "or an integer >= 32 for a imagenet PyramidNet"),
    (["--cpu_devices=0"], "--cpu_devices must be an integer >= 1; got 0"),
    (["--collective_timeout=nan"], "--collective_timeout must be a finite "
     "number >= 0"),
    (["--eval_batch_size=-1"], "--eval_batch_size must be an integer >= 0"),
    (["--slurm_port_base=70000"], "--slurm_port_base must be an integer in "
     "0..65535 (0 = derived from SLURM_JOB_ID); got 70000"),
    (["--depth=111"], "invalid model flags: depth must be 6n+2 for basic "
     "units; nearest valid: 110, 116"),
    ([], None),  # the baseline: the same command line otherwise passes
    (["--image_size=0", "--eval_every_epochs=0", "--weight_decay=0",
      "--log_every_steps=0", "--warmup_epochs=0.5"], None),
]


def _train_flag_error(args):
  """The trainer's message for ``args``, or None when they are accepted."""
  from pyramidnet_tf import train  # pylint: disable=g-import-not-at-top,unused-import  (defines the flags) # noqa: F401
  from pyramidnet_tf.cli import train_config  # pylint: disable=g-import-not-at-top
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    try:
      FLAGS(["train", "--model_dir=/nonexistent/model",
             "--data_dir=/nonexistent/data"] + TINY + args)
    except flags.IllegalFlagValueError as e:
      return str(e)
    try:
      train_config.from_flags(check_model_dir=False)
    except train_config.ConfigError as e:
      return str(e)
    return None
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])


@pytest.mark.parametrize("args,message", TRAIN_FLAG_CASES,
                         ids=lambda v: " ".join(v) if isinstance(v, list)
                         else "")
def test_train_flags_are_checked_before_tensorflow_work(args, message,
                                                        faults):
  with faults.inject(f"train flags: {' '.join(args) or 'baseline'}"):
    got = _train_flag_error(args)
    if message is None:
      assert got is None
    else:
      assert got is not None and message in got, got


@pytest.mark.parametrize("module,args,needle", [
    ("pyramidnet_tf.train", ["--lr=nan"], "pyramidnet_tf.train: error: --lr "
     "must be a finite number > 0; got nan"),
    ("pyramidnet_tf.train", ["--cpu_devices=0"],
     "pyramidnet_tf.train: error: --cpu_devices must be an integer >= 1; "
     "got 0"),
    ("pyramidnet_tf.evaluate", ["--eval_batch_size=-1"],
     "pyramidnet_tf.evaluate: error: --eval_batch_size must be an integer "
     ">= 0"),
    ("pyramidnet_tf.describe", ["--drop_rate=nan"],
     "pyramidnet_tf.describe: error: --drop_rate must be a finite number in "
     "[0, 1); got nan"),
    ("pyramidnet_tf.describe", ["--depth=111", "--nobottleneck"],
     "pyramidnet_tf.describe: error: invalid model flags: depth must be "
     "6n+2"),
])
def test_cli_bad_flags_are_one_line(exported, tmp_path, faults, module, args,
                                    needle):
  _, data_dir, model_dir, _ = exported
  new_dir = str(tmp_path / "new_model")
  common = {"pyramidnet_tf.train": TINY + [f"--data_dir={data_dir}",
                                          f"--model_dir={new_dir}"],
            "pyramidnet_tf.evaluate": [f"--data_dir={data_dir}",
                                       f"--model_dir={model_dir}"],
            "pyramidnet_tf.describe": TINY}[module]
  with faults.inject(f"{module.split('.')[1]}: {' '.join(args)}"):
    proc = fx.run_cli(module, common + args)
    _assert_one_line_error(proc, needle)
    assert not os.path.exists(new_dir)  # rejected before any work
    assert proc.stdout == ""


def test_import_torch_corrupt_npz_is_one_line(tmp_path, faults):
  path = tmp_path / "weights.npz"
  path.write_bytes(b"PK\x03\x04 not really a zip archive")
  with faults.inject("import_torch: corrupt .npz"):
    proc = fx.run_cli("pyramidnet_tf.import_torch", [
        "--depth=8", "--alpha=4", "--nobottleneck",
        f"--checkpoint={path}", f"--output_dir={tmp_path}/out"])
    _assert_one_line_error(proc, f"--checkpoint={path} is not a readable "
                           ".npz archive")
    assert not os.path.exists(tmp_path / "out")


def test_cli_guard_reports_expected_failures_and_keeps_bug_tracebacks(
    faults, capsys):
  from pyramidnet_tf.cli import errors as cli  # pylint: disable=g-import-not-at-top

  def failing(error):
    def main(argv):
      del argv
      raise error
    return cli.guard("tool", main)

  with faults.inject("guard: disk full (OSError ENOSPC)"):
    with pytest.raises(SystemExit) as exit_info:
      failing(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC),
                      "/data/out.bin"))(["tool"])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err == (
        "tool: error: cannot write /data/out.bin: no space left on device; "
        "free some space or choose another directory\n")
  with faults.inject("guard: permission denied"):
    with pytest.raises(SystemExit) as exit_info:
      failing(PermissionError(errno.EACCES, "Permission denied",
                              "/etc/x"))(["tool"])
    assert exit_info.value.code == 1
    assert "cannot access /etc/x: permission denied" in capsys.readouterr().err
  with faults.inject("guard: a bug keeps its traceback"):
    with pytest.raises(ZeroDivisionError):
      failing(ZeroDivisionError("bug"))(["tool"])
  with faults.inject("guard: --verbosity=1 prints the traceback"):
    old = FLAGS["verbosity"].value
    FLAGS["verbosity"].value = 1
    try:
      with pytest.raises(SystemExit):
        failing(cli.UserError("bad thing"))(["tool"])
    finally:
      FLAGS["verbosity"].value = old
    assert "Traceback" in capsys.readouterr().err

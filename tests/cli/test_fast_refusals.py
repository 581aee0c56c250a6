"""Path mistakes are refused before TensorFlow starts, in one line each,
and leave nothing behind.

Every tool runs with a ``tensorflow`` package that raises when imported
(``no_tensorflow``): a refusal that needed TensorFlow would end with that
error instead. (They take well under 2 s on an idle machine; no test times
them.)
"""

import json
import os
import subprocess
import sys

import pytest

from tests import REPO_ROOT


def _run(tool, args, no_tensorflow, cwd):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([no_tensorflow,
                                                     REPO_ROOT]))
  return subprocess.run([sys.executable, "-m", f"pyramidnet_tf.{tool}",
                         *args], cwd=cwd, env=env, capture_output=True,
                        text=True, timeout=120)


@pytest.fixture
def dirs(tmp_path):
  """An empty folder, a data folder without a manifest, a model dir
  without checkpoints and an image file."""
  (tmp_path / "empty").mkdir()
  (tmp_path / "images").mkdir()
  (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8\xff")
  model = tmp_path / "model"
  model.mkdir()
  (model / "model_config.json").write_text(json.dumps({"model": {}}))
  return tmp_path


CASES = [
    ("train", ["--data_dir={t}/nowhere", "--model_dir={t}/new/m"],
     ["--data_dir={t}/nowhere does not exist; prepare one with data_prep"]),
    ("train", ["--data_dir={t}/images", "--model_dir={t}/new/m"],
     ["--data_dir={t}/images has no manifest.json: it is not a directory "
      "written by data_prep"]),
    ("evaluate", ["--model_dir={t}/empty", "--data_dir={t}/nowhere"],
     ["2 problems with the flags:",
      "--model_dir={t}/empty is not a model directory (no model_config.json)",
      "--data_dir={t}/nowhere does not exist"]),
    ("evaluate", ["--model_dir={t}/model", "--data_dir={t}/images"],
     ["--model_dir={t}/model holds no checkpoint (no ckpt-N.index file)",
      "--data_dir={t}/images has no manifest.json"]),
    ("evaluate", ["--model_dir={t}/model", "--checkpoint=best",
                  "--data_dir={t}/images"],
     ["--checkpoint=best: {t}/model keeps no best checkpoint"]),
    ("export", ["--model_dir={t}/nowhere", "--export_dir={t}/export"],
     ["--model_dir={t}/nowhere does not exist (a directory written by "
      "pyramidnet_tf.train or pyramidnet_tf.import_torch)"]),
    ("export_torch", ["--model_dir={t}/empty", "--output={t}/m.pth"],
     ["--model_dir={t}/empty is not a model directory"]),
    ("predict", ["--saved_model={t}/model", "{t}/images/a.jpg"],
     ["--saved_model={t}/model is a model directory (checkpoints), not an "
      "export: run `python -m pyramidnet_tf.export --model_dir={t}/model "
      "--export_dir=EXPORT_DIR` first"]),
    ("predict", ["--saved_model={t}/nowhere", "{t}/images/b.jpg"],
     ["2 problems with the flags:", "--saved_model={t}/nowhere does not "
      "exist (write an export", "{t}/images/b.jpg: does not exist"]),
]


@pytest.mark.parametrize("tool, args, expected", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_path_mistakes_are_refused_before_tensorflow(tool, args, expected,
                                                     dirs, no_tensorflow):
  t = str(dirs)
  before = sorted(os.walk(t))
  result = _run(tool, [a.format(t=t) for a in args], no_tensorflow, t)
  assert result.returncode == 2, result.stderr
  assert "TensorFlow was imported" not in result.stderr
  assert "Traceback" not in result.stderr
  assert result.stderr.startswith(f"pyramidnet_tf.{tool}: error: ")
  for text in expected:
    assert text.format(t=t) in result.stderr, result.stderr
  # Nothing created: no model dir, no export, no lock.
  assert sorted(os.walk(t)) == before


@pytest.mark.parametrize("tool", ["train", "evaluate", "export",
                                  "export_torch", "import_torch", "describe",
                                  "data_service"])
def test_a_stray_argument_is_a_usage_error_in_every_tool(
    tool, no_tensorflow, tmp_path):
  """Only predict takes positional arguments (its image files); the others
  say so the same way, with the usage exit status, before TensorFlow."""
  proc = _run(tool, ["stray"], no_tensorflow, str(tmp_path))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
      f"pyramidnet_tf.{tool}: error: unexpected arguments: stray (every "
      "input is a --flag; --help lists them)"], proc.stderr[-2000:]

"""Fault injection: a model directory and a data directory swapped on the command line.

* data_prep's --output_dir pointing at a model directory (checkpoints, model_config.json,
  train_config.json): refused with one line naming it and the way forward, exit status 2,
  before anything is written, --overwrite or not; the library refuses it too.
* The trainer's --model_dir pointing at a data directory (manifest.json or shards written by
  data_prep): refused with one line naming it, exit status 2, before TensorFlow starts.
"""

import os
import shutil

import pytest

from data_prep import DataPrepError
from data_prep import folder
from tests import data_prep_fixtures as dp
from tests import train_fixtures as fx


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
  """A PYTHONPATH entry whose ``tensorflow`` fails to import: a tool that reaches any
  TensorFlow import ends with that error instead."""
  root = tmp_path_factory.mktemp("no_tf")
  (root / "tensorflow").mkdir()
  (root / "tensorflow" / "__init__.py").write_text(
      "raise ImportError('TensorFlow was imported')\n")
  return str(root)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """A class-folder tree of six small JPEGs."""
  root = tmp_path_factory.mktemp("images")
  return dp.write_tree(str(root), {f"{name}/{i}.jpg": dp.jpeg(16, 16, seed=i)
                                   for name in ("cat", "dog") for i in range(3)})


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, images):
  """A data directory written by data_prep.folder."""
  out = str(tmp_path_factory.mktemp("data") / "digits")
  proc = dp.run_cli("folder", f"--source={images}", f"--output_dir={out}", "--workers=1",
                    "--val_fraction=0.34")
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out


def _env(no_tensorflow):
  return {"PYTHONPATH": os.pathsep.join([no_tensorflow, dp.REPO_ROOT])}


def _one_usage_line(proc, prog):
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), proc.stderr
  return lines[0]


_MODEL_DIR_FILES = ["ckpt-12.index", "model_config.json", "train_config.json", "checkpoint"]


@pytest.mark.parametrize("marker", _MODEL_DIR_FILES)
def test_data_prep_refuses_to_write_into_a_model_directory(
    faults, no_tensorflow, images, tmp_path, marker):
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  (model_dir / marker).write_text("{}")
  (model_dir / "ckpt-12.data-00000-of-00001").write_bytes(b"weights")
  before = dp.dir_bytes(str(model_dir))
  with faults.inject(f"data_prep --output_dir is a model directory ({marker})") as fault:
    for extra in ([], ["--overwrite"]):
      proc = dp.run_cli("folder", f"--source={images}", f"--output_dir={model_dir}", *extra,
                        env=_env(no_tensorflow))
      line = _one_usage_line(proc, "data_prep.folder")
      assert f"--output_dir={model_dir} is a model directory" in line, line
      assert "--data_dir" in line, line  # the way forward
      fault.lost = len(set(before) ^ set(dp.dir_bytes(str(model_dir))))
      assert dp.dir_bytes(str(model_dir)) == before
    # Called as a library, the conversion refuses it too.
    with pytest.raises(DataPrepError, match="is a model directory"):
      folder.convert(images, str(model_dir), val_fraction=0, overwrite=True)
    assert dp.dir_bytes(str(model_dir)) == before


def test_trainer_refuses_a_data_directory_as_model_dir(faults, no_tensorflow, data_dir,
                                                       tmp_path):
  before = dp.dir_bytes(data_dir)
  with faults.inject("trainer --model_dir is a data directory (manifest.json)"):
    proc = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
        f"--data_dir={data_dir}", f"--model_dir={data_dir}", "--epochs=1"],
        PYTHONPATH=_env(no_tensorflow)["PYTHONPATH"])
    line = _one_usage_line(proc, "pyramidnet_tf.train")
    assert (f"--model_dir={data_dir} is a data directory (it holds manifest.json, written "
            "by data_prep)") in line, line
    assert dp.dir_bytes(data_dir) == before
  # A conversion cut short leaves shards without manifest.json: still a data directory.
  partial = tmp_path / "partial"
  partial.mkdir()
  shard = sorted(name for name in os.listdir(data_dir) if name.endswith(".tfrecord"))[0]
  shutil.copy(os.path.join(data_dir, shard), partial / shard)
  with faults.inject("trainer --model_dir holds data_prep shards only"):
    proc = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
        f"--data_dir={data_dir}", f"--model_dir={partial}", "--epochs=1"],
        PYTHONPATH=_env(no_tensorflow)["PYTHONPATH"])
    line = _one_usage_line(proc, "pyramidnet_tf.train")
    assert f"--model_dir={partial} is a data directory (it holds {shard}" in line, line
    assert sorted(os.listdir(partial)) == [shard]

"""What a user runs, end to end, through the command lines, on the paper's
networks: data_prep -> train (with its end-of-training evaluation) ->
evaluate -> export -> predict.

* The design card's command, ``python -m pyramidnet_tf.train --alpha=48
  --depth=164`` (PyramidNet-164 bottleneck, CIFAR-10), on a CIFAR-10 archive
  in the official python format written here, only shortened
  (``--train_steps``, ``--batch_size``).
* An ImageNet flagfile (PyramidNet-101 a=360, the authors' PyTorch release
  network) on ILSVRC2012-layout tars written here, at a small
  ``--image_size``.

Every exit status must be 0 and every output is checked: the trainer's
result, evaluate's metrics over every evaluation example, the SavedModel's
files, predict's top-5 for a JPEG.
"""

import json
import os

import numpy as np
from PIL import Image

from tests import data_prep_fixtures as dpfx
from tests import train_fixtures as fx


def _jpeg(path: str, size: int, seed: int) -> str:
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(
      path, format="JPEG", quality=90)
  return path


def _ok(proc, what: str):
  assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n" + (
      proc.stderr[-4000:])
  return proc


def _evaluate_export_predict(model_dir: str, data_dir: str, export_dir: str,
                             image: str, examples: int, class_names):
  """evaluate, export and predict on a trained model dir; checks outputs."""
  proc = _ok(fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}",
      "--eval_batch_size=4"], timeout=900), "evaluate")
  metrics = json.loads(proc.stdout)
  assert metrics["examples"] == examples
  assert np.isfinite(metrics["loss"])
  assert 0.0 <= metrics["top1_error"] <= 100.0

  _ok(fx.run_cli("pyramidnet_tf.export", [
      f"--model_dir={model_dir}", f"--export_dir={export_dir}"], timeout=900),
      "export")
  assert os.path.isfile(os.path.join(export_dir, "saved_model.pb"))
  with open(os.path.join(export_dir, "class_names.txt")) as f:
    assert f.read().split("\n")[:len(class_names)] == list(class_names)

  proc = _ok(fx.run_cli("pyramidnet_tf.predict", [
      f"--saved_model={export_dir}", "--json", image], timeout=600),
             "predict")
  lines = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
  assert [l["image"] for l in lines] == [image]
  top = lines[0]["top5"]
  assert len(top) == min(5, len(class_names))
  assert all(t["class_name"] == class_names[t["class"]] for t in top)
  probabilities = [t["probability"] for t in top]
  assert probabilities == sorted(probabilities, reverse=True)
  assert 0.0 < sum(probabilities) <= 1.0 + 1e-5


def test_the_design_cards_pyramidnet164_command(tmp_path):
  arrays = dpfx.cifar_arrays("cifar10", per_batch=8, test=10, seed=1)
  archive = dpfx.write_tar(str(tmp_path / "cifar-10-python.tar.gz"),
                           dpfx.cifar_files("cifar10", arrays, "python"),
                           "w:gz")
  data_dir = str(tmp_path / "data" / "cifar10")
  _ok(dpfx.run_cli("cifar", "--dataset=cifar10", f"--source={archive}",
                   f"--output_dir={data_dir}", timeout=300), "data_prep.cifar")

  model_dir = str(tmp_path / "runs" / "c164")
  proc = _ok(fx.run_cli("pyramidnet_tf.train", [
      "--alpha=48", "--depth=164", f"--data_dir={data_dir}",
      f"--model_dir={model_dir}", "--train_steps=3", "--batch_size=8",
      "--steps_per_loop=1", "--log_every_steps=1"], timeout=1200), "train")
  result = fx.train_result(proc.stderr)
  assert result["step"] == 3
  assert np.isfinite(result["train"]["loss"])
  assert result["eval"]["examples"] == 10
  assert np.isfinite(result["eval"]["loss"])
  with open(os.path.join(model_dir, "model_config.json")) as f:
    model = json.load(f)["model"]
  assert (model["dataset"], model["depth"], model["alpha"],
          model["bottleneck"], model["num_classes"]) == (
              "cifar10", 164, 48.0, True, 10)

  _evaluate_export_predict(model_dir, data_dir, str(tmp_path / "export"),
                           _jpeg(str(tmp_path / "photo.jpg"), 48, 2), 10,
                           dpfx.CIFAR10_NAMES)


def test_an_imagenet_flagfile_at_a_small_image_size(tmp_path):
  train = dpfx.ilsvrc_train(per_class=3, special=())
  val_files, val_labels = dpfx.ilsvrc_val(count=6)
  train_tar = dpfx.write_train_tar(str(tmp_path / "ILSVRC2012_img_train.tar"),
                                   train)
  val_tar = dpfx.write_val_tar(str(tmp_path / "ILSVRC2012_img_val.tar"),
                               val_files)
  labels = dpfx.write_tfds_labels(str(tmp_path / "validation_labels.txt"),
                                  val_labels)
  data_dir = str(tmp_path / "data" / "imagenet")
  _ok(dpfx.run_cli("imagenet", f"--train={train_tar}", f"--val={val_tar}",
                   f"--val_labels={labels}", f"--output_dir={data_dir}",
                   "--train_shards=2", "--val_shards=1", timeout=300),
      "data_prep.imagenet")

  model_dir = str(tmp_path / "runs" / "i101")
  proc = _ok(fx.run_cli("pyramidnet_tf.train", [
      "--flagfile=flags/imagenet/pyramidnet101_a360_pytorch.flags",
      f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--image_size=64", "--train_steps=2", "--batch_size=4",
      "--steps_per_loop=1", "--log_every_steps=1"], timeout=1200), "train")
  result = fx.train_result(proc.stderr)
  assert result["step"] == 2
  assert np.isfinite(result["train"]["loss"])
  assert result["eval"]["examples"] == 6
  with open(os.path.join(model_dir, "model_config.json")) as f:
    config = json.load(f)
  assert (config["model"]["dataset"], config["model"]["depth"],
          config["model"]["alpha"], config["model"]["bottleneck"]) == (
              "imagenet", 101, 360.0, True)
  assert config["model"]["num_classes"] == len(dpfx.SYNSETS)
  assert config["metadata"]["preprocessing"]["image_size"] == 64

  _evaluate_export_predict(model_dir, data_dir, str(tmp_path / "export"),
                           _jpeg(str(tmp_path / "photo.jpg"), 80, 3), 6,
                           sorted(dpfx.SYNSETS))

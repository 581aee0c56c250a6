"""Export -> SavedModel -> predict round trip, on trainer output and on a
directory written like import_torch's (model_io.save_model, no metadata)."""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pyramidnet_tf.data import augment
from pyramidnet_tf.model_dir import store as model_io
from tests import train_fixtures as fx


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("export")
  data_dir = fx.write_dataset(str(root / "data"), num_classes=4,
                              train_per_class=24, eval_per_class=4, size=16)
  model_dir = str(root / "model")
  proc = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
      f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=16",
      "--epochs=5", "--lr=0.05", "--lr_schedule=cosine", "--steps_per_loop=6",
      "--eval_every_epochs=0", "--noeval_at_end"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  export_dir = str(root / "saved")
  proc = fx.run_cli("pyramidnet_tf.export", [f"--model_dir={model_dir}",
                                             f"--export_dir={export_dir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  images = []
  rng = np.random.default_rng(11)
  for label in range(4):
    path = str(root / f"img{label}.png")
    Image.fromarray(fx.class_image(label, 4, 16, rng)).save(path)
    images.append(path)
  return model_dir, export_dir, images


def test_predict_prints_top5_class_names(trained):
  _, export_dir, images = trained
  proc = fx.run_cli("pyramidnet_tf.predict",
                    [f"--saved_model={export_dir}", "--json"] + images)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = [json.loads(l) for l in proc.stdout.splitlines()]
  assert [l["image"] for l in lines] == images
  correct = 0
  for label, line in enumerate(lines):
    top = line["top5"]
    assert len(top) == 4  # only 4 classes
    assert top[0]["class_name"] == f"class_{top[0]['class']}"
    probs = [t["probability"] for t in top]
    assert probs == sorted(probs, reverse=True)
    assert sum(probs) == pytest.approx(1.0, abs=1e-4)
    correct += top[0]["class"] == label
  assert correct >= 3  # a trained model, not chance
  text = fx.run_cli("pyramidnet_tf.predict",
                    [f"--saved_model={export_dir}", images[0]])
  assert text.returncode == 0
  assert text.stdout.splitlines()[0] == images[0]
  assert text.stdout.splitlines()[1].startswith("  1. class_")


def test_signatures_agree_with_the_model(trained):
  model_dir, export_dir, images = trained
  loaded = tf.saved_model.load(export_dir)
  assert set(loaded.signatures) >= {"serving_default", "classify", "logits"}
  with open(images[2], "rb") as f:
    encoded = f.read()
  out = loaded.signatures["classify"](images=tf.constant([encoded]))
  image = augment.decode(tf.constant(encoded), tf.constant(""), 0, 0)
  metadata = model_io.read_config(model_dir)["metadata"]
  assert metadata["preprocessing"]["kind"] == "cifar"
  pre = augment.cifar_eval(image, "cifar10", "pt", 16)
  logits = loaded.signatures["logits"](images=pre[None])["logits"]
  model, _ = model_io.load_model(model_dir)
  np.testing.assert_allclose(logits.numpy(), model(pre[None]).numpy(),
                             rtol=1e-5, atol=1e-5)
  probs = tf.nn.softmax(logits)[0].numpy()
  np.testing.assert_allclose(out["probabilities"][0].numpy(),
                             np.sort(probs)[::-1], rtol=1e-5, atol=1e-6)
  names = open(os.path.join(export_dir, "class_names.txt")).read().split()
  assert names == [f"class_{i}" for i in range(4)]


def test_export_of_an_imported_style_model_dir(tiny_pyramidnet, tmp_path):
  """import_torch writes model_io.save_model dirs without preprocessing."""
  model = tiny_pyramidnet(dataset="cifar100", seed=3)
  model_dir = str(tmp_path / "imported")
  model_io.save_model(model, model_dir, {"source": "torch"}, step=0)
  export_dir = str(tmp_path / "saved")
  proc = fx.run_cli("pyramidnet_tf.export", [f"--model_dir={model_dir}",
                                             f"--export_dir={export_dir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.load(open(os.path.join(export_dir, "pyramidnet_export.json")))
  assert info["preprocessing"]["kind"] == "cifar"
  assert info["preprocessing"]["image_size"] == 32
  path = str(tmp_path / "x.jpg")
  Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(path)
  proc = fx.run_cli("pyramidnet_tf.predict", [f"--saved_model={export_dir}",
                                              path])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(proc.stdout.splitlines()) == 6


def test_errors_name_the_problem(trained, tmp_path):
  _, export_dir, _ = trained
  proc = fx.run_cli("pyramidnet_tf.predict", [f"--saved_model={export_dir}",
                                              str(tmp_path / "nope.png")])
  assert proc.returncode != 0 and "nope.png: does not exist" in proc.stderr
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  proc = fx.run_cli("pyramidnet_tf.predict", [f"--saved_model={export_dir}",
                                              str(bad)])
  assert proc.returncode != 0 and "is not an image: text file" in proc.stderr
  proc = fx.run_cli("pyramidnet_tf.export", [f"--model_dir={tmp_path}",
                                             f"--export_dir={tmp_path}/o"])
  assert proc.returncode != 0 and "model_config.json" in proc.stderr


def test_export_finds_checkpoints_on_disk_and_names_a_missing_one(
    trained, tmp_path):
  model_dir, _, _ = trained
  copy = str(tmp_path / "model")
  shutil.copytree(model_dir, copy)
  os.remove(os.path.join(copy, "checkpoint"))   # the state file
  newest = model_io.checkpoints_on_disk(copy)[0]
  proc = fx.run_cli("pyramidnet_tf.export", [f"--model_dir={copy}",
                                             f"--export_dir={tmp_path}/o"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.exists(os.path.join(tmp_path, "o", "saved_model.pb"))
  with open(os.path.join(tmp_path, "o", "pyramidnet_export.json")) as f:
    assert json.load(f)["checkpoint"] == newest   # what was exported
  proc = fx.run_cli("pyramidnet_tf.export", [
      f"--model_dir={copy}", f"--export_dir={tmp_path}/p",
      f"--checkpoint={copy}/ckpt-999"])
  assert proc.returncode != 0
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith("pyramidnet_tf.export: error: --checkpoint="), (
      proc.stderr[-3000:])
  assert "ckpt-999: no such checkpoint" in lines[-1]
  assert os.path.basename(newest) in lines[-1]
  assert not os.path.exists(os.path.join(tmp_path, "p"))

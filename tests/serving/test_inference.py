"""The public Python API: lazy names, load_model and model_dir.open_model's
choice of weights."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import pyramidnet_tf
from pyramidnet_tf import model_dir as model_dir_lib
from pyramidnet_tf.model_dir import store
from pyramidnet_tf.serving import image_files
from pyramidnet_tf.model_dir import ema as ema_lib
from tests import train_fixtures as fx

CLASSES = ["cat", "dog", "eel", "fox"]


def _model_dir(path, tiny_pyramidnet, *, averages: bool,
               recorded_decay: float) -> str:
  """A model dir whose checkpoint holds raw weights and (``averages``) an
  EMA that differs from them."""
  net = tiny_pyramidnet(num_classes=4, seed=1)
  net(tf.zeros([1, 16, 16, 3]), training=False)
  objects = {"model": net}
  if averages:
    ema = ema_lib.Ema(ema_lib.averaged_variables(net), 0.5, name="ema")
    for average in ema.averages:
      average.assign(average + 0.05)
    objects[ema_lib.CHECKPOINT_KEY] = ema
  tf.train.Checkpoint(**objects).write(os.path.join(path, "ckpt-3"))
  with open(os.path.join(path, "checkpoint"), "w") as f:
    f.write('model_checkpoint_path: "ckpt-3"\n')
  store.write_config(path, net, {"ema_decay": recorded_decay,
                                 "class_names": CLASSES})
  return path


def _weights(model):
  return [v.numpy() for v in ema_lib.averaged_variables(model)]


def test_importing_the_package_loads_no_tensorflow_until_a_name_is_used():
  program = (
      "import sys; import pyramidnet_tf as p; "
      "assert 'tensorflow' not in sys.modules, 'import'; "
      "assert {'PyramidNet', 'load_model'} <= set(dir(p)); "
      "assert 'tensorflow' not in sys.modules, 'dir'; "
      "from pyramidnet_tf import PyramidNet, load_model; "
      "assert 'tensorflow' in sys.modules; "
      "from pyramidnet_tf.model.network import PyramidNet as N; "
      "assert PyramidNet is N")
  result = subprocess.run([sys.executable, "-c", program], env=fx.cli_env(),
                          capture_output=True, text=True, timeout=300,
                          check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  with pytest.raises(AttributeError, match="no attribute 'nope'"):
    getattr(pyramidnet_tf, "nope")


def test_open_model_gives_averaged_or_raw_weights(tmp_path, tiny_pyramidnet):
  directory = _model_dir(str(tmp_path / "m"), tiny_pyramidnet, averages=True,
                         recorded_decay=0.5)
  raw = model_dir_lib.open_model(directory)
  assert not raw.ema
  auto = model_dir_lib.open_model(directory, use_ema="auto")
  assert auto.ema and auto.checkpoint.endswith("ckpt-3")
  for r, a in zip(_weights(raw.model), _weights(auto.model)):
    np.testing.assert_allclose(a, r + 0.05, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="--use_ema must be one of"):
    model_dir_lib.open_model(directory, use_ema="maybe")


def test_open_model_without_averages(tmp_path, tiny_pyramidnet):
  """A run that recorded an EMA but whose checkpoint lacks it: an error for
  evaluate and export, the raw weights for a fine-tune's source."""
  directory = _model_dir(str(tmp_path / "m"), tiny_pyramidnet,
                         averages=False, recorded_decay=0.5)
  with pytest.raises(ValueError, match="holds no EMA weights"):
    model_dir_lib.open_model(directory, use_ema="auto")
  source = model_dir_lib.open_model(directory, use_ema="auto",
                                    ema_required=False)
  assert not source.ema


def test_load_model_predicts_as_the_network_with_its_preprocessing(
    tmp_path, tiny_pyramidnet):
  directory = _model_dir(str(tmp_path / "m"), tiny_pyramidnet, averages=True,
                         recorded_decay=0.5)
  model = pyramidnet_tf.load_model(directory)
  assert model.ema and model.class_names == CLASSES
  raw = pyramidnet_tf.load_model(directory, use_ema=False)
  assert not raw.ema
  image = fx.class_image(2, 4, 16, np.random.default_rng(0))
  path = str(tmp_path / "x.png")
  Image.fromarray(image).save(path)
  with open(path, "rb") as f:
    encoded = f.read()
  logits = model.logits([path, encoded, image])
  assert logits.shape == (3, 4)
  np.testing.assert_allclose(logits[0], logits[1], rtol=1e-5)
  np.testing.assert_allclose(logits[0], logits[2], rtol=1e-5)
  expected = model.network(model.preprocess(path), training=False).numpy()
  np.testing.assert_allclose(logits[:1], expected, rtol=1e-5)
  assert not np.allclose(raw.logits(path), logits[:1], rtol=1e-3)
  top = model.classify(path, top_k=2)[0]
  order = np.argsort(-logits[0])
  assert [p.index for p in top] == list(order[:2])
  assert top[0].name == CLASSES[order[0]]
  assert top[0].probability >= top[1].probability


def test_load_model_names_a_file_that_is_not_an_image(tmp_path,
                                                      tiny_pyramidnet):
  directory = _model_dir(str(tmp_path / "m"), tiny_pyramidnet,
                         averages=False, recorded_decay=0.0)
  model = pyramidnet_tf.load_model(directory)
  text = tmp_path / "notes.txt"
  text.write_text("not an image\n")
  with pytest.raises(image_files.BadFile,
                     match=r"notes.txt: is not an image: text file"):
    model.logits([str(text)])
  with pytest.raises(ValueError, match="use_ema must be"):
    pyramidnet_tf.load_model(directory, use_ema="sometimes")

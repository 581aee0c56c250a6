"""Fine-tuning end to end: an imported model -> train --init_from on an image
folder with another class count -> evaluate / export / predict; and the
fine-tuning flags' errors."""

import json
import os
import shutil

from absl import flags
import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from pyramidnet_tf import train  # pylint: disable=unused-import  (defines the trainer's flags) # noqa: F401
from pyramidnet_tf.cli import train_config
from pyramidnet_tf.data import augment
from pyramidnet_tf.model_dir import best as best_lib
from pyramidnet_tf.model_dir import store as model_io
from tests import torch_pyramidnet
from tests import train_fixtures as fx

FLAGS = flags.FLAGS
TRAIN = "pyramidnet_tf.train"


@pytest.fixture(scope="module")
def source_dir(tmp_path_factory):
  """A random CIFAR-10 PyramidNet-8 a=4 imported through import_torch's
  path (an .npz state_dict): 10 classes, the PyTorch input convention."""
  return torch_pyramidnet.imported_model_dir(
      tmp_path_factory.mktemp("source"), "imported", seed=3)


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory):
  """data_prep.folder output: 3 classes (cat, dog, emu), 20x20 images."""
  root = tmp_path_factory.mktemp("folder")
  rng = np.random.default_rng(0)
  for label, name in enumerate(["cat", "dog", "emu"]):
    (root / "pets" / name).mkdir(parents=True)
    for i in range(10):
      Image.fromarray(fx.class_image(label, 3, 20, rng)).save(
          root / "pets" / name / f"{i}.png")
  out = str(root / "prepared")
  proc = fx.run_cli("data_prep.folder", [f"--source={root / 'pets'}",
                                         f"--output_dir={out}",
                                         "--val_fraction=0.2", "--workers=1"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  return out, str(root / "pets" / "dog" / "0.png")


def _checkpoint(model_dir, step=None):
  """{state_dict key: array} of a model dir's checkpoint (latest or N)."""
  model, _ = model_io.load_model(
      model_dir, None if step is None else os.path.join(model_dir,
                                                        f"ckpt-{step}"))
  return {key: variable.numpy() for key, (variable, _)
          in model.torch_variables().items() if variable is not None}


def test_finetune_an_imported_model_on_a_folder(source_dir, folder_data,
                                                tmp_path):
  data_dir, image = folder_data
  model_dir = str(tmp_path / "run")
  copy = str(tmp_path / "source_copy")
  shutil.copytree(source_dir, copy)
  args = [f"--init_from={copy}", "--freeze=stem",
          "--backbone_lr_scale=0.5", "--image_size=16",
          f"--data_dir={data_dir}", f"--model_dir={model_dir}",
          "--batch_size=8", "--log_every_steps=2", "--steps_per_loop=2",
          "--weight_decay=1e-2", "--checkpoint_every_steps=2"]
  proc = fx.run_cli(TRAIN, args + ["--train_steps=2"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "classes 10 -> 3: new classifier" in proc.stderr
  assert "--freeze=stem: 3 of " in proc.stderr
  result = fx.train_result(proc.stderr)

  source, tuned = _checkpoint(source_dir), _checkpoint(model_dir)
  assert tuned["fc.weight"].shape == (source["fc.weight"].shape[0], 3)
  stem = [k for k in source if k.startswith(("conv1.", "bn1."))]
  assert len(stem) == 5   # kernel, gamma, beta, moving mean and variance
  for key in stem:
    np.testing.assert_array_equal(tuned[key], source[key], err_msg=key)
  for key in ("layer1.0.conv1.weight", "layer3.0.bn3.weight",
              "layer2.0.bn1.running_mean", "bn_final.bias"):
    assert not np.array_equal(tuned[key], source[key]), key

  config = json.load(open(os.path.join(model_dir, "model_config.json")))
  assert config["model"]["depth"] == 8 and config["model"]["num_classes"] == 3
  assert config["metadata"]["class_names"] == ["cat", "dog", "emu"]
  # The source's input convention (PyTorch CIFAR-10 statistics), not the
  # ImageNet statistics an image folder gets by default.
  preprocessing = config["metadata"]["preprocessing"]
  np.testing.assert_allclose(preprocessing["mean"],
                             augment.CIFAR_STATS["cifar10"][0], rtol=1e-6)
  np.testing.assert_allclose(preprocessing["std"],
                             augment.CIFAR_STATS["cifar10"][1], rtol=1e-6)

  proc = fx.run_cli("pyramidnet_tf.evaluate", [f"--model_dir={model_dir}",
                                               f"--data_dir={data_dir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  evaluated = json.loads(proc.stdout)
  assert evaluated["examples"] == 6
  assert evaluated["loss"] == pytest.approx(result["eval"]["loss"], rel=1e-5)
  export_dir = str(tmp_path / "saved")
  proc = fx.run_cli("pyramidnet_tf.export", [f"--model_dir={model_dir}",
                                             f"--export_dir={export_dir}"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  proc = fx.run_cli("pyramidnet_tf.predict", [f"--saved_model={export_dir}",
                                              "--json", image])
  assert proc.returncode == 0, proc.stderr[-3000:]
  top = json.loads(proc.stdout.splitlines()[0])["top5"]
  assert sorted(t["class_name"] for t in top) == ["cat", "dog", "emu"]

  # A restart resumes the run's own checkpoint, not --init_from, which may
  # be gone by then.
  shutil.rmtree(copy)
  proc = fx.run_cli(TRAIN, args + ["--train_steps=4"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "resumed from" in proc.stderr and "not applied" in proc.stderr
  assert "initialised from" not in proc.stderr
  resumed = _checkpoint(model_dir, 4)
  for key in stem:
    np.testing.assert_array_equal(resumed[key], source[key], err_msg=key)
  assert not np.array_equal(resumed["fc.weight"], tuned["fc.weight"])


def _with_best(source_dir, directory, seed):
  """A copy of ``source_dir`` whose best/ checkpoint (step 3) holds other
  weights than its newest ckpt-0, as a trainer's run keeps them; returns
  the best weights ({state_dict key: array})."""
  shutil.copytree(source_dir, directory)
  staging = torch_pyramidnet.imported_model_dir(
      os.path.dirname(directory), f"best{seed}", seed=seed)
  model, _ = model_io.load_model(staging)
  os.makedirs(best_lib.directory_of(directory))
  tf.train.Checkpoint(model=model).write(
      os.path.join(best_lib.directory_of(directory), "ckpt-3"))
  best_lib.write_record(directory, {"checkpoint": "ckpt-3", "step": 3,
                                    "top1_error": 12.5})
  shutil.rmtree(staging)
  return {key: variable.numpy() for key, (variable, _)
          in model.torch_variables().items() if variable is not None}


def test_init_checkpoint_best_starts_from_the_sources_best_evaluation(
    source_dir, folder_data, tmp_path):
  data_dir, _ = folder_data
  source = str(tmp_path / "source")
  best = _with_best(source_dir, source, seed=11)
  newest = _checkpoint(source)
  model_dir = str(tmp_path / "run")
  proc = fx.run_cli(TRAIN, [
      f"--init_from={source}", "--init_checkpoint=best", "--freeze=backbone",
      "--image_size=16", f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=8", "--steps_per_loop=1", "--train_steps=1"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f"initialised from {source}/best/ckpt-3" in proc.stderr, (
      proc.stderr[-3000:])
  tuned = _checkpoint(model_dir)
  backbone = [k for k in best if not k.startswith("fc.")]
  assert len(backbone) > 20
  for key in backbone:   # frozen: exactly the best checkpoint's values
    np.testing.assert_array_equal(tuned[key], best[key], err_msg=key)
  assert not np.array_equal(best["conv1.weight"], newest["conv1.weight"])


def _from_flags(*args):
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(["train", "--model_dir=/nonexistent/m", "--data_dir=/nonexistent/d",
           *args])
    return train_config.from_flags(check_model_dir=False)
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])


def test_architecture_comes_from_the_source_unless_given(source_dir):
  config = _from_flags(f"--init_from={source_dir}", "--freeze=stages:3")
  assert (config.model.depth, config.model.alpha, config.model.bottleneck,
          config.model.dataset) == (8, 4.0, False, "cifar10")
  assert config.finetune.freeze == "stages:3"
  assert config.finetune.init_from == source_dir
  config = _from_flags(f"--init_from={source_dir}", "--depth=8",
                       "--dataset=cifar100")
  assert config.model.depth == 8 and config.model.dataset == "cifar100"


@pytest.mark.parametrize("args,message", [
    (["--freeze=all"], r"--freeze must be one of none, stem, stages:N, "
     r"backbone"),
    (["--freeze=stem"], r"--freeze fine-tunes a pretrained model: it needs "
     r"--init_from"),
    (["--backbone_lr_scale=0.5"], r"--backbone_lr_scale .*needs --init_from"),
    (["--init_from=SRC", "--backbone_lr_scale=0"],
     r"--backbone_lr_scale must be a finite number in \(0, 1\]; got 0"),
    (["--init_from=SRC", "--backbone_lr_scale=1.5"],
     r"--backbone_lr_scale must be a finite number in \(0, 1\]; got 1.5"),
    (["--init_from=SRC", "--freeze=stages:4"],
     r"--freeze=stages:4: a cifar10 PyramidNet has 3 stages"),
    (["--init_from=SRC", "--depth=20"],
     r"--depth=20 but \S+ holds depth 8.*drop these flags"),
    (["--init_from=/nonexistent/src"],
     r"--init_from=/nonexistent/src: .*model_config.json not found"),
    (["--init_checkpoint=best"], r"--init_checkpoint fine-tunes a pretrained "
     r"model: it needs --init_from"),
    (["--init_from=SRC", "--init_checkpoint=best"],
     r"--init_from=\S+: --init_checkpoint=best: \S+ keeps no best "
     r"checkpoint .*omit --init_checkpoint for the newest"),
    (["--init_from=SRC", "--init_checkpoint=ckpt-9"],
     r"--init_checkpoint=ckpt-9: no such checkpoint \(no ckpt-9.index\); "
     r"\S+ has ckpt-0"),
])
def test_bad_fine_tuning_flags_are_one_error_naming_the_flag(
    source_dir, args, message):
  args = [a.replace("SRC", source_dir) for a in args]
  with pytest.raises(train_config.ConfigError, match=message):
    _from_flags(*args)

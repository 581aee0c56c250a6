"""Fault injection: settings that used to change a result without a word.

Fine-tuning from a source trained with dropout and ShakeDrop, describing a
fine-tune flagfile, RandAugment magnitudes past the scale's end, and the
messages of two mistaken command lines. Tiny nets (depth 8, alpha 4, 16x16
CIFAR stem) through the CLIs, as a user runs them.
"""

import json
import os

import pytest

from pyramidnet_tf.data import autoaugment
from tests import torch_pyramidnet
from tests import train_fixtures as fx

TRAIN = "pyramidnet_tf.train"


def _one_error_line(proc, prog=TRAIN) -> str:
  """The whole of stderr's message: exactly one line, a user error."""
  assert proc.returncode not in (0, None), proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  errors = [l for l in lines if l.startswith(f"{prog}: error: ")]
  assert len(errors) == 1 and errors[0] == lines[-1], proc.stderr[-3000:]
  assert "problems with the flags" not in errors[0]
  return errors[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data")),
                          train_per_class=4, eval_per_class=2, size=16)


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
  return fx.write_dataset(str(tmp_path_factory.mktemp("data4")),
                          num_classes=4, train_per_class=4, eval_per_class=2,
                          size=16)


@pytest.fixture(scope="module")
def regularised_source(data_dir, tmp_path_factory):
  """A trainer run of PyramidNet-8 with dropout 0.3 and ShakeDrop."""
  model_dir = str(tmp_path_factory.mktemp("source") / "run")
  fx.clean_exit(fx.run_cli(TRAIN, fx.TINY_MODEL + [
      "--nobottleneck", "--shakedrop", "--drop_rate=0.3",
      f"--data_dir={data_dir}", f"--model_dir={model_dir}",
      "--batch_size=8", "--train_steps=3", "--steps_per_loop=3",
      "--log_every_steps=3", "--eval_every_epochs=0", "--noeval_at_end"]))
  return model_dir


@pytest.fixture(scope="module")
def imported_dir(tmp_path_factory):
  """A directory of import_torch (a random PyramidNet-8 state_dict)."""
  return torch_pyramidnet.imported_model_dir(
      tmp_path_factory.mktemp("imported"), "imported", seed=5)


def _model_section(model_dir):
  with open(os.path.join(model_dir, "model_config.json")) as f:
    return json.load(f)["model"]


def _evaluate(model_dir, data_dir):
  proc = fx.clean_exit(fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}"]))
  return json.loads(proc.stdout[proc.stdout.index("{"):])


def test_fine_tuning_keeps_the_sources_dropout_and_shakedrop(
    faults, regularised_source, data_dir, tmp_path):
  """--freeze=backbone at lr 1e-12 for one step: the same weights, so the
  same evaluation as the source's."""
  model_dir = str(tmp_path / "finetune")
  with faults.inject("fine-tune from a dropout 0.3 + ShakeDrop source"):
    proc = fx.clean_exit(fx.run_cli(TRAIN, [
        f"--init_from={regularised_source}", f"--data_dir={data_dir}",
        f"--model_dir={model_dir}", "--image_size=16", "--freeze=backbone",
        "--lr=1e-12", "--train_steps=1", "--batch_size=8",
        "--eval_every_epochs=0", "--noeval_at_end"]))
    source, tuned = _model_section(regularised_source), _model_section(
        model_dir)
    for name in ("drop_rate", "shakedrop", "shakedrop_pl", "shakedrop_level"):
      assert tuned[name] == source[name], (name, source, tuned)
    before = _evaluate(regularised_source, data_dir)
    after = _evaluate(model_dir, data_dir)
    assert after["top1_error"] == before["top1_error"], (before, after)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-5)
    assert "regularisers: dropout 0.3, ShakeDrop p_L 0.5 (batch)" in (
        proc.stderr), proc.stderr[-3000:]


def test_describe_describes_the_run_its_flags_start(
    faults, regularised_source, four_classes, tmp_path):
  flagfile = tmp_path / "finetune.flags"
  flagfile.write_text(f"--init_from={regularised_source}\n"
                      f"--data_dir={four_classes}\n"
                      f"--model_dir={tmp_path / 'new_run'}\n"
                      "--batch_size=8\n--image_size=16\n")
  with faults.inject("describe: a fine-tune flagfile of a depth-8 source"):
    proc = fx.clean_exit(fx.run_cli("pyramidnet_tf.describe",
                                    [f"--flagfile={flagfile}", "--json"]))
    report = json.loads(proc.stdout)
    assert (report["depth"], report["alpha"], report["bottleneck"]) == (
        8, 4.0, False)
    assert report["num_classes"] == 4          # the data's new classifier
    assert report["image_size"] == 16
    assert report["drop_rate"] == 0.3 and report["shakedrop"]["p_L"] == 0.5
    assert report["memory"]["batch_per_replica"] == 8
    assert any(f"--init_from={regularised_source}" in line
               for line in report["from"]), report["from"]
  with faults.inject("describe: --model_dir of a trained run"):
    proc = fx.clean_exit(fx.run_cli("pyramidnet_tf.describe", [
        f"--model_dir={regularised_source}", "--json"]))
    report = json.loads(proc.stdout)
    assert (report["depth"], report["num_classes"], report["image_size"]) == (
        8, 10, 16)
    assert report["memory"]["batch_per_replica"] == 8   # its batch
    assert report["shakedrop"]["level"] == "batch"
  with faults.inject("describe: --model_dir with a conflicting --depth"):
    line = _one_error_line(fx.run_cli("pyramidnet_tf.describe", [
        f"--model_dir={regularised_source}", "--depth=110"]),
                           "pyramidnet_tf.describe")
    assert f"--depth=110 but {regularised_source} holds depth 8" in line


@pytest.mark.parametrize("magnitude", [11, 14, 20, 30])
def test_randaugment_past_the_scales_end_is_refused(
    faults, magnitude, tmp_path, no_tensorflow):
  # Synthetic data: the magnitude is the command line's only problem.
  args = fx.TINY_MODEL + ["--dataset=synthetic",
                          f"--model_dir={tmp_path / 'run'}",
                          f"--randaugment=2,{magnitude}"]
  with faults.inject(f"train: --randaugment=2,{magnitude}"):
    line = _one_error_line(fx.run_cli(TRAIN, args))
    assert ("0 <= M <= 10 (magnitude on AutoAugment's 0..10 scale, 10 = its "
            "strongest = torchvision's RandAugment magnitude 30") in line
    assert f"got '2,{magnitude}'" in line
    assert not os.path.exists(tmp_path / "run")
    # Refused while flags are checked, before TensorFlow is imported.
    proc = fx.run_cli(TRAIN, args, PYTHONPATH=os.pathsep.join(
        [no_tensorflow, fx.REPO]))
    assert _one_error_line(proc) == line
    with pytest.raises(ValueError, match="0 <= M <= 10"):
      autoaugment.make_policy("none", (2, magnitude))


def test_init_from_with_a_conflicting_depth_is_one_error(
    faults, regularised_source, data_dir, tmp_path):
  with faults.inject("train: --init_from with --depth=20 (fits no unit "
                     "type alone)"):
    line = _one_error_line(fx.run_cli(TRAIN, [
        f"--init_from={regularised_source}", f"--data_dir={data_dir}",
        f"--model_dir={tmp_path / 'run'}", "--depth=20"]))
    assert (f"--depth=20 but {regularised_source} holds depth 8); drop "
            "these flags to take the source's architecture") in line
    assert "invalid model flags" not in line


def test_training_into_an_imported_dir_points_at_init_from(
    faults, imported_dir, data_dir):
  listing = sorted(os.listdir(imported_dir))
  for extra in ([], fx.TINY_MODEL + ["--nobottleneck"]):
    with faults.inject("train: --model_dir is an import_torch directory"
                       + (" (its model flags)" if extra else "")) as fault:
      line = _one_error_line(fx.run_cli(TRAIN, extra + [
          f"--data_dir={data_dir}", f"--model_dir={imported_dir}",
          "--batch_size=8", "--train_steps=1"]))
      assert (f"--model_dir={imported_dir} holds weights imported by "
              "pyramidnet_tf.import_torch (pytorch), not a training run to "
              f"resume: to train from them pass --init_from={imported_dir} "
              "and a new --model_dir") in line, line
      fault.lost = len(set(listing) ^ set(os.listdir(imported_dir)))
      assert fault.lost == 0

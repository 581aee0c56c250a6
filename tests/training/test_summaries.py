"""Chief-only TensorBoard output: the runs, the agreed tags, descriptions."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from pyramidnet_tf.training import summaries


def _accumulator(path: str):
  acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
  acc.Reload()
  return acc


def test_chief_writes_tags_and_non_chief_writes_nothing(tiny_pyramidnet,
                                                        tmp_path):
  chief = summaries.Summaries(str(tmp_path / "chief"), enabled=True)
  other = summaries.Summaries(str(tmp_path / "other"), enabled=False)
  model = tiny_pyramidnet()
  for writer in (chief, other):
    writer.scalars("train", {"loss": 1.5, "learning_rate": 0.1}, 3)
    writer.scalars("eval", {"loss": 2.5, "top1_error": 40.0}, 3)
    writer.images(np.random.default_rng(0).normal(size=(4, 8, 8, 3)), 0)
    writer.histograms(model, 3)
    writer.flags({"depth": 8, "lr_decay_epochs": ["150", "225"]})
    writer.flush()
  assert not (tmp_path / "other").exists()
  train = _accumulator(str(tmp_path / "chief" / "train"))
  tags = set(train.Tags()["tensors"])
  assert {"metrics/loss", "schedule/learning_rate",
          "training_images/augmented"} <= tags
  assert any(t.startswith("batch_norm/") for t in tags)
  loss = train.Tensors("metrics/loss")[0]
  assert loss.step == 3
  assert float(tf.make_ndarray(loss.tensor_proto)) == 1.5
  # Train and eval: the same tag in two runs, so the curves overlay.
  evaluation = _accumulator(str(tmp_path / "chief" / "eval"))
  assert set(evaluation.Tags()["tensors"]) == {"metrics/loss",
                                               "metrics/top1_error"}
  assert float(tf.make_ndarray(
      evaluation.Tensors("metrics/loss")[0].tensor_proto)) == 2.5
  assert "%" in evaluation.SummaryMetadata(
      "metrics/top1_error").summary_description
  # The experiment run holds the flags and hparams, not the scalars.
  experiment = event_accumulator.EventAccumulator(
      str(tmp_path / "chief"), size_guidance={"tensors": 0})
  experiment.Reload()
  assert "flags" in experiment.Tags()["tensors"]
  assert not {"metrics/loss"} & set(experiment.Tags()["tensors"])


def test_every_scalar_has_a_unit_and_a_tag_in_its_group():
  for table in (summaries.TRAIN_SCALARS, summaries.EVAL_SCALARS):
    for name, (tag, description) in table.items():
      assert tag.split("/")[1] == name
      assert any(unit in description for unit in (
          "%", "nats", "Seconds", "per second", "no unit")), (tag, description)
  shared = {n: t for n, (t, _) in summaries.EVAL_SCALARS.items()}
  assert all(summaries.TRAIN_SCALARS[n][0] == t for n, t in shared.items())


def test_a_scalar_without_a_tag_is_an_error(tmp_path):
  writer = summaries.Summaries(str(tmp_path), enabled=False)
  with pytest.raises(ValueError, match="'accuracy'"):
    writer.scalars("eval", {"accuracy": 0.5}, 1)
  with pytest.raises(ValueError, match="'validation'"):
    writer.scalars("validation", {"loss": 0.5}, 1)


def test_no_eval_run_without_evaluation(tmp_path):
  writer = summaries.Summaries(str(tmp_path), enabled=True)
  writer.scalars("train", {"loss": 1.0}, 1)
  writer.flush()
  assert os.listdir(tmp_path) == ["train"]


def test_architecture_settings_sort_first_among_the_hparams():
  names = sorted(summaries.hparam_name(s) for s in (
      "lr", "batch_size", "depth", "alpha", "bottleneck", "mode", "dataset",
      "augment", "image_size", "drop_rate", "shakedrop", "dtype", "seed",
      "num_classes", "rounding", "weight_decay", "cutmix_prob"))
  # The HParams dashboard shows the first five columns by default.
  assert names[:5] == ["arch/alpha", "arch/bottleneck", "arch/dataset",
                       "arch/depth", "arch/mode"]

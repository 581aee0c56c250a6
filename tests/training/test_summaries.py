"""Chief-only TensorBoard output with the agreed tag names."""

import glob

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from pyramidnet_tf.training import summaries


def test_chief_writes_tags_and_non_chief_writes_nothing(tiny_pyramidnet,
                                                        tmp_path):
  chief = summaries.Summaries(str(tmp_path / "chief"), enabled=True)
  other = summaries.Summaries(str(tmp_path / "other"), enabled=False)
  model = tiny_pyramidnet()
  for writer in (chief, other):
    writer.scalars("train", {"loss": 1.5, "learning_rate": 0.1}, 3)
    writer.images("train/augmented_images",
                  np.random.default_rng(0).normal(size=(4, 8, 8, 3)), 0)
    writer.histograms(model, 3)
    writer.flags({"depth": 8, "lr_decay_epochs": ["150", "225"]})
    writer.flush()
  assert not glob.glob(str(tmp_path / "other" / "*"))
  acc = event_accumulator.EventAccumulator(str(tmp_path / "chief"),
                                           size_guidance={"tensors": 0})
  acc.Reload()
  tags = set(acc.Tags()["tensors"])
  assert {"train/loss", "train/learning_rate", "flags",
          "train/augmented_images"} <= tags
  assert any(t.startswith("batch_norm/") for t in tags)
  loss = acc.Tensors("train/loss")[0]
  assert loss.step == 3
  assert float(tf.make_ndarray(loss.tensor_proto)) == 1.5

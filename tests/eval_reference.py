"""Evaluation computed by hand, one record at a time: the reference the
evaluate tool, the library and the EMA tests compare their metrics with."""

from typing import List, Tuple

import numpy as np
import tensorflow as tf

from pyramidnet_tf.data import augment


def logits_by_hand(model, info, split: str, size: int,
                   image_size: int) -> List[Tuple[np.ndarray, int]]:
  """(float64 logits, label) of every record of ``split``, in shard order.

  Args:
    model: the network, called on one CIFAR-preprocessed image at a time.
    info: the data's manifest (``manifest.read_manifest``).
    split: the split whose shards are read.
    size: the stored images' side (raw uint8 pixels, ``write_dataset``).
    image_size: the evaluation size (the image is padded or cropped to it).
  """
  rows = []
  for shard in info.shards(split):
    for record in tf.data.TFRecordDataset(shard.path):
      feature = tf.train.Example.FromString(record.numpy()).features.feature
      image = np.frombuffer(feature["image/encoded"].bytes_list.value[0],
                            np.uint8).reshape(size, size, 3)
      label = feature["image/class/label"].int64_list.value[0]
      x = augment.cifar_eval(tf.constant(image), "cifar10", "pt", image_size)
      rows.append((model(x[None]).numpy()[0].astype(np.float64), int(label)))
  return rows


def top1_error(rows) -> float:
  """Top-1 error in % of ``logits_by_hand``'s rows."""
  return 100.0 * sum(int(np.argmax(l) != y) for l, y in rows) / len(rows)


def mean_loss(rows) -> float:
  """Mean cross entropy of ``logits_by_hand``'s rows."""
  losses = []
  for logits, label in rows:
    shifted = logits - logits.max()
    losses.append(np.log(np.exp(shifted).sum()) - shifted[label])
  return float(np.mean(losses))

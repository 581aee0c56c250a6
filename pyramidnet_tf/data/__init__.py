"""Input: manifest and TFRecord shards to batched tf.data pipelines, per-image augmentation."""

"""Input: a data directory's manifest and shards to batched tf.data pipelines,
and per-image preprocessing and augmentation."""

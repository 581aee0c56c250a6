"""The model-directory contract: weights and model_config.json on disk,
metadata, exclusive use.

``open_model(directory, checkpoint=None, use_ema="no")`` (``store``) is the
one way to open a model directory: the newest intact checkpoint, "best" or
a named one, with its raw or averaged weights. It is looked up on first use,
so importing this package does not import TensorFlow (``access`` is read by
the flag checks).
"""

import importlib


def __getattr__(name):
  if name in ("open_model", "OpenedModel"):
    value = getattr(importlib.import_module("pyramidnet_tf.model_dir.store"),
                    name)
    globals()[name] = value
    return value
  raise AttributeError(
      f"module 'pyramidnet_tf.model_dir' has no attribute {name!r}")

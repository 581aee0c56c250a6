"""TensorFlow for data_prep, imported on first use and without Keras.

Planning a conversion and the main process of a worker pool need no TensorFlow, so it is
imported only where records are written or read. The TensorFlow wheel depends on Keras and
its __init__ imports parts of Keras when Keras is installed; data_prep uses no Keras, so
TensorFlow is imported with `keras` / `tf_keras` hidden (they import normally again
afterwards). PYRAMIDNET_TF_ALLOW_KERAS=1 turns the hiding off.
"""

import os
import sys

_tf_module = None


def tensorflow():
  """The tensorflow module, imported (without Keras) on the first call.

  Returns:
    The module.
  """
  global _tf_module
  if _tf_module is None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    hidden = []
    if "tensorflow" not in sys.modules and os.environ.get("PYRAMIDNET_TF_ALLOW_KERAS") != "1":
      hidden = [name for name in ("keras", "tf_keras") if name not in sys.modules]
    for name in hidden:
      sys.modules[name] = None  # `import keras` raises ImportError while TF imports
    try:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    finally:
      for name in hidden:
        if name in sys.modules and sys.modules[name] is None:
          del sys.modules[name]
    _tf_module = tf
  return _tf_module

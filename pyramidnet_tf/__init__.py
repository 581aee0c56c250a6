"""pyramidnet-tf: PyramidNet in TensorFlow 2 with tf.Module, no Keras.

TensorFlow's wheel depends on Keras and its ``__init__`` eagerly imports
``keras.src.optimizers`` when Keras is installed. Nothing here uses Keras, so
TensorFlow is imported with Keras hidden: no Keras code runs in our process
(and the import is faster). Only that one import is affected: afterwards
``import keras`` works again for anyone who wants it. Set
PYRAMIDNET_TF_ALLOW_KERAS=1 to import TensorFlow untouched.
"""

import os as _os
import sys as _sys

__version__ = "0.1.0"

_KERAS_PACKAGES = ("keras", "tf_keras")


def _import_tensorflow_without_keras():
  if "tensorflow" in _sys.modules or _os.environ.get(
      "PYRAMIDNET_TF_ALLOW_KERAS") == "1":
    return
  hidden = [name for name in _KERAS_PACKAGES if name not in _sys.modules]
  for name in hidden:
    _sys.modules[name] = None  # makes `import name` raise ImportError
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  finally:
    for name in hidden:
      if name in _sys.modules and _sys.modules[name] is None:
        del _sys.modules[name]


_import_tensorflow_without_keras()

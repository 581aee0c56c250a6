"""TensorFlow for data_prep, imported on first use, without Keras or banners.

Planning a conversion and the main process of a worker pool need no TensorFlow, so it is
imported only where records are written or read, through the same guards as the trainer's
(``pyramidnet_tf.tf_import``: Keras hidden while TensorFlow imports, TensorFlow's start-up
banners dropped). PYRAMIDNET_TF_ALLOW_KERAS=1 turns the Keras hiding off.
"""

import os

from pyramidnet_tf import tf_import as guarded_import

_tf_module = None


def tensorflow():
  """The tensorflow module, imported on the first call.

  Returns:
    The module.
  """
  global _tf_module
  if _tf_module is None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with guarded_import.keras_hidden(), guarded_import.banners_dropped():
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
    _tf_module = tf
  return _tf_module

"""pyramidnet-tf: PyramidNet in TensorFlow 2 with tf.Module, no Keras.

Importing the package does not import TensorFlow: the first module that
needs it does, with Keras hidden and TensorFlow's start-up banners dropped
(``tf_import``), so the command-line tools check their flags and answer
``--help`` before TensorFlow's seconds-long start.
"""

from pyramidnet_tf import tf_import as _tf_import

__version__ = "0.1.0"

_tf_import.install()

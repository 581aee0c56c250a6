"""pyramidnet-tf: PyramidNet in TensorFlow 2 with tf.Module, no Keras.

The public Python API:

    from pyramidnet_tf import PyramidNet, count_params, load_model

* ``PyramidNet(dataset, depth, alpha, ...)``: the network
  (``model.network``); ``count_params(module)`` its trainable scalars.
* ``load_model(model_dir, checkpoint=None|"best"|path, use_ema="auto")``: a
  trained or imported model directory as a ``LoadedModel``
  (``serving.inference``):
  the network with its weights, the preprocessing it was trained with and
  its class names, with ``logits``, ``probabilities`` and ``classify`` on
  image files or arrays.
* ``Preprocessing``: how a model prepares images (``data.preprocessing``).

Importing the package does not import TensorFlow: these names are looked up
on first use (module ``__getattr__``), and the first module that needs
TensorFlow imports it, with Keras hidden and TensorFlow's start-up banners
dropped (``tf_import``), so the command-line tools check their flags and
answer ``--help`` before TensorFlow's seconds-long start.
"""

import importlib

from pyramidnet_tf import tf_import as _tf_import

__version__ = "0.1.0"

_tf_import.install()

# Public name -> the module that defines it (imported on first access).
_EXPORTS = {
    "PyramidNet": "pyramidnet_tf.model.network",
    "count_params": "pyramidnet_tf.model.network",
    "load_model": "pyramidnet_tf.serving.inference",
    "LoadedModel": "pyramidnet_tf.serving.inference",
    "Prediction": "pyramidnet_tf.serving.inference",
    "Preprocessing": "pyramidnet_tf.data.preprocessing",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  module = _EXPORTS.get(name)
  if module is None:
    raise AttributeError(f"module 'pyramidnet_tf' has no attribute {name!r}")
  value = getattr(importlib.import_module(module), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))

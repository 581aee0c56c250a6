"""Using a trained network: the library behind export, predict and
``pyramidnet_tf.load_model``.

``inference`` loads a model directory for prediction in Python
(``load_model``); ``export`` writes it as a SavedModel with decoding and
preprocessing inside; ``saved_model`` loads such an export and classifies
image files with it; ``image_files`` identifies image files by their bytes,
for both. Importing this package does not import TensorFlow.
"""

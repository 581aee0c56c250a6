"""Reading the authors' released weights into our network.

``importer`` is the entry point (detects the file format, loads, saves a
model directory). Per format:

* PyTorch: ``pytorch`` (state_dict keys and shapes -> our variables);
  ``imgclsmob`` renames pytorchcv's state_dicts to the authors' keys.
* Torch7: ``torch7_reader`` reads the file's bytes into Python objects,
  ``torch7`` maps that module tree onto a ``structure.Net``.
* Caffe: ``caffe_reader`` parses the file's bytes as protobuf messages,
  ``caffe`` maps that layer graph onto a ``structure.Net``.

``exporter`` writes the other way: a model directory as the authors'
PyTorch checkpoint.

``structure`` holds the format-independent ``Net`` and the one matcher that
checks and loads it into our ``PyramidNet``; ``infer`` reads the
architecture from any format's structure; ``conventions`` the input
preprocessing each source's models expect.
"""

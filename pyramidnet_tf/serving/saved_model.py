"""Loading an export and classifying image files with it: the library of
``predict``.

``load_export`` loads a directory written by ``export`` (its ``classify``
signature checked); ``classify_files`` reads each file on the host
(``image_files.read_image``: identified by its bytes, TIFF converted as
``data_prep.folder`` converts it) and hands it to that signature, so
decoding and preprocessing are the export's. One bad file does not stop the
others: each yields a ``Prediction`` holding either the top classes or why
the file was not classified.
"""

import dataclasses
from typing import Iterator, List, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf import errors as cli
from pyramidnet_tf import paths as paths_lib
from pyramidnet_tf.serving import image_files


def _op_error_reason(error) -> str:
  """The decoder's own words from a TensorFlow error, without the graph
  execution boilerplate around them."""
  for line in (error.message or "").splitlines():
    line = line.strip()
    if (not line or line.startswith(("Graph execution error", "Detected at",
                                      "<stack traces", "[[", "{{"))):
      continue
    return line.split("\t [[")[0].split(" [[")[0].strip()
  return type(error).__name__


def load_export(saved_model: str):
  """The loaded export (its ``classify`` signature checked).

  Args:
    saved_model: --saved_model, a directory written by
      ``pyramidnet_tf.export``.

  Raises:
    cli.UserError: saying what to do when ``saved_model`` is missing, a
      file, a model directory, not a SavedModel, unloadable, or lacks the
      ``classify`` signature.
  """
  problem = paths_lib.saved_model_problem(saved_model)
  if problem:
    raise cli.UserError(problem)
  try:
    loaded = tf.saved_model.load(saved_model)
  except (tf.errors.OpError, OSError, ValueError) as e:
    text = cli.error_text(e) or (
        f"{type(e).__name__}: {str(e).strip().splitlines()[0]}" if str(e)
        else type(e).__name__)
    raise cli.UserError(f"--saved_model={saved_model} cannot be loaded "
                        f"({text}); export it again") from None
  if "classify" not in loaded.signatures:
    raise cli.UserError(
        f"--saved_model={saved_model} has no 'classify' signature "
        f"(signatures: {', '.join(loaded.signatures) or 'none'}); export it "
        "with pyramidnet_tf.export")
  return loaded


@dataclasses.dataclass
class Prediction:
  """One file's outcome: ``top`` [(class_name, class_index, probability)]
  when classified, else ``error`` says why not.

  Attributes:
    path: the file as given on the command line.
    top: the export's top classes, most probable first; None on error.
    error: why the file was not classified (no file name in it); None on
      success.
  """

  path: str
  top: Optional[List[Tuple[str, int, float]]] = None
  error: Optional[str] = None


def classify_files(saved_model: str, paths) -> Iterator[Prediction]:
  """Classifies each of ``paths`` in order; a bad file yields an error and
  the next file is still classified.

  Args:
    saved_model: the export directory (see ``load_export``).
    paths: image file paths.

  Yields:
    One ``Prediction`` per path, in order.

  Raises:
    cli.UserError: from ``load_export``, before the first prediction.
  """
  loaded = load_export(saved_model)  # owns the signature's variables
  classify = loaded.signatures["classify"]
  for path in paths:
    try:
      encoded, kind = image_files.read_image(path)
    except image_files.BadFile as e:
      yield Prediction(path, error=str(e))
      continue
    try:
      out = classify(images=tf.constant([encoded]))
    except tf.errors.InvalidArgumentError as e:
      yield Prediction(path, error=f"corrupt or truncated {kind.upper()} "
                       f"image ({_op_error_reason(e)})")
      continue
    except tf.errors.OpError as e:  # e.g. out of memory on a huge image
      yield Prediction(path, error=f"cannot be classified: "
                       f"{type(e).__name__}: {_op_error_reason(e)}")
      continue
    names = [n.decode() for n in out["class_names"][0].numpy()]
    classes = [int(c) for c in out["classes"][0].numpy()]
    probs = [float(p) for p in out["probabilities"][0].numpy()]
    yield Prediction(path, top=list(zip(names, classes, probs)))

"""Writing a SavedModel of a model directory: the library of ``export``.

``export_model`` opens a model directory (``model_dir.open_model``: the
newest intact checkpoint or the one asked for, raw or EMA weights), wraps
the network in ``build_serving_module`` (decoding and the training run's
evaluation preprocessing inside the graph; signatures ``classify`` on
encoded images and ``logits`` on preprocessed float images) and writes it
with ``write_atomically``: into a temporary directory beside the target,
renamed into place at the end, so the target is never half written. An
existing target is replaced only when it is empty or a previous export;
what an export killed midway leaves (``.<name>.tmp-*``, ``.<name>.old-*``)
is cleaned up by the next export to the same path, but only while no other
export into that directory runs (each holds a shared lock on the directory
while it writes).
"""

import contextlib
import fcntl
import json
import logging
import os
import re
import uuid

import tensorflow as tf

from pyramidnet_tf import errors as cli
from pyramidnet_tf.data import augment
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.model_dir import access as model_dir_lib
from pyramidnet_tf.model_dir import store as model_io

EXPORT_INFO = "pyramidnet_export.json"


def build_serving_module(model, class_names, preprocessing, top_k: int = 5):
  """A tf.Module whose tf.functions are the export's signatures.

  Args:
    model: the ``PyramidNet`` with the weights to export.
    class_names: one name per class, in class-index order.
    preprocessing: the ``Preprocessing`` whose ``eval_image`` and
      ``image_size`` the classify signature uses.
    top_k: classes the classify signature returns (at most
      ``model.num_classes``).

  Returns:
    A module with ``classify`` (encoded image bytes) and ``logits``
    (preprocessed float NHWC) tf.functions; it tracks ``model``'s
    variables and the class names.
  """

  k = min(top_k, model.num_classes)
  size = preprocessing.image_size

  class Serving(tf.Module):
    """Classifier with decoding and eval preprocessing in the graph."""

    def __init__(self):
      super().__init__(name="serving")
      self.model = model
      self.class_names = tf.Variable(list(class_names), trainable=False,
                                     name="class_names")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify(self, images):
      """Top-k classes of a batch of encoded images.

      Args:
        images: [N] string tensor of encoded image files.

      Returns:
        ``classes`` (int32 [N, k]), ``class_names`` (string [N, k]) and
        ``probabilities`` (float32 [N, k]), most probable first.
      """
      def one(encoded):
        image = augment.decode(encoded, tf.constant(""), 0, 0)
        return preprocessing.eval_image(image)
      batch = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(
          [size, size, 3], tf.float32))
      probabilities = tf.nn.softmax(self.model(batch, training=False))
      top = tf.math.top_k(probabilities, k)
      return {"classes": top.indices,
              "class_names": tf.gather(self.class_names, top.indices),
              "probabilities": top.values}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def logits(self, images):
      """Logits of preprocessed images.

      Args:
        images: float32 [N, H, W, 3], normalised as the classify signature
          would.

      Returns:
        ``logits``: float32 [N, num_classes].
      """
      return {"logits": self.model(images, training=False)}
  return Serving()


def _is_export_or_empty(path: str) -> bool:
  names = tf.io.gfile.listdir(path)
  return not names or EXPORT_INFO in names or "saved_model.pb" in names


def _sibling(path: str, tag: str) -> str:
  """A hidden, unique path in the same directory as ``path``."""
  parent, name = os.path.split(path.rstrip("/"))
  return os.path.join(parent, f".{name}.{tag}-{uuid.uuid4().hex[:12]}")


def _remove(path: str) -> None:
  try:
    if tf.io.gfile.exists(path):
      tf.io.gfile.rmtree(path)
  except (tf.errors.OpError, OSError):
    pass  # best effort; the original error is the one to report


def _leftovers(export_dir: str):
  """(temporaries, moved-aside previous exports) that exports of
  ``export_dir`` killed midway left beside it (``_sibling``'s names)."""
  parent, name = os.path.split(export_dir)
  pattern = re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-[0-9a-f]{{12}}$")
  found = {"tmp": [], "old": []}
  for entry in sorted(os.listdir(parent or ".")):
    match = pattern.match(entry)
    if match:
      found[match.group(1)].append(os.path.join(parent, entry))
  return found["tmp"], found["old"]


def _clean_leftovers(export_dir: str) -> None:
  """Removes killed exports' temporaries; puts a moved-aside previous
  export back if ``export_dir`` is missing (else removes it)."""
  temporaries, previous = _leftovers(export_dir)
  for path in previous:
    if not tf.io.gfile.exists(export_dir):
      logging.warning("putting back %s as %s: an export killed while "
                      "replacing it had moved it aside", path, export_dir)
      tf.io.gfile.rename(path, export_dir)
    else:
      logging.warning("removing %s: a previous export an export killed "
                      "midway had moved aside", path)
      tf.io.gfile.rmtree(path)
  for path in temporaries:
    logging.warning("removing %s: left by an export that did not finish",
                    path)
    tf.io.gfile.rmtree(path)


@contextlib.contextmanager
def _exporting_into(export_dir: str):
  """Marks an export into ``export_dir``'s parent while it runs.

  Every export holds a shared flock on the parent directory; one that
  gets it exclusively at its start is the only export there, so it may
  remove what killed exports of ``export_dir`` left (``_clean_leftovers``).
  The kernel drops the lock when a process dies. Remote paths get neither.
  """
  parent = os.path.dirname(export_dir) or "."
  if "://" in export_dir:
    yield
    return
  fd = os.open(parent, os.O_RDONLY)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      alone = True
    except OSError:
      alone = False
    if alone:
      _clean_leftovers(export_dir)
    fcntl.flock(fd, fcntl.LOCK_SH)
    yield
  finally:
    os.close(fd)


def write_atomically(export_dir: str, write) -> None:
  """Calls ``write(tmp_dir)`` and renames ``tmp_dir`` to ``export_dir``.

  ``tmp_dir`` is beside ``export_dir`` (same file system, so the rename is
  atomic on POSIX). On any failure it is removed and ``export_dir`` is left
  as it was; a full disk or a refused write becomes a UserError naming
  ``export_dir``. A previous export at ``export_dir`` is replaced.

  Args:
    export_dir: --export_dir; must be absent, empty or a previous export.
    write: called with the temporary directory's path; writes the export
      into it.

  Raises:
    cli.UserError: if ``export_dir`` is a file or holds something other
      than an export, or the filesystem refuses the write.
  """
  export_dir = export_dir.rstrip("/") or export_dir
  if tf.io.gfile.exists(export_dir):
    if not tf.io.gfile.isdir(export_dir):
      raise cli.FlagError(f"--export_dir={export_dir} is a file; choose a "
                          "directory path")
    if not _is_export_or_empty(export_dir):
      raise cli.FlagError(
          f"--export_dir={export_dir} exists and holds something other than "
          "an export; choose a new directory or empty it (an export would "
          "replace it)")
  tmp = _sibling(export_dir, "tmp")
  try:
    parent = os.path.dirname(export_dir)
    if parent:
      tf.io.gfile.makedirs(parent)
    with _exporting_into(export_dir):
      _write_and_rename(export_dir, tmp, write)
  except BaseException as e:
    _remove(tmp)
    problem = cli.storage_problem(e)
    if problem is None:
      raise
    _, reason, no_space = problem
    raise cli.UserError(
        f"cannot write --export_dir={export_dir}: {reason}; nothing was "
        "written" +
        (" and the previous export is unchanged"
         if tf.io.gfile.exists(export_dir) else "") +
        ("; free some space or choose another --export_dir" if no_space else
         "; check the directory's owner and mode or choose another "
         "--export_dir")) from e


def _write_and_rename(export_dir: str, tmp: str, write) -> None:
  """``write(tmp)``, then ``tmp`` renamed to ``export_dir`` (a previous
  export moved aside meanwhile, and removed once the rename succeeded)."""
  write(tmp)
  if tf.io.gfile.exists(export_dir):
    old = _sibling(export_dir, "old")
    tf.io.gfile.rename(export_dir, old)
    try:
      tf.io.gfile.rename(tmp, export_dir)
    except BaseException:
      tf.io.gfile.rename(old, export_dir)
      raise
    _remove(old)
  else:
    tf.io.gfile.rename(tmp, export_dir)


def export_model(model_dir: str, export_dir: str, data_dir=None, checkpoint=None,
           image_size: int = 0, convention: str = "pt", top_k: int = 5,
           use_ema: str = "auto"):
  """Writes the SavedModel of ``model_dir`` to ``export_dir``; returns it.

  Args:
    model_dir: a model directory written by the trainer or import_torch.
    export_dir: where the SavedModel goes (see ``write_atomically``).
    data_dir: a data directory whose manifest supplies class names (and
      the data kind for preprocessing) when the model dir records none;
      None for none.
    checkpoint: a checkpoint prefix to export; None for the newest
      intact one (``store.open_model``).
    image_size: serving image side in pixels; 0 = the training run's.
    convention: CIFAR normalisation, "pt" or "fb", for model dirs that do
      not record their preprocessing.
    top_k: classes the classify signature returns, >= 1.
    use_ema: "auto", "yes" or "no": export the EMA of the weights
      (``ema.should_use``).

  Raises:
    cli.UserError: for a bad ``top_k`` or ``image_size``, or an export
      directory that cannot be written.
    FileNotFoundError: if ``model_dir`` has no config or the checkpoint is
      missing.
    ValueError: for a damaged ``checkpoint``, a directory without an intact
      one, a bad ``use_ema``, or ``use_ema="yes"`` on a checkpoint without
      EMA weights.
  """

  cli.check_number("top_k", top_k, 1, integer=True)
  config = model_io.read_config(model_dir)
  cli.check_image_size("image_size", image_size,
                       config["model"].get("dataset", "cifar10"),
                       "the training run's size")
  # The newest intact checkpoint (damaged newer ones skipped with a
  # warning), or --checkpoint, which must exist and be intact.
  opened = model_io.open_model(model_dir, checkpoint, use_ema=use_ema)
  model, metadata, checkpoint = (opened.model, opened.metadata,
                                 opened.checkpoint)
  averaged = opened.ema
  info = manifest_lib.read_manifest(data_dir) if data_dir else None
  preprocessing = model_dir_lib.preprocessing_of(
      metadata, config["model"], image_size, convention, info)
  if image_size:
    preprocessing = preprocessing_lib.Preprocessing.from_json(
        dict(preprocessing.to_json(), image_size=image_size))
  class_names = model_dir_lib.class_names_of(metadata, model.num_classes,
                                             info)
  serving = build_serving_module(model, class_names, preprocessing, top_k)

  def write(directory):
    tf.saved_model.save(serving, directory, signatures={
        "serving_default": serving.classify,
        "classify": serving.classify,
        "logits": serving.logits,
    })
    with tf.io.gfile.GFile(os.path.join(directory, "class_names.txt"),
                           "w") as f:
      f.write("\n".join(class_names) + "\n")
    with tf.io.gfile.GFile(os.path.join(directory, EXPORT_INFO), "w") as f:
      json.dump({"model": config["model"],
                 "preprocessing": preprocessing.to_json(),
                 "source_model_dir": model_dir,
                 "checkpoint": checkpoint, "ema": averaged}, f, indent=2)
  write_atomically(export_dir, write)
  return export_dir

"""Classifies image files with an exported SavedModel; prints the top 5.

    python -m pyramidnet_tf.predict --saved_model=EXPORT_DIR a.jpg b.png

Every file is read and identified on the host by its first bytes (never by
its name), then handed to the export's ``classify`` signature, so decoding
and preprocessing are those of the export:

* JPEG, PNG, GIF (first frame), BMP, WebP (and JPEG XL, which TensorFlow's
  decoder reads): the bytes as they are; the SavedModel decodes them.
* TIFF: TensorFlow has no TIFF decoder, so the file is converted on the host
  exactly as ``data_prep.folder`` converts it (``data_prep.images.prepare``:
  Pillow decode, RGB, JPEG quality 95), i.e. into the pixels a model trained
  on a folder of such files saw. Together with the formats above this is
  everything ``data_prep.folder`` accepts.

One bad file does not stop the others: every good file is classified and
printed in argument order; each bad file gets one line on stderr naming it
and why (does not exist, is a directory, is not an image and what its bytes
look like, an unsupported image format, or a corrupt/truncated image). A
directory is reported rather than walked: a shell glob (``DIR/*``) says
exactly which files to classify, whereas walking would silently pick up
whatever else lives there. Exit status: 0 when every file was classified,
1 when any file failed (after all files were tried) or when --saved_model
cannot be used.
"""

import dataclasses
import json
import os
import sys
from typing import Iterator, List, Optional, Tuple

from absl import flags

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import paths as paths_lib
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import usage

flags.DEFINE_string("saved_model", None,
                    "Directory written by pyramidnet_tf.export.")
flags.DEFINE_bool("json", False, "Print one JSON object per image instead "
                  "of text.")

FLAGS = flags.FLAGS
PROG = "pyramidnet_tf.predict"

# Formats the SavedModel's classify signature decodes itself (the kinds of
# data_prep.images.sniff, plus JPEG XL which that sniffer does not know).
NATIVE_FORMATS = ("jpeg", "png", "gif", "bmp", "webp", "jpeg xl")
# Formats predict converts on the host first, as data_prep.folder does.
HOST_FORMATS = ("tiff",)
ACCEPTED = "JPEG, PNG, GIF, BMP, WebP, TIFF"

# Image formats recognised by their magic bytes but read by neither path.
_OTHER_IMAGES = (
    (lambda d: d[4:12] in (b"ftypheic", b"ftypheix", b"ftyphevc",
                           b"ftypmif1", b"ftypmsf1"), "HEIC/HEIF"),
    (lambda d: d[4:12] in (b"ftypavif", b"ftypavis"), "AVIF"),
    (lambda d: d[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n"
     or d[:4] == b"\xff\x4f\xff\x51", "JPEG 2000"),
    (lambda d: d[:4] == b"8BPS", "Photoshop PSD"),
    (lambda d: d[:4] == b"\x00\x00\x01\x00", "Windows ICO"),
    (lambda d: d[:4] == b"qoif", "QOI"),
    (lambda d: d[:4] == b"DDS ", "DirectDraw DDS"),
    (lambda d: len(d) > 2 and d[:1] == b"P" and d[1:2] in b"123456"
     and d[2:3] in b" \t\r\n", "Netpbm (PBM/PGM/PPM)"),
)
# Other common contents, for "is not an image: ...".
_NOT_IMAGES = (
    (b"%PDF", "PDF document"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"BZh", "bzip2 data"),
    (b"\xfd7zXZ\x00", "xz data"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\x7fELF", "ELF executable"),
    (b"\x80\x02", "Python pickle"), (b"\x80\x03", "Python pickle"),
    (b"\x80\x04", "Python pickle"), (b"\x80\x05", "Python pickle"),
    (b"\x93NUMPY", "NumPy array"),
    (b"RIFF", "RIFF data (WAV/AVI, not WebP)"),
    (b"OggS", "Ogg media"),
    (b"ID3", "MP3 audio"),
    (b"\x1aE\xdf\xa3", "Matroska/WebM video"),
)


class BadFile(Exception):
  """A file that cannot be classified; the message says why."""


def _sniff(data: bytes) -> Optional[str]:
  from data_prep import images  # pylint: disable=g-import-not-at-top
  kind = images.sniff(data)
  if kind is None and (data[:2] == b"\xff\x0a" or
                       data[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
    kind = "jpeg xl"
  return kind


def _looks_like_text(data: bytes) -> bool:
  try:
    text = data[:512].decode("utf-8")
  except UnicodeDecodeError:
    return False
  return all(c.isprintable() or c in "\t\r\n" for c in text)


def what_is(data: bytes) -> Tuple[str, bool]:
  """(what the bytes are, whether that is an image format) for a file that
  is not one of the accepted formats.

  Args:
    data: the file's contents (the first 1024 bytes are enough).

  Returns:
    A short description for messages, e.g. "AVIF image" or "PDF document",
    and True when it names an image format predict does not read.
  """
  if not data:
    return "empty file", False
  for test, name in _OTHER_IMAGES:
    if test(data):
      return f"{name} image", True
  head = data[:1024].lstrip().lower()
  if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head:
    return "SVG image", True
  if head.startswith((b"<!doctype html", b"<html")):
    return "HTML document", False
  if head.startswith(b"<?xml"):
    return "XML document", False
  for magic, name in _NOT_IMAGES:
    if data.startswith(magic):
      return name, False
  if data[4:8] == b"ftyp":
    return "ISO media file (MP4/MOV)", False
  if _looks_like_text(data):
    return "text file", False
  return f"unknown bytes {data[:8].hex(' ')}", False


def read_image(path: str) -> Tuple[bytes, str]:
  """(bytes for the classify signature, detected format) of one file.

  Args:
    path: a local file path.

  Returns:
    The file's own bytes for the natively decoded formats, or a JPEG
    re-encoding for TIFF; and the format's name from ``NATIVE_FORMATS`` or
    ``HOST_FORMATS``.

  Raises:
    BadFile: naming why the file cannot be classified.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise BadFile("does not exist") from None
  except IsADirectoryError:
    raise BadFile(f"is a directory (predict takes image files; pass "
                  f"{os.path.join(path, '*')} for the images in it)") from None
  except PermissionError:
    raise BadFile("cannot be read: permission denied") from None
  except OSError as e:
    raise BadFile(f"cannot be read: {e.strerror or e}") from None
  kind = _sniff(data)
  if kind in NATIVE_FORMATS:
    return data, kind
  if kind in HOST_FORMATS:
    from data_prep import images  # pylint: disable=g-import-not-at-top
    prepared = images.prepare(data)
    if prepared.status == images.REJECTED:
      raise BadFile(f"corrupt or truncated {kind.upper()} image "
                    f"({prepared.reason})")
    return prepared.encoded, kind
  what, is_image = what_is(data)
  if is_image:
    raise BadFile(f"unsupported image format: {what} (predict reads "
                  f"{ACCEPTED}; convert it to one of them, e.g. PNG)")
  raise BadFile(f"is not an image: {what}")


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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
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


def predict(saved_model: str, paths) -> Iterator[Prediction]:
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
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for path in paths:
    try:
      encoded, kind = read_image(path)
    except BadFile as e:
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


def _print(prediction: Prediction, as_json: bool) -> None:
  if as_json:
    print(json.dumps({"image": prediction.path, "top5": [
        {"class_name": n, "class": c, "probability": p}
        for n, c, p in prediction.top]}), flush=True)
  else:
    lines = [prediction.path] + [
        f"  {rank}. {name} (class {index}) {prob:.4f}"
        for rank, (name, index, prob) in enumerate(prediction.top, 1)]
    print("\n".join(lines), flush=True)


def main(argv):
  """Classifies the files named after the flags and prints the results.

  Args:
    argv: absl's remaining arguments: the program name, then image paths.

  Raises:
    cli.UserError: without --saved_model or image paths, or when the
      export cannot be used.
    SystemExit: with status 1 after all files, if any could not be
      classified.
  """
  paths = argv[1:]
  if not FLAGS.saved_model:
    raise cli.FlagError("--saved_model is required (an export_dir written by"
                        " pyramidnet_tf.export)")
  if not paths:
    raise cli.FlagError("give one or more image files after the flags")
  # Before TensorFlow loads the export (seconds): what is wrong on disk.
  problems = [p for p in [paths_lib.saved_model_problem(FLAGS.saved_model)]
              if p]
  missing = paths_lib.missing_files(paths)
  if len(missing) == len(paths):
    problems += missing
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  failed = 0
  for prediction in predict(FLAGS.saved_model, paths):
    if prediction.error is not None:
      failed += 1
      print(f"{PROG}: {prediction.path}: {prediction.error}", file=sys.stderr,
            flush=True)
    else:
      _print(prediction, FLAGS.json)
  if failed:
    sys.exit(f"{PROG}: {failed} of {len(paths)} files could not be "
             "classified (see above)")


def run():
  """The console entry point: parses flags and runs ``main`` guarded."""
  console.run(PROG, main, doc=__doc__, groups=usage.PREDICT_GROUPS,
              knobs=usage.PREDICT_KNOBS)


if __name__ == "__main__":
  run()

"""Image files as the tools read them: identified by their bytes, never by
their names.

``predict`` and ``pyramidnet_tf.load_model(...).logits`` read image files
through ``read_image``, so a model classifies a file alike from the command
line and from Python:

* JPEG, PNG, GIF (first frame), BMP, WebP (and JPEG XL, which TensorFlow's
  decoder reads): the bytes as they are, for ``tf.io.decode_image``.
* TIFF: TensorFlow has no TIFF decoder, so the file is converted on the host
  exactly as ``data_prep.folder`` converts it (``pyramidnet_tf.images.prepare``:
  Pillow decode, RGB, JPEG quality 95), i.e. into the pixels a model trained
  on a folder of such files saw.

Anything else raises ``BadFile`` with what the bytes look like (another
image format, a PDF, a text file, ...). No TensorFlow import here.
"""

import os
from typing import Optional, Tuple

from pyramidnet_tf import images

# Formats the SavedModel's classify signature decodes itself (the kinds of
# pyramidnet_tf.images.sniff, plus JPEG XL which that sniffer does not know).
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


def sniff(data: bytes) -> Optional[str]:
  """The image format of ``data`` from its first bytes, or None.

  Args:
    data: a file's contents.

  Returns:
    One of ``NATIVE_FORMATS`` or ``HOST_FORMATS``, or None.
  """
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


def read_image(path: str, reader: str = "predict") -> Tuple[bytes, str]:
  """(bytes TensorFlow decodes, detected format) of one image file.

  Args:
    path: a local file path.
    reader: who reads it, for the messages ("predict takes image files").

  Returns:
    The file's own bytes for the natively decoded formats, or a JPEG
    re-encoding for TIFF; and the format's name from ``NATIVE_FORMATS`` or
    ``HOST_FORMATS``.

  Raises:
    BadFile: naming why the file cannot be read as an image.
  """
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    raise BadFile("does not exist") from None
  except IsADirectoryError:
    raise BadFile(f"is a directory ({reader} takes image files; pass "
                  f"{os.path.join(path, '*')} for the images in it)") from None
  except PermissionError:
    raise BadFile("cannot be read: permission denied") from None
  except OSError as e:
    raise BadFile(f"cannot be read: {e.strerror or e}") from None
  return image_bytes(data, reader)


def image_bytes(data: bytes, reader: str = "predict") -> Tuple[bytes, str]:
  """(bytes TensorFlow decodes, detected format) of an image file's
  contents: ``read_image`` without the reading.

  Args:
    data: the contents of an image file.
    reader: who reads it, for the messages ("predict reads JPEG, ...").

  Raises:
    BadFile: naming what the bytes are when they are not a readable image.
  """
  kind = sniff(data)
  if kind in NATIVE_FORMATS:
    return data, kind
  if kind in HOST_FORMATS:
    prepared = images.prepare(data)
    if prepared.status == images.REJECTED:
      raise BadFile(f"corrupt or truncated {kind.upper()} image "
                    f"({prepared.reason})")
    return prepared.encoded, kind
  what, is_image = what_is(data)
  if is_image:
    raise BadFile(f"unsupported image format: {what} ({reader} reads "
                  f"{ACCEPTED}; convert it to one of them, e.g. PNG)")
  raise BadFile(f"is not an image: {what}")

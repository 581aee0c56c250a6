"""Image bytes in, clean RGB JPEG bytes out: content sniffing, header-only sizes, repair.

Every image that data_prep writes for ImageNet and for image folders is a baseline or
progressive, 8-bit, 3-component (RGB/YCbCr) JPEG that ends with its end-of-image marker, so a
reader decodes every record the same way:

    image = tf.io.decode_jpeg(features["image/encoded"], channels=3)     # uint8 [h, w, 3]
    # or tf.image.decode_and_crop_jpeg(encoded, crop_window, channels=3)

and `image/height` / `image/width` are the decoded image's size (EXIF orientation is not
applied, by data_prep or by TensorFlow).

`prepare(data)` decides by content, never by file name:

* clean: a JPEG whose header (read without decoding, so at thousands of images/s per core)
  says 8-bit, 3 components, baseline/extended/progressive Huffman coding, non-zero size, and
  whose bytes end with the end-of-image marker. The bytes are written untouched.
* repaired: anything PIL can fully decode that is not clean: CMYK/YCCK JPEGs, grayscale
  JPEGs, 12-bit/lossless/arithmetic-coded JPEGs, PNG/GIF/BMP/WebP/TIFF content (whatever
  the file is called), JPEGs with bytes after the end-of-image marker (these are trimmed
  instead, losslessly). Re-encoded as RGB JPEG at quality `REPAIR_JPEG_QUALITY`; alpha is
  dropped (as tf.io.decode_png(channels=3) does), 16-bit samples are scaled to 8 bits, and
  animated images keep their first frame. The reason names what was wrong.
* rejected: empty files, unrecognised content, JPEGs without an end-of-image marker
  (truncated), and anything else that fails to decode (a corrupt PNG); the reason carries
  the decoder's message.
"""

import dataclasses
import io
import struct
import warnings
from typing import Optional

import numpy as np
from PIL import Image

REPAIR_JPEG_QUALITY = 95

CLEAN = "clean"
REPAIRED = "repaired"
REJECTED = "rejected"

_SOF_MARKERS = {
    0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
    0xC5: "differential sequential", 0xC6: "differential progressive",
    0xC7: "differential lossless", 0xC9: "arithmetic-coded sequential",
    0xCA: "arithmetic-coded progressive", 0xCB: "arithmetic-coded lossless",
    0xCD: "arithmetic-coded differential sequential",
    0xCE: "arithmetic-coded differential progressive",
    0xCF: "arithmetic-coded differential lossless",
}
_CLEAN_SOF = (0xC0, 0xC1, 0xC2)
_EOI = b"\xff\xd9"


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What to write for one input image (or why it is rejected)."""

  status: str                 # CLEAN, REPAIRED or REJECTED
  encoded: bytes = b""        # JPEG bytes to write (empty when rejected)
  height: int = 0
  width: int = 0
  reason: str = ""            # why it was repaired or rejected; empty when clean


@dataclasses.dataclass(frozen=True)
class JpegHeader:
  height: int
  width: int
  components: int
  precision: int
  sof: int                    # the SOFn marker byte, 0xC0..0xCF
  adobe_transform: Optional[int]
  scan_offset: int            # offset of the first SOS marker


class JpegHeaderError(ValueError):
  pass


def sniff(data: bytes) -> Optional[str]:
  """The container format from the magic bytes: jpeg, png, gif, bmp, webp, tiff or None."""
  if data[:3] == b"\xff\xd8\xff":
    return "jpeg"
  if data[:8] == b"\x89PNG\r\n\x1a\n":
    return "png"
  if data[:6] in (b"GIF87a", b"GIF89a"):
    return "gif"
  if data[:2] == b"BM" and len(data) >= 26:
    return "bmp"
  if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
    return "webp"
  if data[:4] in (b"II*\x00", b"MM\x00*"):
    return "tiff"
  return None


def jpeg_header(data: bytes) -> JpegHeader:
  """Reads the frame header of a JPEG without decoding any pixels.

  Walks the marker segments from SOI to the first SOS. Raises JpegHeaderError if the marker
  structure is broken or the data ends before the first scan.
  """
  n = len(data)
  if data[:2] != b"\xff\xd8":
    raise JpegHeaderError("no JPEG start-of-image marker")
  i = 2
  frame = None
  adobe = None
  while True:
    if i >= n:
      raise JpegHeaderError(f"data ends at byte {n} before the first scan")
    if data[i] != 0xFF:
      raise JpegHeaderError(f"expected a marker at byte {i}, found 0x{data[i]:02x}")
    while i < n and data[i] == 0xFF:  # fill bytes
      i += 1
    if i >= n:
      raise JpegHeaderError(f"data ends at byte {n} inside a marker")
    marker = data[i]
    i += 1
    if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # TEM, RSTn, SOI: no length
      continue
    if marker == 0xD9:
      raise JpegHeaderError("end-of-image marker before any scan")
    if i + 2 > n:
      raise JpegHeaderError(f"data ends at byte {n} inside a segment header")
    length = (data[i] << 8) | data[i + 1]
    if length < 2 or i + length > n:
      raise JpegHeaderError(
          f"segment 0xff{marker:02x} at byte {i - 2} claims {length} bytes; "
          f"the data ends at {n}")
    if marker == 0xDA:
      if frame is None:
        raise JpegHeaderError("scan before any frame header")
      precision, height, width, components, sof = frame
      return JpegHeader(height, width, components, precision, sof, adobe, i - 2)
    if marker in _SOF_MARKERS:
      if length < 8:
        raise JpegHeaderError(f"frame header of {length} bytes is too short")
      frame = struct.unpack_from(">BHHB", data, i + 2) + (marker,)
    elif marker == 0xEE and length >= 14 and data[i + 2:i + 7] == b"Adobe":
      adobe = data[i + 13]
    i += length


def _find_eoi(data: bytes, start: int) -> int:
  """Offset of the end-of-image marker at or after the scan at `start`, or -1.

  Inside entropy-coded data 0xff is followed by 0x00 (stuffing) or RSTn; any other 0xffXX is
  a marker, and the segments between progressive scans (DHT, DQT, SOS, ...) are skipped by
  their length so that table bytes are never mistaken for a marker.
  """
  n = len(data)
  i = start
  while True:
    j = data.find(b"\xff", i)
    if j < 0 or j + 1 >= n:
      return -1
    marker = data[j + 1]
    if marker == 0x00 or marker == 0xFF or 0xD0 <= marker <= 0xD7:
      i = j + 1
      continue
    if marker == 0xD9:
      return j
    if j + 4 > n:
      return -1
    i = j + 2 + ((data[j + 2] << 8) | data[j + 3])


def _clean_problem(header: JpegHeader) -> Optional[str]:
  """Why a JPEG with this header cannot be written as is, or None."""
  if header.components == 4:
    return "YCCK JPEG" if header.adobe_transform == 2 else "CMYK JPEG"
  if header.components == 1:
    return "grayscale JPEG"
  if header.components != 3:
    return f"{header.components}-component JPEG"
  if header.precision != 8:
    return f"{header.precision}-bit JPEG"
  if header.sof not in _CLEAN_SOF:
    return f"{_SOF_MARKERS[header.sof]} JPEG"
  if header.height == 0 or header.width == 0:
    return "JPEG with its size defined after the first scan (DNL marker)"
  return None


def _decode(data: bytes) -> Image.Image:
  """Fully decodes with PIL (truncated data is an error); returns the first frame."""
  with warnings.catch_warnings():
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    image = Image.open(io.BytesIO(data))
    image.load()
  return image


def _to_rgb(image: Image.Image) -> Image.Image:
  if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    array = np.asarray(image).astype(np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    array = np.clip(np.rint(array * (255.0 / top)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array, "L")
  elif image.mode == "F":
    array = np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8)
    image = Image.fromarray(array, "L")
  if image.mode == "P" and "transparency" in image.info:
    image = image.convert("RGBA")
  return image.convert("RGB")


def encode_jpeg(image: Image.Image) -> bytes:
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=REPAIR_JPEG_QUALITY)
  return out.getvalue()


def _reencode(data: bytes, problem: str, kind: str) -> Prepared:
  try:
    image = _decode(data)
    frames = getattr(image, "n_frames", 1)
    rgb = _to_rgb(image)
  except Exception as e:  # PIL raises many types for bad data.
    return Prepared(REJECTED, reason=f"{problem}: cannot decode: {type(e).__name__}: {e}")
  reason = f"{problem} re-encoded as RGB JPEG"
  if frames > 1:
    reason += f" (first of {frames} frames kept)"
  width, height = rgb.size
  return Prepared(REPAIRED, encode_jpeg(rgb), height, width, reason)


def prepare(data: bytes) -> Prepared:
  """Decides how to write one image; see the module docstring."""
  if not data:
    return Prepared(REJECTED, reason="empty file")
  kind = sniff(data)
  if kind is None:
    return Prepared(REJECTED,
                    reason=f"not a recognised image (first bytes: {data[:12].hex(' ')})")
  if kind != "jpeg":
    return _reencode(data, f"{kind.upper()} data", kind)
  try:
    header = jpeg_header(data)
  except JpegHeaderError as e:
    return _reencode(data, f"JPEG with a broken header ({e})", kind)
  problem = _clean_problem(header)
  if problem is not None:
    return _reencode(data, problem, kind)
  if data.endswith(_EOI):
    return Prepared(CLEAN, data, header.height, header.width)
  # No end-of-image marker at the very end: trailing bytes after it, or truncated data.
  end = _find_eoi(data, header.scan_offset)
  if end >= 0:
    trimmed = data[:end + 2]
    try:
      _decode(trimmed)
    except Exception as e:
      return Prepared(REJECTED, reason=f"corrupt JPEG: {type(e).__name__}: {e}")
    return Prepared(REPAIRED, trimmed, header.height, header.width,
                    f"removed {len(data) - len(trimmed)} bytes after the JPEG end-of-image "
                    "marker (lossless)")
  # No end-of-image marker anywhere after the scan: the data stops early. (Appending the
  # marker would make decoders fill the missing rows with gray instead of failing, so this
  # is never "repaired".)
  try:
    _decode(data)
    detail = ""
  except Exception as e:
    detail = f": {type(e).__name__}: {e}"
  return Prepared(REJECTED, reason=f"truncated JPEG ({len(data)} bytes, no end-of-image "
                  f"marker){detail}")


def jpeg_is_clean(data: bytes) -> Optional[str]:
  """None when `data` is a JPEG that data_prep would write untouched, else why it is not."""
  if sniff(data) != "jpeg":
    return "not JPEG data"
  try:
    header = jpeg_header(data)
  except JpegHeaderError as e:
    return f"broken JPEG header: {e}"
  problem = _clean_problem(header)
  if problem is not None:
    return problem
  if not data.endswith(_EOI):
    return "does not end with the JPEG end-of-image marker"
  return None

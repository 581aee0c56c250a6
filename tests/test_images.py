"""pyramidnet_tf.images: sniffing by content, header-only sizes, repair and rejection."""

import io

import numpy as np
import pytest
from PIL import Image

from pyramidnet_tf import images
from tests import data_prep_fixtures as fx


def _decoded(data: bytes) -> np.ndarray:
  image = Image.open(io.BytesIO(data))
  image.load()
  return np.asarray(image)


@pytest.mark.parametrize("data,kind", [
    (fx.jpeg(), "jpeg"),
    (fx.png(), "png"),
    (fx.encode(fx.pixels(8, 8, 0), "GIF"), "gif"),
    (fx.encode(fx.pixels(8, 8, 0), "BMP"), "bmp"),
    (fx.encode(fx.pixels(8, 8, 0), "WEBP"), "webp"),
    (fx.encode(fx.pixels(8, 8, 0), "TIFF"), "tiff"),
    (b"hello world, not an image", None),
    (b"", None),
])
def test_sniff_by_content(data, kind):
  assert images.sniff(data) == kind


@pytest.mark.parametrize("height,width,kw", [
    (24, 32, {}), (375, 500, {}), (1, 1, {}), (33, 17, {"progressive": True}),
    (40, 30, {"subsampling": 0}),
])
def test_header_size_matches_tensorflow_decode(height, width, kw):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  data = fx.encode(fx.pixels(height, width, 7), "JPEG", quality=85, **kw)
  header = images.jpeg_header(data)
  assert (header.height, header.width, header.components) == (height, width, 3)
  assert tuple(tf.io.decode_jpeg(data, channels=3).shape) == (height, width, 3)


def test_header_reports_components_of_gray_and_cmyk():
  assert images.jpeg_header(fx.gray_jpeg()).components == 1
  header = images.jpeg_header(fx.cmyk_jpeg())
  assert header.components == 4 and header.adobe_transform is not None


def test_clean_jpeg_is_written_untouched_without_decoding(monkeypatch):
  data = fx.jpeg(48, 64, seed=3)

  def no_decode(_):
    raise AssertionError("a clean JPEG must not be decoded")
  monkeypatch.setattr(images, "_decode", no_decode)
  prepared = images.prepare(data)
  assert prepared.status == images.CLEAN
  assert prepared.encoded is data
  assert (prepared.height, prepared.width) == (48, 64)
  assert prepared.reason == ""


@pytest.mark.parametrize("kind,reason", [
    ("cmyk", "CMYK JPEG re-encoded as RGB JPEG"),
    ("gray", "grayscale JPEG re-encoded as RGB JPEG"),
    ("png", "PNG data re-encoded as RGB JPEG"),
])
def test_repairs_produce_clean_rgb_jpeg(kind, reason):
  data = fx.special_bytes(kind)
  prepared = images.prepare(data)
  assert prepared.status == images.REPAIRED
  assert prepared.reason == reason
  assert images.jpeg_is_clean(prepared.encoded) is None
  decoded = _decoded(prepared.encoded)
  assert decoded.shape == (prepared.height, prepared.width, 3)
  original = Image.open(io.BytesIO(data))
  assert (prepared.width, prepared.height) == original.size


def test_png_repair_keeps_the_pixels():
  array = fx.pixels(40, 56, seed=11)
  prepared = images.prepare(fx.encode(array, "PNG"))
  error = _decoded(prepared.encoded).astype(float) - array
  psnr = 10 * np.log10(255.0 ** 2 / np.mean(error ** 2))
  assert psnr > 30, psnr


def test_grayscale_repair_keeps_the_gray_levels():
  gray = Image.fromarray(fx.pixels(30, 30, seed=5)).convert("L")
  data = io.BytesIO()
  gray.save(data, "JPEG", quality=95)
  prepared = images.prepare(data.getvalue())
  decoded = _decoded(prepared.encoded).astype(int)
  reference = _decoded(data.getvalue()).astype(int)
  for channel in range(3):
    assert np.abs(decoded[..., channel] - reference).mean() < 2.0


@pytest.mark.parametrize("fmt,mode", [("BMP", None), ("GIF", None), ("WEBP", None),
                                      ("TIFF", None), ("PNG", "RGBA"), ("PNG", "P")])
def test_other_formats_are_converted(fmt, mode):
  data = fx.encode(fx.pixels(21, 13, seed=2), fmt, mode=mode)
  prepared = images.prepare(data)
  assert prepared.status == images.REPAIRED
  assert prepared.reason.startswith(f"{images.sniff(data).upper()} data")
  assert _decoded(prepared.encoded).shape == (21, 13, 3)


def test_sixteen_bit_png_is_scaled_not_clipped():
  array = (np.arange(64 * 8, dtype=np.uint16).reshape(8, 64) * 128)  # 0 .. 65408
  out = io.BytesIO()
  Image.fromarray(array).save(out, "PNG")
  assert Image.open(io.BytesIO(out.getvalue())).mode.startswith("I")
  decoded = _decoded(images.prepare(out.getvalue()).encoded).astype(int)
  expected = np.rint(array / 257.0)
  assert np.abs(decoded[..., 0] - expected).mean() < 3
  assert decoded.max() > 200  # clipping would have made nearly everything 255


def test_animated_gif_keeps_first_frame_and_says_so():
  frames = [Image.fromarray(fx.pixels(16, 16, seed=s)) for s in range(3)]
  out = io.BytesIO()
  frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
  prepared = images.prepare(out.getvalue())
  assert prepared.status == images.REPAIRED
  assert "first of 3 frames kept" in prepared.reason


def test_truncated_jpeg_is_rejected_with_reason():
  prepared = images.prepare(fx.truncated_jpeg())
  assert prepared.status == images.REJECTED
  assert prepared.reason.startswith("truncated JPEG")
  assert prepared.encoded == b""


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"<html>not found</html>", "not a recognised image"),
    (fx.png()[:40], "PNG data: cannot decode"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", "JPEG with a broken header"),
])
def test_undecodable_inputs_are_rejected(data, reason):
  prepared = images.prepare(data)
  assert prepared.status == images.REJECTED
  assert prepared.reason.startswith(reason), prepared.reason


def test_trailing_bytes_after_eoi_are_trimmed_losslessly():
  clean = fx.jpeg(20, 20, seed=9)
  prepared = images.prepare(clean + b"\x00" * 7 + b"garbage")
  assert prepared.status == images.REPAIRED
  assert prepared.encoded == clean
  assert "removed 14 bytes" in prepared.reason


def test_trailing_bytes_after_progressive_scans_are_trimmed():
  clean = fx.encode(fx.pixels(40, 40, 1), "JPEG", quality=80, progressive=True)
  prepared = images.prepare(clean + b"\xff\xd9junk")
  assert prepared.status == images.REPAIRED and prepared.encoded == clean


def test_missing_end_marker_is_rejected_as_truncated():
  # Even when only the marker is missing: appending one would also "repair" files cut in
  # the middle of the scan, whose missing rows decoders silently fill with gray.
  prepared = images.prepare(fx.jpeg(20, 20, seed=9)[:-2])
  assert prepared.status == images.REJECTED
  assert prepared.reason.startswith("truncated JPEG")


def test_jpeg_is_clean_explains():
  assert images.jpeg_is_clean(fx.jpeg()) is None
  assert images.jpeg_is_clean(fx.gray_jpeg()) == "grayscale JPEG"
  assert images.jpeg_is_clean(fx.cmyk_jpeg()) == "CMYK JPEG"
  assert images.jpeg_is_clean(fx.png()) == "not JPEG data"
  assert "end-of-image" in images.jpeg_is_clean(fx.jpeg()[:-2])

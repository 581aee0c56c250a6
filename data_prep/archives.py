"""Reading tar archives in place: member offsets (also inside nested tars) without unpacking.

ILSVRC2012 tars are plain (uncompressed) tars, so each image is `size` bytes at a fixed
offset of the archive file; indexing reads only the 512-byte headers, and workers later read
each image with one pread. A tar inside a tar (the training archive holds one tar per synset)
is indexed through the outer archive, so its images get absolute offsets too.
"""

import os
import tarfile
from typing import Iterator, NamedTuple

from data_prep import DataPrepError

_COMPRESSED_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class Member(NamedTuple):
  name: str      # the member's path inside its tar ("./" prefix removed)
  offset: int    # absolute offset of its data in the outermost archive file
  size: int


def compression(path: str) -> str:
  """'gzip', 'bzip2', 'xz', 'zstd' or '' (uncompressed or not an archive)."""
  with open(path, "rb") as f:
    head = f.read(6)
  for magic, name in _COMPRESSED_MAGIC:
    if head.startswith(magic):
      return name
  return ""


def is_tar(path: str) -> bool:
  try:
    return tarfile.is_tarfile(path)
  except OSError:
    return False


def _clean_name(name: str) -> str:
  while name.startswith("./"):
    name = name[2:]
  return name


def _members(tar: tarfile.TarFile, where: str, base: int) -> Iterator[Member]:
  for info in tar:
    name = _clean_name(info.name)
    if info.isdir() or not name:
      continue
    if info.issparse():
      raise DataPrepError(f"{where}: member {name!r} is a sparse file, which cannot be read in "
                          "place; expected plain files")
    if not info.isreg():
      kind = "a link" if (info.issym() or info.islnk()) else "not a regular file"
      raise DataPrepError(f"{where}: member {name!r} is {kind}; expected only regular files")
    yield Member(name, base + info.offset_data, info.size)


def open_plain_tar(path: str, flag: str, expected: str) -> tarfile.TarFile:
  """Opens an uncompressed tar for indexing; clear errors for anything else."""
  kind = compression(path)
  if kind:
    raise DataPrepError(
        f"{flag}={path} is {kind}-compressed; expected {expected}, an uncompressed tar as "
        "distributed (images are read in place, which needs an uncompressed tar): "
        "decompress it first or pass the folder it unpacks to")
  if not is_tar(path):
    raise DataPrepError(f"{flag}={path} is not a tar archive; expected {expected} "
                        "or the folder it unpacks to")
  return tarfile.open(path, mode="r:")


def members(path: str, flag: str, expected: str) -> Iterator[Member]:
  """Regular-file members of an uncompressed tar, in archive order."""
  with open_plain_tar(path, flag, expected) as tar:
    try:
      yield from _members(tar, f"{flag}={path}", 0)
    except (tarfile.TarError, EOFError) as e:  # e.g. a copy or download cut short
      raise DataPrepError(f"{flag}={path} is truncated or damaged ({e}); expected {expected}: "
                          "copy or download it again") from None


def nested_members(path: str, flag: str, expected: str,
                   outer: Member) -> Iterator[Member]:
  """Members of the tar stored as `outer` inside the archive at `path`."""
  with open(path, "rb") as f:
    f.seek(outer.offset)
    head = f.read(512)
  where = f"{flag}={path}: {outer.name}"
  if len(head) < 512 or not _looks_like_tar_header(head):
    raise DataPrepError(f"{where} is not a tar archive; expected {expected}")
  with open(path, "rb") as f:
    window = _Window(f, outer.offset, outer.size)
    try:
      with tarfile.open(fileobj=window, mode="r:") as tar:
        yield from _members(tar, where, outer.offset)
    except tarfile.TarError as e:
      raise DataPrepError(f"{where} is a damaged tar ({e}); expected {expected}") from None


def _looks_like_tar_header(block: bytes) -> bool:
  if block[257:262] == b"ustar":
    return True
  try:
    checksum = int(block[148:156].split(b"\0")[0].strip() or b"-1", 8)
  except ValueError:
    return False
  computed = sum(block[:148]) + 8 * 32 + sum(block[156:512])
  return checksum == computed


class _Window:
  """A read-only, seekable view of `size` bytes at `start` of an open file."""

  def __init__(self, f, start: int, size: int):
    self._f, self._start, self._size, self._pos = f, start, size, 0

  def read(self, n: int = -1) -> bytes:
    if n is None or n < 0:
      n = self._size - self._pos
    n = max(0, min(n, self._size - self._pos))
    self._f.seek(self._start + self._pos)
    data = self._f.read(n)
    self._pos += len(data)
    return data

  def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
    if whence == os.SEEK_SET:
      self._pos = offset
    elif whence == os.SEEK_CUR:
      self._pos += offset
    else:
      self._pos = self._size + offset
    return self._pos

  def tell(self) -> int:
    return self._pos

  def seekable(self) -> bool:
    return True

  def readable(self) -> bool:
    return True

"""Fetching the official CIFAR binary archive, checked by SHA-256 before it is used.

`download` keeps the archive in a cache folder and reuses a copy there only when its SHA-256
matches; a fresh download is written to a temporary file and kept only if its SHA-256
matches, so a cut-short or altered file is never converted.
"""

import hashlib
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request

from absl import logging

from data_prep import DataPrepError
from data_prep import cifar_archive
from data_prep import writer

# The official binary archives and their size and SHA-256 (as TFDS pins them).
OFFICIAL_DOWNLOADS = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", 170052171,
                "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz", 168513733,
                 "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec"),
}


def download(dataset: str, download_dir: str, url: str = "", sha256: str = "") -> str:
  """Fetches (or reuses) the archive and checks its SHA-256.

  Args:
    dataset: "cifar10" or "cifar100".
    download_dir: The cache folder; created if missing.
    url: Where to fetch from; default the official address.
    sha256: The expected SHA-256 (hex); default the official archive's.

  Returns:
    The path of the verified archive in `download_dir`.

  Raises:
    DataPrepError: `sha256` is not 64 hex digits, the download fails, or the file has
      another SHA-256 (it is then not kept).
  """
  official_url, _, official_sha256 = OFFICIAL_DOWNLOADS[dataset]
  url = url or official_url
  expected = (sha256 or official_sha256).lower()
  if not re.fullmatch(r"[0-9a-f]{64}", expected):
    raise DataPrepError(f"--download_sha256={sha256}: expected 64 hex digits")
  name = os.path.basename(urllib.parse.urlparse(url).path) or f"{dataset}.tar.gz"
  os.makedirs(download_dir, exist_ok=True)
  dest = os.path.join(download_dir, name)
  if os.path.exists(dest):
    if writer.sha256_file(dest) == expected:
      logging.info("using %s (SHA-256 verified)", dest)
      return dest
    logging.warning("%s does not have the expected SHA-256; downloading it again", dest)
    os.remove(dest)
  tmp = f"{dest}.part-{os.getpid()}"
  digest = hashlib.sha256()
  size = 0
  try:
    try:
      with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        last_log = time.monotonic()
        while True:
          block = response.read(1 << 20)
          if not block:
            break
          out.write(block)
          digest.update(block)
          size += len(block)
          if time.monotonic() - last_log > 10:
            last_log = time.monotonic()
            logging.info("downloading %s: %s of %s bytes", url, f"{size:,}",
                         f"{total:,}" if total else "?")
    except (urllib.error.URLError, OSError) as e:
      raise DataPrepError(f"cannot download {url}: {e}; pass --source=PATH to a copy of "
                          f"{cifar_archive.LAYOUTS[dataset].archives} instead") from None
    got = digest.hexdigest()
    if got != expected:
      raise DataPrepError(
          f"download of {url} has SHA-256 {got} ({size:,} bytes), expected {expected}; "
          "the file was not kept (pass --download_sha256 if --download_url serves another "
          "file on purpose)")
    os.replace(tmp, dest)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  logging.info("downloaded %s to %s (%s bytes, SHA-256 verified)", url, dest, f"{size:,}")
  return dest


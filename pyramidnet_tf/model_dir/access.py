"""Model directories: what evaluate/export need besides the weights, and
the trainer's exclusive, writable use of one.

Why: directories come from the trainer (whose model_config.json metadata
records the preprocessing and class names) or from ``import_torch`` (which
records neither); for the latter the preprocessing follows the architecture
(CIFAR: 32x32, CIFAR-10 statistics as the authors' PyTorch code; ImageNet:
224 crop of a 256 short side, ImageNet statistics) and class names come from
a data directory's manifest when one is given.

Two trainers on one directory would overwrite each other's ``ckpt-N``, so
the trainer's chief holds ``fcntl.flock`` on ``<model_dir>/.lock`` for its
lifetime (``ModelDirLock``). The kernel drops the lock when the process dies,
even by SIGKILL, so a stale ``.lock`` file never blocks; its content (pid and
host of the holder) only names the holder in the error. Non-chief workers of
a multi-worker job take no lock: they write only their own temporary
directories. Remote directories (``gs://...``) get neither the lock nor the
local writability check.
"""

import dataclasses
import errno
import fcntl
import logging
import os
import socket
import tempfile
from typing import List, Optional

from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import preprocessing as preprocessing_lib

LOCK_FILE = ".lock"


class ModelDirError(RuntimeError):
  """A --model_dir the trainer cannot use; the message says what to do."""


class ModelDirLockedError(ModelDirError):
  """Another live trainer holds the model directory."""


def is_local(path: str) -> bool:
  """Whether ``path`` is a local path.

  Args:
    path: a local path or a URL such as ``gs://bucket/dir`` (any
      ``scheme://`` counts as remote).
  """
  return "://" not in path


def check_writable(path: str) -> None:
  """Creates ``path`` if missing and proves it writable, or raises.

  Why a real probe file instead of os.access: root passes os.access on
  read-only mounts and permission bits, and only a write proves a write.

  Args:
    path: the --model_dir; remote paths are not checked.

  Raises:
    ModelDirError: if ``path`` is a file, cannot be created, or refuses a
      write.
  """
  if not is_local(path):
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise ModelDirError(f"--model_dir={path} is a file, not a directory; "
                        "pass a directory (it is created if missing)")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise ModelDirError(f"--model_dir={path} cannot be created ({e.strerror})"
                        "; pass a directory you can write to") from None
  try:
    fd, probe = tempfile.mkstemp(prefix=".write_test.", dir=path)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ModelDirError(f"--model_dir={path} is not writable ({e.strerror}); "
                        "fix its permissions or pass another directory"
                        ) from None


class ModelDirLock:
  """An exclusive flock on ``<model_dir>/.lock``; released on process exit.

  Keeps a second trainer from writing the same directory (module
  docstring). Where the filesystem cannot lock, it logs a warning and holds
  nothing (``held`` is False) rather than refusing to train.
  """

  def __init__(self, model_dir: str):
    """Takes the lock or raises ModelDirLockedError naming the holder.

    Args:
      model_dir: an existing local directory (see ``check_writable``).

    Raises:
      ModelDirLockedError: if another process holds the lock.
      OSError: if the lock file cannot be opened.
    """
    self.path = os.path.join(model_dir, LOCK_FILE)
    self._fd = None
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      holder = _read_holder(fd)
      os.close(fd)
      if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
        raise ModelDirLockedError(
            f"--model_dir={model_dir} is in use by another trainer ("
            f"{holder or 'holder unknown'}, lock {self.path}); wait for it "
            "to finish or stop it, or pass another --model_dir") from None
      # E.g. ENOLCK: a network filesystem without lock support.
      logging.warning("cannot lock %s (%s): not protected against a second "
                      "trainer", self.path, e.strerror)
      return
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n"
             .encode())
    self._fd = fd

  @property
  def held(self) -> bool:
    """Whether this object holds the lock (False after ``release``)."""
    return self._fd is not None

  def lost(self) -> Optional[str]:
    """Why ``path`` is no longer this lock's file (the directory was
    deleted, moved or replaced: another trainer could lock the path now);
    None while it is, or when nothing is held."""
    if self._fd is None:
      return None
    try:
      on_disk = os.stat(self.path)
    except OSError:
      return f"{self.path} is gone"
    held = os.fstat(self._fd)
    if (on_disk.st_dev, on_disk.st_ino) != (held.st_dev, held.st_ino):
      return f"{self.path} is another file than the one this trainer locked"
    return None

  def release(self) -> None:
    """Drops the lock; harmless if not held."""
    if self._fd is not None:
      os.close(self._fd)   # closing the only descriptor drops the flock
      self._fd = None


def _read_holder(fd: int) -> str:
  try:
    return os.pread(fd, 200, 0).decode(errors="replace").strip()
  except OSError:
    return ""


def lock(model_dir: str) -> Optional[ModelDirLock]:
  """The trainer chief's lock on ``model_dir``; None for remote paths.

  Args:
    model_dir: the --model_dir, existing if local.

  Raises:
    ModelDirLockedError: if another trainer holds it.
  """
  if not is_local(model_dir):
    logging.warning("--model_dir=%s is not local: no lock against a second "
                    "trainer on it", model_dir)
    return None
  return ModelDirLock(model_dir)


def ownership_problem(model_dir: str, held: Optional[ModelDirLock]
                      ) -> Optional[str]:
  """Why the trainer holding ``held`` no longer owns ``model_dir``: the
  directory was deleted, moved or replaced during the run. None while it
  owns it (and for remote directories, which have no lock).

  Args:
    model_dir: the --model_dir.
    held: the chief's ``lock(model_dir)``.
  """
  if held is not None and held.held:
    reason = held.lost()
  elif is_local(model_dir) and not os.path.isdir(model_dir):
    reason = f"{model_dir} is gone"
  else:
    reason = None
  if reason is None:
    return None
  return (f"--model_dir={model_dir} was deleted, moved or replaced during "
          f"the run ({reason})")


def preprocessing_of(metadata: dict, model_config: dict, image_size: int = 0,
                     convention: str = "pt",
                     info: Optional[manifest_lib.DataInfo] = None
                     ) -> preprocessing_lib.Preprocessing:
  """The preprocessing a model directory's network expects.

  Trainer output records it (``metadata["preprocessing"]``). Imported
  checkpoints record their authors' input convention
  (``metadata["input_convention"]``: pixels p in 0..255, in ``color`` order,
  become ``(p * scale - mean) / std``), which replaces the default
  statistics, so that e.g. a Caffe model gets its BGR, mean-subtracted input.

  Args:
    metadata: the ``metadata`` section of ``model_config.json``.
    model_config: its ``model`` section (``dataset`` is read).
    image_size: input side in pixels; 0 = the default (32 for CIFAR
      data, otherwise 224 for an ImageNet model and 32 for a CIFAR one).
      Ignored when the metadata records the preprocessing.
    convention: CIFAR convention, "pt" or "fb" (``augment``), for
      directories that do not record their preprocessing.
    info: the manifest of a data directory, if one is given; its kind
      (e.g. an image folder) decides the pipeline instead of the model's
      dataset.
  """
  if "preprocessing" in metadata:
    return preprocessing_lib.Preprocessing.from_json(metadata["preprocessing"])
  data_kind = info.kind if info is not None else model_config["dataset"]
  preprocessing = preprocessing_lib.preprocessing_for(
      data_kind, model_config["dataset"], image_size, convention)
  spec = metadata.get("input_convention")
  if spec:
    scale = float(spec["scale"])
    preprocessing = dataclasses.replace(
        preprocessing, color=str(spec.get("color", "RGB")).upper(),
        mean=tuple(float(m) / scale for m in spec["mean"]),
        std=tuple(float(s) / scale for s in spec["std"]))
  return preprocessing


def class_names_of(metadata: dict, num_classes: int,
                   info: Optional[manifest_lib.DataInfo] = None
                   ) -> List[str]:
  """The class names of a model directory's network, one per output.

  Args:
    metadata: the ``metadata`` section of ``model_config.json``; its
      "class_names" are used if there are ``num_classes`` of them.
    num_classes: the network's outputs.
    info: a data directory's manifest, the fallback when its class count
      matches.

  Returns:
    ``num_classes`` names; ``class_<i>`` when neither source fits.
  """
  names = metadata.get("class_names")
  if names and len(names) == num_classes:
    return list(names)
  return manifest_lib.class_names_list(info, num_classes)

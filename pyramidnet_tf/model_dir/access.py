"""Model directories: what evaluate/export need besides the weights, and
the trainer's exclusive, writable use of one.

Why: directories come from the trainer (whose model_config.json metadata
records the preprocessing and class names) or from ``import_torch`` (which
records them only for a file written by ``export_torch``, which carries
them); otherwise the preprocessing follows the architecture (CIFAR: 32x32,
CIFAR-10 statistics as the authors' PyTorch code; ImageNet: 224 crop of a
256 short side, ImageNet statistics) with the file's input convention, and
class names come from a data directory's manifest when one is given.

Two writers on one directory would overwrite each other's ``ckpt-N``, so
the trainer's chief holds ``fcntl.flock`` on ``<model_dir>/.lock`` for its
lifetime (``ModelDirLock``), and ``import_torch`` holds the same lock while
it writes. The kernel drops the lock when the process dies, even by
SIGKILL, so a stale ``.lock`` file never blocks; its content (pid, host and
program of the holder) only names the holder in the error. Non-chief workers of
a multi-worker job take no lock: they write only their own temporary
directories. Remote directories (``gs://...``) get neither the lock nor the
local writability check.
"""

import dataclasses
import errno
import fcntl
import logging
import os
import shutil
import socket
import tempfile
from typing import List, Optional, Sequence, Tuple

from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import preprocessing as preprocessing_lib

LOCK_FILE = ".lock"


class ModelDirError(RuntimeError):
  """A --model_dir the trainer cannot use; the message says what to do."""


class ModelDirLockedError(ModelDirError):
  """Another live process (a trainer, import_torch) holds the model
  directory."""


def is_local(path: str) -> bool:
  """Whether ``path`` is a local path.

  Args:
    path: a local path or a URL such as ``gs://bucket/dir`` (any
      ``scheme://`` counts as remote).
  """
  return "://" not in path


def check_writable(path: str) -> None:
  """Proves that ``path`` can be created (if missing) and written, or
  raises; leaves nothing behind.

  Why a real probe file instead of os.access: root passes os.access on
  read-only mounts and permission bits, and only a write proves a write.
  A directory created for the probe is removed again, so a run refused
  later (a bad flag, unreadable data) leaves no empty --model_dir; the
  trainer creates it for real when it starts (``RunClaim``).

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
  first_created = _first_missing(path)
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
  finally:
    if first_created is not None:
      shutil.rmtree(first_created, ignore_errors=True)


def _first_missing(path: str) -> Optional[str]:
  """The outermost directory of ``path`` that does not exist yet."""
  path = os.path.abspath(path)
  missing = None
  while not os.path.exists(path):
    missing = path
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


class RunClaim:
  """A run's hold on its --model_dir: created if missing, then locked.

  When the run fails before it wrote any checkpoint or config there
  (``abandon``), what it added goes again: the whole directory if the run
  created it, else only a lock file it created; so a refused run (data it
  cannot read, a batch that does not divide) leaves no empty model
  directory or stray lock behind.
  """

  def __init__(self, model_dir: str, tool: str = "pyramidnet_tf.train"):
    """Creates and locks ``model_dir`` (local paths; remote ones are only
    locked in name: ``lock`` returns None for them).

    Raises:
      ModelDirLockedError: another process holds the directory.
    """
    self.model_dir = model_dir
    local = is_local(model_dir)
    self._created = _first_missing(model_dir) if local else None
    if local:
      os.makedirs(model_dir, exist_ok=True)
    self._lock_existed = (not local or
                          os.path.exists(os.path.join(model_dir, LOCK_FILE)))
    try:
      self.lock = lock(model_dir, tool)
    except ModelDirError:
      self._remove_created()
      raise

  def release(self) -> None:
    if self.lock is not None:
      self.lock.release()

  def _wrote_anything(self) -> bool:
    try:
      names = os.listdir(self.model_dir)
    except OSError:
      return False
    return any(name == "model_config.json" or name == "checkpoint" or
               name.endswith(".index") for name in names)

  def _remove_created(self) -> None:
    if self._created is not None:
      shutil.rmtree(self._created, ignore_errors=True)

  def abandon(self) -> None:
    """After a failure: releases the lock and removes what the run added,
    unless it saved something."""
    self.release()
    if not is_local(self.model_dir) or self._wrote_anything():
      return
    if self._created is not None:
      self._remove_created()
    elif not self._lock_existed:
      try:
        os.remove(os.path.join(self.model_dir, LOCK_FILE))
      except OSError:
        pass


class ModelDirLock:
  """An exclusive flock on ``<model_dir>/.lock``; released on process exit.

  Keeps a second writer (trainer or import_torch) from writing the same
  directory (module docstring). Where the filesystem cannot lock, it logs a
  warning and holds nothing (``held`` is False) rather than refusing to
  work.
  """

  def __init__(self, model_dir: str, tool: str = "pyramidnet_tf.train",
               flag: str = "--model_dir"):
    """Takes the lock or raises ModelDirLockedError naming the holder.

    Args:
      model_dir: an existing local directory (see ``check_writable``).
      tool: the program taking the lock, recorded for the next one's error.
      flag: the flag that named ``model_dir``, for messages.

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
            f"{flag}={model_dir} is in use by another process ("
            f"{holder or 'holder unknown'}, lock {self.path}); wait for it "
            f"to finish or stop it, or pass another {flag}") from None
      # E.g. ENOLCK: a network filesystem without lock support.
      logging.warning("cannot lock %s (%s): not protected against a second "
                      "writer", self.path, e.strerror)
      return
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} "
             f"({tool})\n".encode())
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


def lock(model_dir: str, tool: str = "pyramidnet_tf.train",
         flag: str = "--model_dir") -> Optional[ModelDirLock]:
  """A writer's lock on ``model_dir``; None for remote paths.

  Args:
    model_dir: the directory, existing if local.
    tool: the program taking the lock (``ModelDirLock``).
    flag: the flag that named ``model_dir``, for messages.

  Raises:
    ModelDirLockedError: if another process (trainer, import_torch) holds
      it.
  """
  if not is_local(model_dir):
    logging.warning("%s=%s is not local: no lock against a second writer "
                    "on it", flag, model_dir)
    return None
  return ModelDirLock(model_dir, tool, flag)


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


def image_size_problem(preprocessing: preprocessing_lib.Preprocessing,
                       recorded: bool, data_size: Optional[Tuple[int, int]],
                       model_dir: str, data_dir: str
                       ) -> Optional[Tuple[bool, str]]:
  """Whether a data directory's images fit the size a model expects.

  CIFAR-style evaluation pads or crops each image to the model's size
  (``augment.cifar_eval``); it resizes nothing, so 16x16 images fed to a
  model that expects 32x32 get a black border and every score changes.
  ImageNet-style and resizing pipelines accept any size.

  Args:
    preprocessing: what the model expects (``preprocessing_of``).
    recorded: whether the model directory records its preprocessing (the
      trainer's, or export_torch's carried to an import); else its size is
      a default.
    data_size: (height, width) of the data's images
      (``records.first_image_size``); None when unknown.
    model_dir: the --model_dir, for the message.
    data_dir: the --data_dir, for the message.

  Returns:
    None when they fit; else (refuse, message): refuse when the model's
    size is only a default, a warning when it trained at that size.
  """
  if data_size is None or preprocessing.kind != "cifar" or (
      preprocessing.resize):
    return None
  size = preprocessing.image_size
  if tuple(data_size) == (size, size):
    return None
  height, width = data_size
  why = ("recorded in its model_config.json" if recorded else
         "the default: its model_config.json records no image size, as "
         "import_torch writes for a file without export_torch's record")
  return (not recorded,
          f"--data_dir={data_dir} holds {height}x{width} images but the model "
          f"in {model_dir} expects {size}x{size} ({why}); each image would "
          f"be padded or cropped to {size}x{size}, which changes every score."
          f" Pass --image_size={height} to evaluate at the data's size, or "
          f"--image_size={size} to pad or crop as now")


def class_order_problem(model_names: Optional[Sequence[str]],
                        data_names: Sequence[str]
                        ) -> Optional[Tuple[bool, str]]:
  """Why a model's class names do not line up with a data directory's.

  Args:
    model_names: the model directory's recorded class names (one per
      output), or None when it records none.
    data_names: the data manifest's class names, in label order.

  Returns:
    None when they agree or either is unknown; else (refuse, sentence):
    refuse for the same names in another order (every label would be
    scored against another class's output), a warning for other names.
  """
  if not model_names or not data_names or len(model_names) != len(
      data_names) or list(model_names) == list(data_names):
    return None
  index = next(i for i, (a, b) in enumerate(zip(model_names, data_names))
               if a != b)
  first = (f"class {index} is {model_names[index]!r} for the model and "
           f"{data_names[index]!r} in the data")
  if sorted(model_names) == sorted(data_names):
    return (True, "the data's class names are the model's in another order"
            f" ({first}), so every score would compare labels with the "
            "wrong outputs; prepare the data with the model's class order "
            "(its model_config.json lists it)")
  return False, f"the data's class names differ from the model's ({first})"

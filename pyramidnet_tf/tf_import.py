"""How TensorFlow is imported: on first use, without Keras, without banners.

Three reasons to control the one ``import tensorflow`` of a process:

* Start-up time. Importing TensorFlow takes seconds. The command-line tools
  parse and check every flag first (and ``--help`` needs no TensorFlow at
  all), so importing ``pyramidnet_tf`` must not import TensorFlow: the first
  module that needs it does, through the import hook installed here.
* Keras. TensorFlow's ``__init__`` eagerly imports ``keras.src.optimizers``
  when Keras is installed. Nothing here uses Keras, so TensorFlow is imported
  with Keras hidden: no Keras code runs in the process. Only that import is
  affected; ``import keras`` works afterwards for anyone who wants it. Set
  ``PYRAMIDNET_TF_ALLOW_KERAS=1`` to import TensorFlow untouched.
* Banners. TensorFlow 2.21's C++ runtime writes "All log messages before
  absl::InitializeLog() ..." and "oneDNN custom operations are on ..." to
  the process's standard error while it loads, twice, whatever
  ``TF_CPP_MIN_LOG_LEVEL`` says (logging is not yet initialised), and the
  CPU feature notice at INFO level. Those lines are dropped while TensorFlow
  is imported; every other line written to standard error meanwhile is
  passed through as it arrives. ``TF_CPP_MIN_LOG_LEVEL=0`` (TensorFlow's
  "show everything") keeps the banners.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import threading

ALLOW_KERAS_ENV = "PYRAMIDNET_TF_ALLOW_KERAS"
_KERAS_PACKAGES = ("keras", "tf_keras")

# Substrings of the start-up lines dropped while TensorFlow loads.
BANNER_MARKS = (
    b"All log messages before absl::InitializeLog() is called",
    b"oneDNN custom operations are on",
    b"cpu_feature_guard.cc",
    b"To enable the following instructions:",
)


def is_banner(line: bytes) -> bool:
  """Whether ``line`` is one of TensorFlow's start-up banner lines."""
  return any(mark in line for mark in BANNER_MARKS)


def _keep_banners() -> bool:
  return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() == "0"


def _forward_lines(read_fd: int, write_fd: int) -> None:
  with os.fdopen(read_fd, "rb", buffering=0) as pipe:
    pending = b""
    while True:
      chunk = pipe.read(65536)
      if not chunk:
        break
      pending += chunk
      *lines, pending = pending.split(b"\n")
      for line in lines:
        if not is_banner(line):
          os.write(write_fd, line + b"\n")
    if pending and not is_banner(pending):
      os.write(write_fd, pending)


@contextlib.contextmanager
def banners_dropped():
  """Standard error (file descriptor 2) without TensorFlow's banner lines.

  Lines go through a pipe to a thread that writes all but the banners to
  the original standard error as they arrive, so a message printed just
  before a crash is not held back.
  """
  if _keep_banners():
    yield
    return
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no usable descriptor 2
    yield
    return
  read_fd, write_fd = os.pipe()
  os.dup2(write_fd, 2)
  os.close(write_fd)
  forwarder = threading.Thread(target=_forward_lines, args=(read_fd, saved),
                               name="tf-import-stderr", daemon=True)
  forwarder.start()
  try:
    yield
  finally:
    try:
      sys.stderr.flush()
    except (OSError, ValueError):
      pass
    os.dup2(saved, 2)  # closes the pipe's last write end: the thread ends
    forwarder.join()
    os.close(saved)


@contextlib.contextmanager
def keras_hidden():
  """``import keras`` / ``import tf_keras`` fail inside the block."""
  if os.environ.get(ALLOW_KERAS_ENV) == "1":
    yield
    return
  hidden = [name for name in _KERAS_PACKAGES if name not in sys.modules]
  for name in hidden:
    sys.modules[name] = None  # makes `import name` raise ImportError
  try:
    yield
  finally:
    for name in hidden:
      if name in sys.modules and sys.modules[name] is None:
        del sys.modules[name]


class _Loader(importlib.abc.Loader):
  """TensorFlow's own loader, run with Keras hidden and banners dropped."""

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    with keras_hidden(), banners_dropped():
      self._loader.exec_module(module)

  def __getattr__(self, name):  # resource readers, get_filename, ...
    return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
  """Finds ``tensorflow`` as usual and wraps its loader; used once."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow":
      return None
    uninstall()
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is None or spec.loader is None:
      return spec
    spec.loader = _Loader(spec.loader)
    return spec


_FINDER = _Finder()


def install() -> None:
  """Makes the process's first ``import tensorflow`` go through this module.

  Does nothing when TensorFlow is already imported.
  """
  if "tensorflow" in sys.modules or _FINDER in sys.meta_path:
    return
  sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
  """Removes the hook (TensorFlow imports untouched from then on)."""
  while _FINDER in sys.meta_path:
    sys.meta_path.remove(_FINDER)

"""Imports any of the authors' weight files into a model directory.

The authors released PyTorch checkpoints (``.pth``/``.pth.tar``, or an
``.npz`` of the same arrays), Torch7 models (``.t7``) and Caffe models
(``.caffemodel``). ``import_checkpoint`` tells them apart by their first
bytes, builds our ``PyramidNet`` with the given architecture, loads the file
through the format's module (``pytorch``, ``torch7``, ``caffe``) and saves a
model directory (``model_io.save_model``) whose metadata records where the
weights came from and the input convention they expect
(``conventions.input_convention``). ``pyramidnet_tf.import_torch`` is the
command line around it.
"""

import hashlib
import os
from typing import Any, Dict, Mapping, Tuple

from pyramidnet_tf.convert import caffe
from pyramidnet_tf.convert import caffe_reader
from pyramidnet_tf.convert import conventions
from pyramidnet_tf.convert import pytorch
from pyramidnet_tf.convert import torch7
from pyramidnet_tf.convert import torch7_reader
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io

FORMATS = ("auto", "pytorch", "npz", "torch7", "caffe")


def sha256_of(path: str) -> str:
  """The hex SHA-256 of a file's contents.

  Args:
    path: the file.

  Returns:
    64 lower-case hex digits.
  """
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def detect_format(path: str) -> str:
  """The format of a weight file, from its first bytes.

  Args:
    path: the file.

  Returns:
    "pytorch", "npz", "torch7" or "caffe".

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: if the first bytes fit none of the formats.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"--checkpoint: {path} does not exist")
  with open(path, "rb") as f:
    head = f.read(16)
  if head.startswith(b"PK\x03\x04"):
    return "npz" if path.endswith(".npz") else "pytorch"  # zip archives
  if head[:1] == b"\x80":  # pickle protocol 2+ (legacy torch.save)
    return "pytorch"
  if torch7_reader.looks_like_torch7(head):
    return "torch7"
  if caffe_reader.looks_like_caffemodel(head):
    return "caffe"
  raise ValueError(
      f"{path}: cannot tell the format from its first bytes "
      f"({head[:8].hex()}): expected a PyTorch zip or pickle, an .npz, a "
      "Torch7 binary file (starting 04000000 01000000) or a Caffe "
      "NetParameter; pass --format to force one")


def import_checkpoint(path: str, output_dir: str, trust: bool = False,
                      file_format: str = "auto",
                      **model_kwargs) -> Tuple[str, Dict[str, Any]]:
  """Builds the model, loads ``path`` into it and saves a model directory.

  Args:
    path: a PyTorch checkpoint, .npz, Torch7 .t7 or Caffe .caffemodel.
    output_dir: model directory to write.
    trust: allow unpickling arbitrary objects (PyTorch files only).
    file_format: one of ``FORMATS``; "auto" detects it from the file.
    **model_kwargs: ``PyramidNet`` arguments (the file's architecture).

  Returns:
    (the saved checkpoint's path, the metadata: what was loaded from where,
    the input convention, the parameter count and a description of the
    model).

  Raises:
    ValueError: for an unknown ``file_format`` or a file that cannot be read
      as its format (``torch7_reader.Torch7FormatError``,
      ``caffe_reader.CaffeFormatError``), or does not fit the model
      (``pytorch.StateDictMismatch``, ``structure.ImportMismatch``); nothing
      is written then.
    FileNotFoundError: if ``path`` does not exist.
    zipfile.BadZipFile: if an ``.npz`` is not a readable archive.
    ImportError: if a PyTorch file is to be read and torch is not installed.
  """
  if file_format not in FORMATS:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got "
                     f"{file_format!r}")
  if file_format == "auto":
    file_format = detect_format(path)
  elif not os.path.exists(path):
    raise FileNotFoundError(f"--checkpoint: {path} does not exist")
  metadata: Dict[str, Any] = {}
  if file_format in ("pytorch", "npz"):
    checkpoint = pytorch.read_checkpoint_file(path, trust,
                                              npz=file_format == "npz")
    model = model_lib.PyramidNet(**model_kwargs)
    metadata["arrays_loaded"] = pytorch.load_state_dict(model, checkpoint)
    for key in ("epoch", "arch", "best_err1", "best_err5"):
      value = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
      if isinstance(value, (int, float, str)):
        metadata[key] = value
  else:
    model = model_lib.PyramidNet(**model_kwargs)
    loader = (torch7.load_torch7 if file_format == "torch7" else
              caffe.load_caffe)
    metadata.update(loader(model, path))
  metadata.update({
      "source": {"npz": "pytorch"}.get(file_format, file_format),
      "format": file_format,
      "checkpoint": os.path.abspath(path),
      "checkpoint_sha256": sha256_of(path),
      "input_convention": conventions.input_convention(file_format,
                                                       model.dataset),
  })
  saved = model_io.save_model(model, output_dir, metadata)
  metadata["parameters"] = model_lib.count_params(model)
  metadata["description"] = pytorch.describe_model(model)
  return saved, metadata

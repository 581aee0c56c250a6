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
from typing import Any, Callable, Dict, Mapping, Tuple

from pyramidnet_tf.convert import caffe
from pyramidnet_tf.convert import caffe_reader
from pyramidnet_tf.convert import conventions
from pyramidnet_tf.convert import imgclsmob
from pyramidnet_tf.convert import infer
from pyramidnet_tf.convert import pytorch
from pyramidnet_tf.convert import structure
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


class ArchitectureConflict(ValueError):
  """Given model flags disagree with the network the file holds."""


# The model arguments compared with the file; the others pass through.
ARCHITECTURE_KEYS = ("dataset", "depth", "alpha", "bottleneck", "mode",
                     "rounding", "num_classes", "drop_rate")


def _read(path: str, file_format: str, trust: bool
          ) -> Tuple[Callable[[], infer.Observed], Callable[[Any], Dict],
                     Dict[str, Any]]:
  """(observe, load, metadata) for a file of a known format.

  ``observe()`` reads the file's architecture; ``load(model)`` fills the
  model all-or-nothing and returns what it did; the metadata holds what the
  file says about itself (training epoch, imgclsmob release name).
  """
  metadata: Dict[str, Any] = {}
  if file_format in ("pytorch", "npz"):
    checkpoint = pytorch.read_checkpoint_file(path, trust,
                                              npz=file_format == "npz")
    for key in ("epoch", "arch", "best_err1", "best_err5"):
      value = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
      if isinstance(value, (int, float, str)):
        metadata[key] = value
    state = pytorch.unwrap_state_dict(checkpoint)
    if imgclsmob.is_imgclsmob(state):
      state = imgclsmob.to_author_names(state)
      metadata["naming"] = "imgclsmob"
      release = imgclsmob.parse_release_name(path)
      if release is not None:
        metadata["release"] = release
    return (lambda: infer.observe_state_dict(state),
            lambda model: {"arrays_loaded": pytorch.load_state_dict(model,
                                                                    state)},
            metadata)
  if file_format == "torch7":
    net = torch7.parse_torch7(torch7_reader.load(path), path)
  else:
    net = caffe.parse_caffe(caffe_reader.load(path), path)
  return (lambda: infer.observe_net(net),
          lambda model: structure.assign(model, net), metadata)


def _release_disagreement(release, kwargs) -> str:
  """What the imgclsmob file name says that the shapes do not, or ""."""
  named = release.model_kwargs()
  differs = [k for k in ("dataset", "depth", "alpha", "bottleneck")
             if named[k] is not None and named[k] != kwargs[k]]
  if not differs:
    return ""
  return ", ".join(f"{k} {named[k]} (shapes: {kwargs[k]})" for k in differs)


def resolve_architecture(observe: Callable[[], infer.Observed],
                         given: Mapping[str, Any], file_format: str,
                         release=None) -> Tuple[Dict[str, Any], str, Any]:
  """The model arguments for a file: inferred, constrained by ``given``.

  Args:
    observe: reads the file's ``infer.Observed``.
    given: the model arguments the user gave (None values: not given).
    file_format: the file's format (Torch7 files try half-up rounding
      first, as the authors' Lua code rounds).
    release: the imgclsmob ``ReleaseName`` of the file, if any: checked
      against the shapes.

  Returns:
    (arguments, how they were found, the conflicts: a list of messages, or
    None when the file's architecture could not be read and the given
    arguments are used as they are).

  Raises:
    infer.InferenceError: if the architecture can be read neither from the
      file nor from the given arguments.
    ArchitectureConflict: if the release name disagrees with the shapes.
  """
  given = {k: v for k, v in given.items() if v is not None}
  roundings = (("half_up", "py3") if file_format == "torch7" else
               ("py3", "half_up"))
  try:
    kwargs, conflicts = infer.infer(observe(), given, roundings)
  except infer.InferenceError as e:
    if "depth" in given and "alpha" in given:
      return dict(given), f"the given model flags ({e})", None
    raise
  how = "the file's structure"
  if release is not None:
    disagreement = _release_disagreement(release, kwargs)
    if disagreement and not any(k in given for k in ARCHITECTURE_KEYS):
      raise ArchitectureConflict(
          f"the file name says {release.model_name}, but its shapes hold "
          f"{infer.flags_line(kwargs)}: the name's {disagreement}; rename "
          "the file or give the model flags")
    if not disagreement:
      how += f", matching the release name {release.model_name}"
  return kwargs, how, conflicts


def import_checkpoint(path: str, output_dir: str, trust: bool = False,
                      file_format: str = "auto",
                      **model_kwargs) -> Tuple[str, Dict[str, Any]]:
  """Reads ``path``, builds its network, loads it and saves a model directory.

  The architecture is read from the file (``infer``); model arguments given
  in ``model_kwargs`` must agree with it. PyTorch files under pytorchcv's
  (imgclsmob's) names are renamed to the authors' keys
  (``imgclsmob.to_author_names``) and their release file name is checked
  against the shapes.

  Args:
    path: a PyTorch checkpoint (the authors' or imgclsmob's), .npz, Torch7
      .t7 or Caffe .caffemodel.
    output_dir: model directory to write.
    trust: allow unpickling arbitrary objects (PyTorch files only).
    file_format: one of ``FORMATS``; "auto" detects it from the file.
    **model_kwargs: ``PyramidNet`` arguments the user gave; missing or None
      ones are inferred from the file.

  Returns:
    (the saved checkpoint's path, the metadata: what was loaded from where,
    the input convention, the parameter count, a description of the model,
    ``model_flags`` (the flags that rebuild it) and ``inferred_from``).

  Raises:
    ValueError: for an unknown ``file_format`` or a file that cannot be read
      as its format (``torch7_reader.Torch7FormatError``,
      ``caffe_reader.CaffeFormatError``), whose architecture cannot be
      inferred (``infer.InferenceError``), that disagrees with given model
      arguments (``ArchitectureConflict``) or does not fit the model
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
  observe, load, metadata = _read(path, file_format, trust)
  release = metadata.pop("release", None)
  kwargs, how, conflicts = resolve_architecture(observe, model_kwargs,
                                                file_format, release)
  if conflicts:
    message = ("the model flags disagree with the file: " +
               "; ".join(conflicts) + f". Without them it imports as "
               f"{infer.flags_line(kwargs)}")
    merged = dict(kwargs)
    merged.update({k: v for k, v in model_kwargs.items() if v is not None})
    try:
      load(model_lib.PyramidNet(**merged))
    except (ValueError, structure.ImportMismatch) as e:
      message = f"{e}\n{message}"
    raise ArchitectureConflict(message)
  model = model_lib.PyramidNet(**kwargs)
  metadata.update(load(model))
  source = {"npz": "pytorch"}.get(file_format, file_format)
  convention_of = source
  if metadata.get("naming") == "imgclsmob":
    source = convention_of = "imgclsmob"
    if release is not None:
      metadata["release"] = release.model_name
      if release.error is not None:
        metadata["published_error"] = release.error
      if release.dataset == "svhn":
        metadata["trained_on"] = "svhn"
        metadata["class_names"] = [str(digit) for digit in range(10)]
  metadata.update({
      "source": source,
      "format": file_format,
      "checkpoint": os.path.abspath(path),
      "checkpoint_sha256": sha256_of(path),
      "input_convention": conventions.input_convention(convention_of,
                                                       model.dataset),
      "model_flags": infer.flags_line(kwargs),
      "inferred_from": how,
  })
  saved = model_io.save_model(model, output_dir, metadata)
  metadata["parameters"] = model_lib.count_params(model)
  metadata["description"] = pytorch.describe_model(model)
  return saved, metadata

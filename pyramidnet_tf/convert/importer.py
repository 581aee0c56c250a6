"""Imports any of the authors' weight files into a model directory.

The authors released PyTorch checkpoints (``.pth``/``.pth.tar``, or an
``.npz`` of the same arrays), Torch7 models (``.t7``) and Caffe models
(``.caffemodel``). ``import_checkpoint`` tells them apart by their first
bytes, builds our ``PyramidNet`` with the given architecture, loads the file
through the format's module (``pytorch``, ``torch7``, ``caffe``) and saves a
model directory (``model_io.save_model``) whose metadata records where the
weights came from and the input convention they expect
(``conventions.input_convention``, or what ``export_torch`` carried in the
file: the image size, the normalisation and the class names of the model
directory it came from). ``pyramidnet_tf.import_torch`` is the command line
around it.

The output directory is written as the trainer writes its own: never over
a model that is there (its checkpoints and ``model_config.json``) unless
``overwrite`` is given, under the trainer's lock (``access.ModelDirLock``),
and all or nothing: the checkpoint is saved into a hidden temporary
directory inside it and renamed into place, so a full disk or a kill
leaves the directory as it was (a rerun removes such a temporary).
Weights holding NaN or Inf are refused, as the trainer never checkpoints
them.
"""

import hashlib
import logging
import os
import re
import uuid
from typing import Any, Callable, Dict, List, Mapping, Tuple

import tensorflow as tf

from pyramidnet_tf.convert import caffe
from pyramidnet_tf.convert import caffe_reader
from pyramidnet_tf.convert import conventions
from pyramidnet_tf.convert import imgclsmob
from pyramidnet_tf.convert import infer
from pyramidnet_tf.convert import pytorch
from pyramidnet_tf.convert import structure
from pyramidnet_tf.convert import torch7
from pyramidnet_tf.convert import torch7_reader
from pyramidnet_tf import errors
from pyramidnet_tf import options
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import access
from pyramidnet_tf.model_dir import store as model_io

FORMATS = options.IMPORT_FORMATS
TOOL = "pyramidnet_tf.import_torch"
# The hidden directory an import saves into before renaming into place.
_TEMP_PREFIX = ".import_torch.tmp-"
_TEMP_DIR = re.compile(r"^\.import_torch\.tmp-[0-9a-f]{12}$")
# What a model directory's model is made of: --overwrite replaces these.
_MODEL_FILE = re.compile(
    r"^(ckpt-\d+(\.index|\.data-\d{5}-of-\d{5}|_temp)|checkpoint|"
    r"model_config\.json|train_config\.json)$")


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
    metadata["carried"] = pytorch.carried_settings(checkpoint, path)
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


class OutputDirError(ValueError):
  """--output_dir holds a model, or cannot be written; one line."""


def existing_model(output_dir: str) -> List[str]:
  """What makes ``output_dir`` hold a model already, as phrases.

  Args:
    output_dir: the --output_dir (need not exist).

  Returns:
    E.g. ["checkpoints ckpt-20, ckpt-40", "model_config.json"]; empty for
    a missing or model-free directory.
  """
  found = []
  steps = [os.path.basename(p) for p in reversed(
      model_io.checkpoints_on_disk(output_dir))]
  if steps:
    found.append("checkpoints " + ", ".join(steps))
  for name in (model_io.CONFIG_FILE, model_io.STATE_FILE):
    if tf.io.gfile.exists(os.path.join(output_dir, name)):
      found.append(name if name == model_io.CONFIG_FILE else
                   f"the state file '{name}'")
  return found


def check_output_dir(output_dir: str, overwrite: bool) -> None:
  """Refuses an --output_dir that holds a model, unless ``overwrite``.

  Args:
    output_dir: the --output_dir.
    overwrite: --overwrite (its model is to be replaced).

  Raises:
    OutputDirError: naming what the directory holds and what to do.
  """
  if tf.io.gfile.exists(output_dir) and not tf.io.gfile.isdir(output_dir):
    raise OutputDirError(f"--output_dir={output_dir} is a file; pass a "
                         "directory (it is created if missing)")
  found = existing_model(output_dir)
  if found and not overwrite:
    raise OutputDirError(
        f"--output_dir={output_dir} already holds a model ({'; '.join(found)}"
        "); evaluate, export and the trainer would take the imported weights "
        "for it. Pass a new --output_dir, or --overwrite to replace its "
        "checkpoints, model_config.json and train_config.json")


def _remove_own_leftovers(output_dir: str) -> None:
  """Deletes temporaries of imports killed midway (the lock is held)."""
  for name in tf.io.gfile.listdir(output_dir):
    name = name.rstrip("/")
    if _TEMP_DIR.match(name):
      path = os.path.join(output_dir, name)
      logging.warning("removing %s: left by an import that did not finish",
                      path)
      tf.io.gfile.rmtree(path)


def _write_failure(output_dir: str, error: BaseException) -> Exception:
  """The one-line error for a failed write, or ``error`` for a bug."""
  problem = errors.storage_problem(error)
  if problem is None:
    return error
  _, reason, no_space = problem
  # A failure while working (exit 1), not a refusal of the flags.
  return errors.UserError(
      f"cannot write --output_dir={output_dir}: {reason}; nothing was "
      "written (its partial files were removed)" +
      ("; free some space or choose another --output_dir" if no_space else
       "; check the directory's owner and mode or choose another "
       "--output_dir"))


def write_model_dir(model, output_dir: str, metadata: Dict[str, Any],
                    overwrite: bool = False) -> str:
  """Saves ``model`` as ``<output_dir>/ckpt-0`` + ``model_config.json``.

  All or nothing, under the trainer's lock (module docstring); with
  ``overwrite`` the directory's previous checkpoints, state file,
  ``model_config.json`` and ``train_config.json`` are deleted once the new
  checkpoint is saved, and its other files kept.

  Args:
    model: the network with the imported weights.
    output_dir: --output_dir; created if missing.
    metadata: the config's "metadata" section.
    overwrite: replace a model the directory holds.

  Returns:
    The checkpoint's prefix, ``<output_dir>/ckpt-0``.

  Raises:
    OutputDirError: the directory holds a model (without ``overwrite``) or
      the filesystem refuses the write (a full disk); nothing was changed.
    access.ModelDirLockedError: a trainer (or another import) holds the
      directory.
  """
  created = not tf.io.gfile.exists(output_dir)
  try:
    tf.io.gfile.makedirs(output_dir)
  except (tf.errors.OpError, OSError) as e:
    raise _write_failure(output_dir, e) from None
  held = access.lock(output_dir, TOOL, "--output_dir")
  try:
    _remove_own_leftovers(output_dir)
    check_output_dir(output_dir, overwrite)   # again, under the lock
    temp = os.path.join(output_dir, _TEMP_PREFIX + uuid.uuid4().hex[:12])
    try:
      model_io.save_model(model, temp, metadata)
    except (tf.errors.OpError, OSError) as e:
      if tf.io.gfile.exists(temp):
        tf.io.gfile.rmtree(temp)
      if created and held is not None:
        held.release()
        held = None
        tf.io.gfile.rmtree(output_dir)
      raise _write_failure(output_dir, e) from None
    if overwrite:
      for name in tf.io.gfile.listdir(output_dir):
        name = name.rstrip("/")
        if _MODEL_FILE.match(name):
          path = os.path.join(output_dir, name)
          if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
          else:
            tf.io.gfile.remove(path)
    # Checkpoint files first, then the state file, then model_config.json:
    # a directory with a config has a checkpoint (store's docstring).
    names = sorted(n.rstrip("/") for n in tf.io.gfile.listdir(temp))
    order = ([n for n in names if n.startswith("ckpt-")] +
             [model_io.STATE_FILE, model_io.CONFIG_FILE])
    for name in order:
      tf.io.gfile.rename(os.path.join(temp, name),
                         os.path.join(output_dir, name), overwrite=True)
    tf.io.gfile.rmtree(temp)
  finally:
    if held is not None:
      held.release()
  return os.path.join(output_dir, f"{model_io.CHECKPOINT_PREFIX}-0")


def _apply_carried(metadata: Dict[str, Any], carried: Dict[str, Any],
                   path: str) -> None:
  """Puts what ``export_torch`` carried into the metadata, checked."""
  if "preprocessing" in carried:
    try:
      preprocessing = preprocessing_lib.Preprocessing.from_json(
          carried["preprocessing"])
    except (TypeError, ValueError) as e:
      raise ValueError(
          f"--checkpoint={path}: its '{pytorch.CARRIED_KEY}' entry holds a "
          f"preprocessing this version cannot read ({e}); export it again "
          "with this version") from None
    metadata["preprocessing"] = carried["preprocessing"]
    metadata["input_convention"] = conventions.normalisation_of(
        preprocessing)
  if "input_convention" in carried:
    metadata["input_convention"] = carried["input_convention"]
  if "class_names" in carried:
    metadata["class_names"] = carried["class_names"]


def import_checkpoint(path: str, output_dir: str, trust: bool = False,
                      file_format: str = "auto", overwrite: bool = False,
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
    overwrite: replace the model ``output_dir`` holds (``write_model_dir``).
    **model_kwargs: ``PyramidNet`` arguments the user gave; missing or None
      ones are inferred from the file.

  Returns:
    (the saved checkpoint's path, the metadata: what was loaded from where,
    the input convention, the parameter count, a description of the model,
    ``model_flags`` (the flags that rebuild it), ``inferred_from`` and
    ``carried``: what export_torch carried in the file, if anything).

  Raises:
    ValueError: for an unknown ``file_format`` or a file that cannot be read
      as its format (``torch7_reader.Torch7FormatError``,
      ``caffe_reader.CaffeFormatError``), whose architecture cannot be
      inferred (``infer.InferenceError``), that disagrees with given model
      arguments (``ArchitectureConflict``) or does not fit the model
      (``pytorch.StateDictMismatch``, ``structure.ImportMismatch``), holds
      NaN or Inf, or an ``output_dir`` that holds a model
      (``OutputDirError``) or cannot be written; nothing is written then.
    access.ModelDirLockedError: a trainer holds ``output_dir``.
    FileNotFoundError: if ``path`` does not exist.
    zipfile.BadZipFile: if an ``.npz`` is not a readable archive.
    ImportError: if a PyTorch file is to be read and torch is not installed.
  """
  if file_format not in FORMATS:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got "
                     f"{file_format!r}")
  check_output_dir(output_dir, overwrite)   # before reading anything
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
  nonfinite = pytorch.nonfinite_tensors(model)
  if nonfinite:
    raise ValueError(
        f"--checkpoint={path} holds NaN/Inf in {len(nonfinite)} tensor(s): "
        + ", ".join(nonfinite[:5]) + (f" and {len(nonfinite) - 5} more"
                                      if len(nonfinite) > 5 else "") +
        "; nothing was written (a network with them scores nothing; the "
        "trainer never checkpoints such values): import an earlier file of "
        "the run")
  carried = metadata.pop("carried", {})
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
  _apply_carried(metadata, carried, path)
  saved = write_model_dir(model, output_dir, metadata, overwrite)
  metadata["carried"] = carried
  metadata["parameters"] = model_lib.count_params(model)
  metadata["description"] = pytorch.describe_model(model)
  return saved, metadata

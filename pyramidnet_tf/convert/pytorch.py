"""Loads the authors' PyTorch PyramidNet checkpoints into our network.

The authors' ``train.py`` (dyhan0920/PyramidNet-PyTorch, and CutMix-PyTorch
which reuses it) saves ``{'state_dict': ..., 'epoch': ..., ...}`` from an
``nn.DataParallel`` model, so keys carry a ``module.`` prefix; their released
ImageNet-101 file has no ``num_batches_tracked`` entries. All of these load.
Our ``PyramidNet`` names its variables with the authors' state_dict keys
(``PyramidNet.torch_variables()``), so variables are matched by name, and
every shape is checked, so a wrong depth/alpha fails loudly instead of
loading shifted weights. torch itself is only needed to read ``.pth`` files;
the mapping works on numpy arrays (or an ``.npz`` of them).
"""

import collections
import os
import re
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np

from pyramidnet_tf.model import units

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
# The entry of an exported checkpoint under which export_torch carries what
# the weights alone do not say: the image size, the input normalisation and
# the class names. The authors' train.py reads only 'epoch', 'arch',
# 'state_dict', 'best_err1', 'best_err5' and 'optimizer' from a checkpoint,
# so it never sees this one.
CARRIED_KEY = "pyramidnet_tf"
CARRIED_VERSION = 1
_PREFIXES = ("module.", "model.")
_MAX_LISTED = 10


class StateDictMismatch(ValueError):
  """The checkpoint does not fit the model (keys or shapes differ)."""


def _to_numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
    value = value.detach().cpu()
    if str(value.dtype) == "torch.bfloat16":
      value = value.float()
    return value.numpy()
  return np.asarray(value)


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Plain ``{name: array}`` from any of the authors' checkpoint containers.

  Args:
    checkpoint: a bare state_dict, or a dict holding it under ``state_dict``
      (or ``model_state_dict`` / ``model``); keys may carry DataParallel's
      ``module.`` prefix (or ``model.``), possibly nested. Values may be
      numpy arrays or torch tensors.

  Returns:
    The parameter arrays as numpy, under the keys without prefix.

  Raises:
    StateDictMismatch: if ``checkpoint`` is not a mapping or holds no
      parameter arrays.
  """
  if not isinstance(checkpoint, Mapping):
    raise StateDictMismatch(
        f"expected a mapping of parameter names to arrays, got "
        f"{type(checkpoint).__name__}")
  state = checkpoint
  for key in _CONTAINER_KEYS:
    inner = checkpoint.get(key)
    if isinstance(inner, Mapping) and inner:
      state = inner
      break
  tensors = {k: v for k, v in state.items() if not isinstance(v, Mapping)}
  if not tensors:
    raise StateDictMismatch(
        "no parameter arrays found; top-level keys are: " +
        ", ".join(sorted(map(str, checkpoint))[:_MAX_LISTED]))
  stripped = True
  while stripped:  # e.g. "module." from DataParallel, possibly nested
    stripped = False
    for prefix in _PREFIXES:
      if all(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items()}
        stripped = True
  return {k: _to_numpy(v) for k, v in tensors.items()}


def plain_value(value: Any) -> Any:
  """``value`` as JSON types (tuples become lists), or ValueError."""
  if isinstance(value, Mapping):
    return {str(k): plain_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [plain_value(v) for v in value]
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  raise ValueError(f"a {type(value).__name__}")


def carried_settings(checkpoint: Any, path: str) -> Dict[str, Any]:
  """What ``export_torch`` carried in a checkpoint (``CARRIED_KEY``).

  Args:
    checkpoint: what the file holds (``read_checkpoint_file``).
    path: the file, for messages.

  Returns:
    {} when the file carries nothing (the authors' own files); else any of
    "preprocessing" and "input_convention" (the model directory's records,
    as dicts), "class_names" (a list of str) and "image_size" (an int).

  Raises:
    ValueError: if the entry is there but malformed (one line).
  """
  if not isinstance(checkpoint, Mapping) or CARRIED_KEY not in checkpoint:
    return {}
  value = checkpoint[CARRIED_KEY]

  def bad(why: str) -> ValueError:
    return ValueError(f"--checkpoint={path}: its '{CARRIED_KEY}' entry "
                      f"(written by pyramidnet_tf.export_torch) {why}; "
                      "export it again, or delete that entry to import the "
                      "weights with the authors' input convention")

  if not isinstance(value, Mapping):
    raise bad(f"is a {type(value).__name__}, not a dict")
  if value.get("format_version") != CARRIED_VERSION:
    raise bad(f"has format_version {value.get('format_version')!r}; this "
              f"version reads {CARRIED_VERSION}")
  try:
    plain = plain_value(value)
  except ValueError as e:
    raise bad(f"holds {e}, not a plain value") from None
  carried = {}
  for key in ("preprocessing", "input_convention"):
    if key in plain:
      if not isinstance(plain[key], dict):
        raise bad(f"has a {key} that is not a dict")
      carried[key] = plain[key]
  if "class_names" in plain:
    names = plain["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str)
                                              for n in names):
      raise bad("has class_names that are not a list of strings")
    carried["class_names"] = names
  if "image_size" in plain:
    if not isinstance(plain["image_size"], int):
      raise bad("has an image_size that is not an integer")
    carried["image_size"] = plain["image_size"]
  return carried


def nonfinite_tensors(model) -> List[str]:
  """The authors' names of ``model``'s tensors that hold NaN or Inf.

  Args:
    model: a ``PyramidNet`` (its ``torch_variables``).
  """
  return [key for key, (variable, _) in model.torch_variables().items()
          if variable is not None and not np.all(np.isfinite(
              variable.numpy()))]


def describe_state_dict(state: Mapping[str, np.ndarray]) -> str:
  """One line on what a state_dict holds (stages, unit type, widths).

  Args:
    state: PyTorch PyramidNet keys -> arrays.

  Returns:
    E.g. "CIFAR stem (3x3); basic units 3/3/3 (depth 20); 28 features -> 10
    classes".
  """
  unit_indices = collections.defaultdict(set)
  bottleneck = False
  for key in state:
    match = re.match(r"layer(\d+)\.(\d+)\.(\w+)\.", key)
    if match:
      unit_indices[int(match.group(1))].add(int(match.group(2)))
      bottleneck |= match.group(3) == "conv3"
  parts = []
  stem = state.get("conv1.weight")
  if stem is not None and np.ndim(stem) == 4:
    parts.append("ImageNet stem (7x7)" if stem.shape[-1] == 7 else
                 f"CIFAR stem ({stem.shape[-1]}x{stem.shape[-1]})")
  if unit_indices:
    counts = [len(unit_indices[s]) for s in sorted(unit_indices)]
    per_unit = 3 if bottleneck else 2
    parts.append(f"{'bottleneck' if bottleneck else 'basic'} units "
                 f"{'/'.join(map(str, counts))} (depth "
                 f"{per_unit * sum(counts) + 2})")
  fc = state.get("fc.weight")
  if fc is not None and np.ndim(fc) == 2:
    parts.append(f"{fc.shape[1]} features -> {fc.shape[0]} classes")
  return "; ".join(parts) if parts else "no PyramidNet keys recognised"


def describe_model(model) -> str:
  """One line on a model's architecture, as mismatch messages show it.

  Args:
    model: a ``PyramidNet``.

  Returns:
    E.g. "cifar10 depth 20 alpha 12 basic units 3/3/3, 28 features -> 10
    classes".
  """
  arch = model.arch
  return (f"{arch.dataset} depth {arch.depth} alpha {arch.alpha:g} "
          f"{'bottleneck' if arch.bottleneck else 'basic'} units "
          f"{'/'.join(map(str, arch.stage_units))}, {model.num_features} "
          f"features -> {model.num_classes} classes")


def check_state_dict(model, state: Mapping[str, np.ndarray]) -> List[Tuple]:
  """Matches ``state`` against ``model`` key by key and shape by shape.

  Args:
    model: a ``PyramidNet``.
    state: an unwrapped state_dict (``unwrap_state_dict``).

  Returns:
    (variable, array, layout) for every variable of the model.

  Raises:
    StateDictMismatch: listing the first missing, unexpected and mis-shaped
      keys (expected vs got) and what the checkpoint appears to hold.
  """
  expected = model.torch_variables()
  missing, shapes, matched = [], [], []
  for key, (variable, layout) in expected.items():
    if variable is None:  # num_batches_tracked: optional, unused
      continue
    if key not in state:
      missing.append(f"{key} {list(units.torch_shape(variable, layout))}")
      continue
    want = units.torch_shape(variable, layout)
    got = tuple(np.shape(state[key]))
    if want != got:
      shapes.append(f"{key}: expected {list(want)}, got {list(got)}")
      continue
    matched.append((variable, state[key], layout))
  unexpected = [k for k in state if k not in expected]
  if missing or shapes or unexpected:
    lines = [f"checkpoint does not match the model "
             f"({len(missing)} missing, {len(unexpected)} unexpected, "
             f"{len(shapes)} shape mismatches)"]
    if shapes:
      lines.append("first shape mismatches: " + "; ".join(shapes[:_MAX_LISTED]))
    if missing:
      lines.append("first missing keys (expected [shape]): " +
                   ", ".join(missing[:_MAX_LISTED]))
    if unexpected:
      lines.append("first unexpected keys (got [shape]): " + ", ".join(
          f"{k} {list(np.shape(state[k]))}" for k in unexpected[:_MAX_LISTED]))
    lines.append("checkpoint holds: " + describe_state_dict(state))
    lines.append(f"model expects: {describe_model(model)}")
    raise StateDictMismatch("\n".join(lines))
  return matched


def load_state_dict(model, state_dict: Mapping[str, Any]) -> int:
  """Loads a PyTorch state_dict (or a checkpoint holding one) into ``model``.

  Args:
    model: a ``PyramidNet`` built with the checkpoint's configuration.
    state_dict: names -> arrays (numpy or torch tensors), optionally wrapped
      as the authors' train.py saves it.

  Returns:
    The number of arrays assigned.

  Raises:
    StateDictMismatch: if any key or shape differs (nothing is assigned).
  """
  state = unwrap_state_dict(state_dict)
  matched = check_state_dict(model, state)
  for variable, array, layout in matched:
    variable.assign(units.to_tf_layout(array, layout).astype(np.float32))
  return len(matched)


def read_checkpoint_file(path: str, trust: bool = False,
                         npz: bool = False) -> Mapping[str, Any]:
  """Reads a ``.pth``/``.pth.tar`` (with torch) or ``.npz`` file.

  Args:
    path: the file.
    trust: let ``torch.load`` unpickle arbitrary Python objects (only for
      files you trust); by default it reads tensors and plain types.
    npz: read the file as an ``.npz`` whatever its name (a name ending in
      ``.npz`` is always read so).

  Returns:
    What the file holds: a checkpoint dict or a state_dict.

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    zipfile.BadZipFile: if an ``.npz`` is not a readable archive.
    ImportError: if a PyTorch file is to be read and torch is not installed.
    ValueError: if torch cannot read the file, or it holds objects beyond
      tensors and ``trust`` is off.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"--checkpoint: {path} does not exist")
  if npz or path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError(
        f"reading {path} needs PyTorch: pip install torch (CPU is enough), or "
        "convert it to .npz elsewhere with numpy.savez(path, **{k: "
        "v.numpy() for k, v in state_dict.items()})") from None
  try:
    return torch.load(path, map_location="cpu", weights_only=not trust)
  except Exception as e:  # pylint: disable=broad-except
    if not trust and "weights_only" in str(e):
      raise ValueError(
          f"{path} holds Python objects beyond tensors, which "
          "torch.load(weights_only=True) refuses; if you trust the file, "
          f"rerun with --trust_checkpoint. Details: {e}") from None
    raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {e}") from e


def to_state_dict(model) -> "collections.OrderedDict[str, np.ndarray]":
  """The model's weights as the authors' PyTorch state_dict, in key order.

  The inverse of ``load_state_dict``: the keys of
  ``PyramidNet.torch_variables`` (the authors' names), arrays in PyTorch's
  layout. ``num_batches_tracked`` has no TF counterpart; it is written as 0,
  which ``torch.nn.BatchNorm2d`` accepts under ``load_state_dict(strict=True)``
  and ignores with ``momentum`` set (the authors' 0.1).

  Args:
    model: a ``PyramidNet``.

  Returns:
    key -> float32 array (an int64 zero for ``num_batches_tracked``).
  """
  state = collections.OrderedDict()
  for key, (variable, layout) in model.torch_variables().items():
    if variable is None:
      state[key] = np.zeros((), np.int64)
      continue
    value = units.to_torch_layout(variable.numpy(), layout)
    state[key] = np.ascontiguousarray(value, dtype=np.float32)
  return state

r"""Imports the authors' PyTorch PyramidNet checkpoints into a TF model.

The authors' ``train.py`` (dyhan0920/PyramidNet-PyTorch, and CutMix-PyTorch
which reuses it) saves ``{'state_dict': ..., 'epoch': ..., ...}`` from an
``nn.DataParallel`` model, so keys carry a ``module.`` prefix; their released
ImageNet-101 file has no ``num_batches_tracked`` entries. All of these load.
Variables are matched by name through ``PyramidNet.torch_variables()`` and
every shape is checked, so a wrong depth/alpha fails loudly instead of loading
shifted weights.

    python -m pyramidnet_tf.import_torch --checkpoint=model_best.pth.tar \
        --dataset=imagenet --depth=101 --alpha=360 --output_dir=/tmp/pn101

writes a model directory that ``model_io.load_model`` (and the training,
evaluation and export tools) read.

The same command reads the authors' Torch7 ``.t7`` models (fb.resnet.torch
module trees) and Caffe ``.caffemodel`` files (jhkim89/PyramidNet-caffe);
``--format`` (default ``auto``) is detected from the file's first bytes and
the mapping lives in ``import_weights``. ``model_config.json`` records the
input convention the file's authors used (``metadata.input_convention``:
pixels p in 0..255, in ``color`` channel order, become
``(p * scale - mean[c]) / std[c]``), which evaluation and export apply.
"""

import collections
import hashlib
import os
import re
import zipfile
from typing import Any, Dict, List, Mapping, Tuple

from absl import app
from absl import flags
import numpy as np

from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.model import units

_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model")
_PREFIXES = ("module.", "model.")
_MAX_LISTED = 10

# What the authors' PyTorch data loaders feed the network (spec 4.3): RGB in
# [0, 1], then (x - mean) / std. Their CIFAR code uses CIFAR-10 statistics for
# both CIFAR datasets.
TORCH_INPUT_CONVENTION = {
    "cifar10": {"color": "RGB", "scale": 1.0 / 255.0,
                "mean": [125.3 / 255, 123.0 / 255, 113.9 / 255],
                "std": [63.0 / 255, 62.1 / 255, 66.7 / 255]},
    "imagenet": {"color": "RGB", "scale": 1.0 / 255.0,
                 "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225]},
}
TORCH_INPUT_CONVENTION["cifar100"] = TORCH_INPUT_CONVENTION["cifar10"]


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

  Accepts a bare state_dict, a dict holding it under ``state_dict`` (or
  ``model_state_dict`` / ``model``), and keys with DataParallel's ``module.``
  prefix.
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


def describe_state_dict(state: Mapping[str, np.ndarray]) -> str:
  """One line on what a state_dict holds (stages, unit type, widths)."""
  units = collections.defaultdict(set)
  bottleneck = False
  for key in state:
    match = re.match(r"layer(\d+)\.(\d+)\.(\w+)\.", key)
    if match:
      units[int(match.group(1))].add(int(match.group(2)))
      bottleneck |= match.group(3) == "conv3"
  parts = []
  stem = state.get("conv1.weight")
  if stem is not None and np.ndim(stem) == 4:
    parts.append("ImageNet stem (7x7)" if stem.shape[-1] == 7 else
                 f"CIFAR stem ({stem.shape[-1]}x{stem.shape[-1]})")
  if units:
    counts = [len(units[s]) for s in sorted(units)]
    per_unit = 3 if bottleneck else 2
    parts.append(f"{'bottleneck' if bottleneck else 'basic'} units "
                 f"{'/'.join(map(str, counts))} (depth "
                 f"{per_unit * sum(counts) + 2})")
  fc = state.get("fc.weight")
  if fc is not None and np.ndim(fc) == 2:
    parts.append(f"{fc.shape[1]} features -> {fc.shape[0]} classes")
  return "; ".join(parts) if parts else "no PyramidNet keys recognised"


def check_state_dict(model, state: Mapping[str, np.ndarray]) -> List[Tuple]:
  """Matches ``state`` against ``model``; returns (variable, array, layout).

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


def describe_model(model) -> str:
  arch = model.arch
  return (f"{arch.dataset} depth {arch.depth} alpha {arch.alpha:g} "
          f"{'bottleneck' if arch.bottleneck else 'basic'} units "
          f"{'/'.join(map(str, arch.stage_units))}, {model.num_features} "
          f"features -> {model.num_classes} classes")


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
  """Reads a ``.pth``/``.pth.tar`` (with torch) or ``.npz`` file."""
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


def sha256_of(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


FORMATS = ("auto", "pytorch", "npz", "torch7", "caffe")


def detect_format(path: str) -> str:
  """"pytorch", "npz", "torch7" or "caffe", from the file's first bytes."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"--checkpoint: {path} does not exist")
  with open(path, "rb") as f:
    head = f.read(16)
  from pyramidnet_tf.convert import caffe_reader  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.convert import torch7_reader  # pylint: disable=g-import-not-at-top
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


def input_convention(file_format: str, dataset: str) -> Dict[str, Any]:
  """What the file's authors fed the network: pixels p in 0..255, in
  ``color`` channel order, become (p * scale - mean[c]) / std[c]."""
  from pyramidnet_tf.convert import import_weights  # pylint: disable=g-import-not-at-top
  if file_format == "torch7":
    if dataset == "imagenet":
      return dict(import_weights.TORCH7_INPUT_CONVENTION)
    return dict(import_weights.TORCH7_CIFAR_CONVENTION[dataset])
  if file_format == "caffe":
    return dict(import_weights.CAFFE_INPUT_CONVENTION)
  return dict(TORCH_INPUT_CONVENTION[dataset])


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
  """
  from pyramidnet_tf.model import network as model_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store as model_io  # pylint: disable=g-import-not-at-top

  if file_format not in FORMATS:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got "
                     f"{file_format!r}")
  if file_format == "auto":
    file_format = detect_format(path)
  elif not os.path.exists(path):
    raise FileNotFoundError(f"--checkpoint: {path} does not exist")
  metadata: Dict[str, Any] = {}
  if file_format in ("pytorch", "npz"):
    checkpoint = read_checkpoint_file(path, trust, npz=file_format == "npz")
    model = model_lib.PyramidNet(**model_kwargs)
    metadata["arrays_loaded"] = load_state_dict(model, checkpoint)
    for key in ("epoch", "arch", "best_err1", "best_err5"):
      value = checkpoint.get(key) if isinstance(checkpoint, Mapping) else None
      if isinstance(value, (int, float, str)):
        metadata[key] = value
  else:
    from pyramidnet_tf.convert import import_weights  # pylint: disable=g-import-not-at-top
    model = model_lib.PyramidNet(**model_kwargs)
    loader = (import_weights.load_torch7 if file_format == "torch7" else
              import_weights.load_caffe)
    metadata.update(loader(model, path))
  metadata.update({
      "source": {"npz": "pytorch"}.get(file_format, file_format),
      "format": file_format,
      "checkpoint": os.path.abspath(path),
      "checkpoint_sha256": sha256_of(path),
      "input_convention": input_convention(file_format, model.dataset),
  })
  saved = model_io.save_model(model, output_dir, metadata)
  metadata["parameters"] = model_lib.count_params(model)
  metadata["description"] = describe_model(model)
  return saved, metadata


flags.DEFINE_string("checkpoint", None,
                    "PyTorch checkpoint (.pth/.pth.tar as the authors save it, "
                    "or a bare state_dict), an .npz of name -> array, a "
                    "Torch7 .t7 model (fb.resnet.torch) or a Caffe "
                    ".caffemodel.")
flags.DEFINE_enum("format", "auto", list(FORMATS),
                  "File format of --checkpoint; auto detects it from the "
                  "file's first bytes (zip/pickle: pytorch, Torch7 header: "
                  "torch7, protobuf NetParameter: caffe).")
flags.DEFINE_string("output_dir", None,
                    "Model directory to write (TF checkpoint + "
                    "model_config.json).")
flags.DEFINE_bool("trust_checkpoint", False,
                  "Unpickle arbitrary Python objects in --checkpoint (only for "
                  "files you trust; default reads tensors and plain types).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  for name in ("checkpoint", "output_dir"):
    if not getattr(flags.FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  model_flags.architecture()  # flag errors before loading anything
  try:
    saved, metadata = import_checkpoint(
        flags.FLAGS.checkpoint, flags.FLAGS.output_dir,
        flags.FLAGS.trust_checkpoint, flags.FLAGS.format,
        **model_flags.model_kwargs())
  except (StateDictMismatch, ValueError, FileNotFoundError, ImportError) as e:
    raise app.UsageError(str(e)) from None
  except zipfile.BadZipFile as e:  # np.load of a corrupt or truncated .npz
    raise app.UsageError(f"--checkpoint={flags.FLAGS.checkpoint} is not a "
                         f"readable .npz archive ({e})") from None
  print(f"imported {metadata['arrays_loaded']} arrays "
        f"({metadata['parameters']:,} parameters) from "
        f"{flags.FLAGS.checkpoint}")
  print(f"model: {metadata['description']}")
  print(f"format: {metadata['format']}; input convention: "
        f"{metadata['input_convention']}")
  if metadata.get("bn_eps_folded_into_variance"):
    print(f"note: {metadata['bn_eps_folded_into_variance']} batch norms used "
          "an eps other than 1e-5; it was folded into their variances")
  for note in metadata.get("notes", []):
    print(f"note: {note}")
  print(f"wrote {saved} and "
        f"{os.path.join(flags.FLAGS.output_dir, 'model_config.json')}")


def run():
  app.run(cli.guard("pyramidnet_tf.import_torch", main))


if __name__ == "__main__":
  run()

"""Writing our model directories as the authors' PyTorch checkpoints.

``export_torch`` is the inverse of ``importer.import_checkpoint`` for the
authors' PyTorch format: the file their ``train.py`` saves, which their
``PyramidNet.py`` and ``import_torch`` load. The command line is
``python -m pyramidnet_tf.export_torch``.

Besides ``epoch``, ``arch`` and ``state_dict`` the file carries, under
``pytorch.CARRIED_KEY`` (an entry the authors' code never reads), what the
weights alone do not say: the image size, the input normalisation and the
class names of the model directory. ``import_torch`` restores them, so an
export imported back evaluates as the original did.
"""

import dataclasses
import io
import logging
import os
from typing import Any, Callable, Dict

from pyramidnet_tf import errors


@dataclasses.dataclass(frozen=True)
class Exported:
  """What ``export_torch`` wrote, for the summary lines.

  Attributes:
    step: the step of the checkpoint exported.
    count: the number of tensors in the state_dict.
    model: the ``PyramidNet`` exported.
    averaged: whether the EMA of the weights was written.
    preprocessing: the ``Preprocessing`` the network expects (what a
      PyTorch user must apply: ``conventions.torchvision_recipe``).
    carried: the file's ``pytorch.CARRIED_KEY`` entry.
  """
  step: int
  count: int
  model: Any
  averaged: bool
  preprocessing: Any
  carried: Dict[str, Any]


def check_output(output: str, overwrite: bool) -> str:
  """Checks --output before any work; returns its directory.

  Args:
    output: the .pth file to write.
    overwrite: --overwrite.

  Raises:
    errors.FlagError: if ``output`` is a directory, exists (without
      ``overwrite``) or its directory does not exist.
  """
  if os.path.isdir(output):
    raise errors.FlagError(
        f"--output={output} is a directory; --output is the .pth file to "
        f"write, e.g. --output={os.path.join(output, 'model.pth')}")
  if os.path.exists(output) and not overwrite:
    raise errors.FlagError(f"--output={output} exists; pass --overwrite to "
                        "replace it")
  parent = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(parent):
    raise errors.FlagError(f"--output={output}: directory {parent} does not "
                        "exist")
  return parent


def carried_settings(metadata: Dict[str, Any], preprocessing,
                     class_names) -> Dict[str, Any]:
  """The ``pytorch.CARRIED_KEY`` entry of an export, plain types only.

  Args:
    metadata: the model directory's metadata; its recorded
      "preprocessing" and "input_convention" are carried as they are (a
      directory without them is evaluated with defaults, and so is its
      import).
    preprocessing: the ``Preprocessing`` the network expects.
    class_names: one name per class, or None.
  """
  from pyramidnet_tf.convert import pytorch  # pylint: disable=g-import-not-at-top
  carried = {"format_version": pytorch.CARRIED_VERSION,
             "image_size": int(preprocessing.image_size)}
  for key in ("preprocessing", "input_convention"):
    if key in metadata:
      carried[key] = pytorch.plain_value(metadata[key])
  if class_names:
    carried["class_names"] = [str(name) for name in class_names]
  return carried


def _write_file(data: bytes, output: str, parent: str) -> None:
  """Writes ``data`` to ``output`` through a temporary file and a rename.

  Raises:
    errors.UserError: when the filesystem refuses the write (a full disk);
      the temporary is removed and ``output`` left as it was.
  """
  temporary = os.path.join(parent, f".{os.path.basename(output)}.tmp")
  existed = os.path.exists(output)
  try:
    with open(temporary, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, output)
  except OSError as e:
    problem = errors.storage_problem(e)
    if problem is None:
      raise
    _, reason, no_space = problem
    raise errors.UserError(
        f"cannot write --output={output}: {reason}; nothing was written" +
        ("; the existing file is unchanged" if existed else "") +
        ("; free some space or choose another --output" if no_space else
         "; check the directory's owner and mode or choose another --output")
    ) from None
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)


def export_torch(model_dir: str, output: str, checkpoint=None,
                 use_ema: str = "auto", overwrite: bool = False,
                 warn: Callable[[str], None] = logging.warning) -> Exported:
  """Writes ``model_dir``'s weights to ``output`` as the authors save them.

  Args:
    model_dir: a model directory.
    output: the .pth file to write.
    checkpoint: a checkpoint of ``model_dir``; None: the newest intact one
      (``store.open_model``).
    use_ema: "auto", "yes" or "no": write the EMA of the weights
      (``store.open_model``).
    overwrite: replace an existing ``output``.
    warn: called with one line when damaged newer checkpoints are skipped.

  Returns:
    The ``Exported`` summary.

  Raises:
    errors.UserError: if ``output`` is a directory, exists (without
      ``overwrite``), its directory does not exist or refuses the write,
      or PyTorch is not installed.
    FileNotFoundError, ValueError: for a model directory that cannot be
      read (``store.open_model``), or ``use_ema="yes"`` without an EMA.
  """
  parent = check_output(output, overwrite)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise errors.UserError("export_torch needs PyTorch: pip install torch (the "
                        "CPU build is enough)") from None
  from pyramidnet_tf.convert import pytorch  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import access  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top

  opened = store.open_model(model_dir, checkpoint, warn, use_ema=use_ema)
  model, metadata, averaged = opened.model, opened.metadata, opened.ema
  state = {f"module.{key}": torch.from_numpy(value)
           for key, value in pytorch.to_state_dict(model).items()}
  step = store.step_of(opened.checkpoint)
  preprocessing = access.preprocessing_of(metadata, opened.config["model"])
  names = metadata.get("class_names")
  carried = carried_settings(
      metadata, preprocessing,
      names if names and len(names) == model.num_classes else None)
  # Serialised in memory, then written by Python: a full disk is then an
  # OSError naming its cause (torch's own writer only says it failed).
  buffer = io.BytesIO()
  torch.save({"epoch": step, "arch": "pyramidnet", "state_dict": state,
              pytorch.CARRIED_KEY: carried}, buffer)
  _write_file(buffer.getvalue(), output, parent)
  return Exported(step=step, count=len(state), model=model,
                  averaged=averaged, preprocessing=preprocessing,
                  carried=carried)

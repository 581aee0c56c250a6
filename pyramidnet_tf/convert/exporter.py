"""Writing our model directories as the authors' PyTorch checkpoints.

``export_torch`` is the inverse of ``importer.import_checkpoint`` for the
authors' PyTorch format: the file their ``train.py`` saves, which their
``PyramidNet.py`` and ``import_torch`` load. The command line is
``python -m pyramidnet_tf.export_torch``.
"""

import os

from pyramidnet_tf.cli import errors as cli


def export_torch(model_dir: str, output: str, checkpoint=None,
                 use_ema: str = "auto", overwrite: bool = False):
  """Writes ``model_dir``'s weights to ``output`` as the authors save them.

  Args:
    model_dir: a model directory.
    output: the .pth file to write.
    checkpoint: a checkpoint of ``model_dir``; None: the latest.
    use_ema: "auto", "yes" or "no": write the EMA of the weights
      (``ema.should_use``).
    overwrite: replace an existing ``output``.

  Returns:
    (the step exported, the number of tensors written, the model, whether
    the EMA was written), for the summary lines.

  Raises:
    cli.UserError: if ``output`` exists (without ``overwrite``) or its
      directory does not, or PyTorch is not installed.
    FileNotFoundError, ValueError: for a model directory that cannot be
      read (``store.load_model``), or ``use_ema="yes"`` without an EMA.
  """
  if os.path.exists(output) and not overwrite:
    raise cli.UserError(f"--output={output} exists; pass --overwrite to "
                        "replace it")
  parent = os.path.dirname(os.path.abspath(output))
  if not os.path.isdir(parent):
    raise cli.UserError(f"--output={output}: directory {parent} does not "
                        "exist")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise cli.UserError("export_torch needs PyTorch: pip install torch (the "
                        "CPU build is enough)") from None
  from pyramidnet_tf.convert import pytorch  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import ema as ema_lib  # pylint: disable=g-import-not-at-top

  path = store.find_checkpoint(model_dir, checkpoint)
  model, metadata = store.load_model(model_dir, path)
  averaged = ema_lib.should_use(use_ema, metadata)
  if averaged:
    ema_lib.load_averages(model, path)
  state = {f"module.{key}": torch.from_numpy(value)
           for key, value in pytorch.to_state_dict(model).items()}
  step = store.step_of(path)
  temporary = os.path.join(parent, f".{os.path.basename(output)}.tmp")
  try:
    torch.save({"epoch": step, "arch": "pyramidnet", "state_dict": state},
               temporary)
    os.replace(temporary, output)
  finally:
    if os.path.exists(temporary):
      os.remove(temporary)
  return step, len(state), model, averaged

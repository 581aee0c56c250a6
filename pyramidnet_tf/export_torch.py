r"""Command line: writes a model directory's weights as a PyTorch checkpoint.

The file is what the authors' ``train.py`` (dyhan0920/PyramidNet-PyTorch)
saves: ``{'epoch', 'arch': 'pyramidnet', 'state_dict'}``, the state_dict of
their model wrapped in ``nn.DataParallel`` (keys ``module.conv1.weight``,
...), so their code loads it as it loads its own checkpoints, and
``import_torch`` reads it back:

    python -m pyramidnet_tf.export_torch --model_dir=runs/c10 \
        --output=model.pth

Their code builds additive PyramidNets without ShakeDrop; other variants
are written under the same names, with a note saying so. Their code loads
the weights with ``load_state_dict(checkpoint['state_dict'])``; its
``--resume`` also reads ``best_err1``, ``best_err5`` and ``optimizer``,
which a weights-only export does not have.

The file also carries, under the key ``pyramidnet_tf`` (which their code
never reads), the model directory's image size, input normalisation and
class names: ``import_torch`` restores them, so the round trip evaluates as
the original did. The run prints the torchvision transforms a PyTorch user
must apply to feed the network as it was trained.

The default checkpoint is the newest intact one: a damaged newer one
(truncated, corrupted, NaN/Inf) is skipped with a warning. The file is
written under a temporary name and renamed, so a failed run (a full disk)
leaves no half-written file and any previous --output unchanged.
"""

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import export_torch_config
from pyramidnet_tf.cli import usage
from pyramidnet_tf.convert import exporter

PROG = "pyramidnet_tf.export_torch"

export_torch_config.define_flags()


def main(argv):
  """Exports --model_dir to --output and prints what was written.

  Args:
    argv: absl's remaining arguments; only the program name is allowed.

  Raises:
    cli.UserError: for extra arguments, missing or bad flags
      (``cli.FlagError``) or an expected failure of ``export_torch``.
  """
  del argv  # console_base.run refuses positional arguments
  config = export_torch_config.from_flags()
  try:
    exported = exporter.export_torch(
        config.model_dir, config.output, checkpoint=config.checkpoint,
        use_ema=config.use_ema, overwrite=config.overwrite)
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  from pyramidnet_tf.convert import conventions  # pylint: disable=g-import-not-at-top
  model = exported.model
  weights = "the EMA of the weights" if exported.averaged else "the weights"
  print(f"wrote {exported.count} tensors ({weights} at step "
        f"{exported.step}) to {config.output}: {{'epoch', 'arch', "
        "'state_dict'} with DataParallel's 'module.' keys, and "
        "'pyramidnet_tf' (image size, normalisation"
        f"{', class names' if 'class_names' in exported.carried else ''}"
        " for import_torch)")
  print(f"PyTorch input ({exported.preprocessing.image_size}x"
        f"{exported.preprocessing.image_size}): torchvision.transforms "
        f"{conventions.torchvision_recipe(exported.preprocessing)}")
  if model.arch.mode != "add" or model.shakedrop:
    print("note: the authors' PyTorch code builds additive PyramidNets "
          "without ShakeDrop; this network's tensors are written under "
          "their names all the same")


def run():
  """The ``pyramidnet-export-torch`` console entry point."""
  console.run(PROG, main, doc=__doc__, groups=usage.EXPORT_TORCH_GROUPS,
              knobs=usage.EXPORT_TORCH_KNOBS)


if __name__ == "__main__":
  run()

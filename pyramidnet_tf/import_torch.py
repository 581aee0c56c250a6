r"""Command line: imports the authors' released weights into a model directory.

Reads the authors' PyTorch checkpoints (dyhan0920/PyramidNet-PyTorch,
CutMix-PyTorch: ``.pth``/``.pth.tar``, or an ``.npz`` of the same arrays),
Torch7 ``.t7`` models (jhkim89/PyramidNet, fb.resnet.torch module trees) and
Caffe ``.caffemodel`` files (jhkim89/PyramidNet-caffe), and the imgclsmob /
pytorchcv releases (``pyramidnet110_a48_cifar10-0372-eb185645.pth``: their
state_dict names are told apart by the keys); ``--format`` (default
``auto``) is detected from the file's first bytes. The architecture is read
from the file's structure, so the model flags are optional; given ones must
agree with it, and every variable and shape is checked, so a wrong
depth/alpha fails with what differs instead of loading shifted weights.

    python -m pyramidnet_tf.import_torch --checkpoint=model_best.pth.tar \
        --output_dir=/tmp/pn101

writes a model directory that ``pyramidnet_tf.load_model`` (Python; it
returns the network with its preprocessing and class names), the training
(``--init_from``), evaluation and export tools read. ``model_config.json`` records the input
convention the file's authors used (``metadata.input_convention``: pixels p
in 0..255, in ``color`` channel order, become
``(p * scale - mean[c]) / std[c]``), which evaluation and export apply. A
file written by ``export_torch`` carries its model directory's image size,
normalisation and class names, which are restored, so evaluating the
import scores as the original did.

An --output_dir that already holds a model (checkpoints or a
model_config.json) is refused unless --overwrite is given, and one a
trainer is writing is refused while it runs (the trainer's lock). Weights
holding NaN or Inf are refused, naming the tensors. Nothing is written when
the import fails, a full disk included.

The library behind it is ``pyramidnet_tf.convert`` (``importer``, with one
module per format).
"""

import os
import zipfile

from absl import app

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import import_torch_config
from pyramidnet_tf.cli import usage

import_torch_config.define_flags()


def main(argv):
  """Imports --checkpoint into --output_dir and prints what was loaded.

  Args:
    argv: the command line left after flag parsing (the program name only).

  Raises:
    app.UsageError: for a file that cannot be read or does not fit the
      model (one line, nothing written).
    cli.FlagError: for missing or bad flags (``import_torch_config``).
  """
  del argv  # console_base.run refuses positional arguments
  config = import_torch_config.from_flags()
  # The format readers import TensorFlow: only once the flags are right.
  from pyramidnet_tf.convert import importer  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.convert import pytorch  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model_dir import access  # pylint: disable=g-import-not-at-top
  try:
    saved, metadata = importer.import_checkpoint(
        config.checkpoint, config.output_dir, config.trust_checkpoint,
        config.format, overwrite=config.overwrite, **config.model_overrides)
  except (pytorch.StateDictMismatch, ValueError, FileNotFoundError,
          ImportError, access.ModelDirError) as e:
    raise app.UsageError(str(e)) from None
  except zipfile.BadZipFile as e:  # np.load of a corrupt or truncated .npz
    raise app.UsageError(f"--checkpoint={config.checkpoint} is not a "
                         f"readable .npz archive ({e})") from None
  print(f"imported {metadata['arrays_loaded']} arrays "
        f"({metadata['parameters']:,} parameters) from "
        f"{config.checkpoint}")
  print(f"model: {metadata['description']}")
  print(f"architecture: {metadata['model_flags']} (from "
        f"{metadata['inferred_from']})")
  print(f"format: {metadata['format']}; input convention: "
        f"{metadata['input_convention']}")
  carried = metadata.get("carried") or {}
  if carried:
    print("restored from the file's export_torch record: " + ", ".join(
        what for key, what in (
            ("image_size", f"image size {carried.get('image_size')}"),
            ("preprocessing", "the preprocessing"),
            ("input_convention", "the input convention"),
            ("class_names", f"{len(carried.get('class_names', []))} class "
             "names")) if key in carried))
  if metadata.get("bn_eps_folded_into_variance"):
    print(f"note: {metadata['bn_eps_folded_into_variance']} batch norms used "
          "an eps other than 1e-5; it was folded into their variances")
  for note in metadata.get("notes", []):
    print(f"note: {note}")
  print(f"wrote {saved} and "
        f"{os.path.join(config.output_dir, 'model_config.json')}")


def run():
  """The ``pyramidnet-import-torch`` console entry point."""
  console.run("pyramidnet_tf.import_torch", main, doc=__doc__,
              groups=usage.IMPORT_GROUPS, knobs=usage.IMPORT_KNOBS,
              flags_check=import_torch_config.from_flags)


if __name__ == "__main__":
  run()

"""Exports a model directory as a SavedModel with preprocessing inside.

    python -m pyramidnet_tf.export --model_dir=DIR --export_dir=OUT

Signatures:
* ``serving_default`` / ``classify``: ``images`` = a batch of encoded image
  bytes -> top-5 ``classes`` (int32), ``class_names`` (string) and
  ``probabilities`` (float32). Decoding (``tf.io.decode_image``: JPEG, PNG,
  GIF first frame, BMP, WebP; not TIFF, for which TensorFlow has no decoder)
  and the evaluation preprocessing of the training run happen inside the
  graph. ``pyramidnet_tf.predict`` also reads TIFF, converting it on the host
  the way ``data_prep.folder`` does before calling this signature.
* ``logits``: ``images`` = float32 NHWC images already preprocessed
  (normalised, any size the architecture accepts) -> ``logits``.

The class names (from the training run's manifest, or --data_dir's) are
stored in the SavedModel and in ``class_names.txt`` next to it, so predict
needs nothing else.

The export is written into a temporary directory beside --export_dir and
renamed into place at the end, so --export_dir is never half written: a
failure (a full disk, say) removes the temporary directory and leaves any
previous export there untouched. An existing --export_dir is replaced only
when it is empty or a previous export. What an export killed midway leaves
(the hidden ``.<name>.tmp-*`` beside it, or ``.<name>.old-*``, the previous
export moved aside) is cleaned up by the next export to the same path: the
temporary is removed and a previous export put back, but only when no
other export into that directory is running (each holds a shared lock on
the directory while it writes).

The default checkpoint is the newest intact one: a damaged newer one
(truncated, corrupted, NaN/Inf) is skipped with a warning naming it.
"""

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import export_config
from pyramidnet_tf.cli import usage

PROG = "pyramidnet_tf.export"

export_config.define_flags()


def export(config: export_config.ExportConfig) -> str:
  """Writes the SavedModel of an export; returns where it went.

  Args:
    config: the export (``export_config.from_flags``).

  Raises:
    cli.UserError: for any expected failure of ``export_lib.export_model``.
  """
  # The library loads TensorFlow: imported once the flags are checked.
  from pyramidnet_tf.serving import export as export_lib  # pylint: disable=g-import-not-at-top
  try:
    return export_lib.export_model(
        config.model_dir, config.export_dir, data_dir=config.data.data_dir,
        checkpoint=config.checkpoint, image_size=config.data.image_size,
        convention=config.data.cifar_convention, top_k=config.top_k,
        use_ema=config.use_ema)
  except ValueError as e:  # model_io, ema, input_pipeline: user-fixable
    raise cli.UserError(str(e)) from None


def main(argv):
  """Exports --model_dir to --export_dir and prints where it went.

  Args:
    argv: absl's remaining arguments; only the program name is allowed.

  Raises:
    cli.UserError: for missing or bad flags (``cli.FlagError``), or any
      expected failure of ``export``.
  """
  del argv  # console_base.run refuses positional arguments
  path = export(export_config.from_flags())
  print(f"exported SavedModel to {path} (signatures: serving_default/classify "
        "on encoded images, logits on float NHWC images)")


def run():
  """The console entry point: parses flags and runs ``main`` guarded."""
  console.run(PROG, main, doc=__doc__, groups=usage.EXPORT_GROUPS,
              knobs=usage.EXPORT_KNOBS)


if __name__ == "__main__":
  run()

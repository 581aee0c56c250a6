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

from absl import flags

from pyramidnet_tf.cli import console
from pyramidnet_tf import paths as paths_lib
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import usage
from pyramidnet_tf.serving import export as export_lib

flags.DEFINE_string("model_dir", None,
                    "Model directory (pyramidnet_tf.train or import_torch).")
flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.")
flags.DEFINE_string("data_dir", None,
                    "Optional data directory whose manifest supplies class "
                    "names (when the model dir records none).")
flags.DEFINE_string("checkpoint", None, "Checkpoint path, or best (the "
                    "best evaluation's, kept in --model_dir/best); default: "
                    "the newest intact one.")
flags.DEFINE_integer("image_size", 0, "Override the serving image size; 0 = "
                     "the training run's.")
flags.DEFINE_enum("cifar_convention", "pt", ["pt", "fb"],
                  "CIFAR normalisation for models without recorded "
                  "preprocessing (see pyramidnet_tf.train --help).")
flags.DEFINE_integer("top_k", 5, "Classes returned by the classify signature.")
flags.DEFINE_enum("use_ema", "auto", ["auto", "yes", "no"],
                  "Export the EMA of the weights instead of the raw ones. "
                  "auto: when the training run kept one (--ema_decay > 0, "
                  "recorded in model_config.json).")

FLAGS = flags.FLAGS
PROG = "pyramidnet_tf.export"

cli.register_number_validator("image_size", 0, integer=True,
                              note="0 = the training run's size")
cli.register_number_validator("top_k", 1, integer=True)


def main(argv):
  """Exports --model_dir to --export_dir and prints where it went.

  Args:
    argv: absl's remaining arguments; only the program name is allowed.

  Raises:
    cli.UserError: for extra arguments, missing flags, or any expected
      failure of ``export``.
  """
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.model_dir or not FLAGS.export_dir:
    raise cli.FlagError("--model_dir and --export_dir are required")
  # Before TensorFlow starts (seconds).
  problems = [p for p in (
      paths_lib.model_dir_problem(FLAGS.model_dir,
                                  checkpoint=FLAGS.checkpoint),
      paths_lib.data_dir_problem(FLAGS.data_dir)) if p]
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  try:
    path = export_lib.export_model(
        FLAGS.model_dir, FLAGS.export_dir, FLAGS.data_dir, FLAGS.checkpoint,
        FLAGS.image_size, FLAGS.cifar_convention, FLAGS.top_k, FLAGS.use_ema)
  except ValueError as e:  # model_io, ema, input_pipeline: user-fixable
    raise cli.UserError(str(e)) from None
  print(f"exported SavedModel to {path} (signatures: serving_default/classify "
        "on encoded images, logits on float NHWC images)")


def run():
  """The console entry point: parses flags and runs ``main`` guarded."""
  console.run(PROG, main, doc=__doc__, groups=usage.EXPORT_GROUPS,
              knobs=usage.EXPORT_KNOBS)


if __name__ == "__main__":
  run()

"""Classifies image files with an exported SavedModel; prints the top 5.

    python -m pyramidnet_tf.predict --saved_model=EXPORT_DIR a.jpg b.png

Every file is read and identified on the host by its first bytes (never by
its name), then handed to the export's ``classify`` signature, so decoding
and preprocessing are those of the export:

* JPEG, PNG, GIF (first frame), BMP, WebP (and JPEG XL, which TensorFlow's
  decoder reads): the bytes as they are; the SavedModel decodes them.
* TIFF: TensorFlow has no TIFF decoder, so the file is converted on the host
  exactly as ``data_prep.folder`` converts it (``pyramidnet_tf.images.prepare``:
  Pillow decode, RGB, JPEG quality 95), i.e. into the pixels a model trained
  on a folder of such files saw. Together with the formats above this is
  everything ``data_prep.folder`` accepts.

One bad file does not stop the others: every good file is classified and
printed in argument order; each bad file gets one line on stderr naming it
and why (does not exist, is a directory, is not an image and what its bytes
look like, an unsupported image format, or a corrupt/truncated image). A
directory is reported rather than walked: a shell glob (``DIR/*``) says
exactly which files to classify, whereas walking would silently pick up
whatever else lives there. Exit status: 0 when every file was classified,
1 when any file failed (after all files were tried) or when --saved_model
cannot be used.
"""

import json
import sys

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import predict_config
from pyramidnet_tf.cli import usage

PROG = "pyramidnet_tf.predict"

predict_config.define_flags()


def _print(prediction, as_json: bool) -> None:
  """Prints one ``serving.saved_model.Prediction`` (text or one JSON
  line)."""
  if as_json:
    print(json.dumps({"image": prediction.path, "top5": [
        {"class_name": n, "class": c, "probability": p}
        for n, c, p in prediction.top]}), flush=True)
  else:
    lines = [prediction.path] + [
        f"  {rank}. {name} (class {index}) {prob:.4f}"
        for rank, (name, index, prob) in enumerate(prediction.top, 1)]
    print("\n".join(lines), flush=True)


def predict(config: predict_config.PredictConfig) -> int:
  """Classifies the files of ``config`` in order and prints each result
  (a file that cannot be classified: one line on stderr naming it).

  Args:
    config: the run (``predict_config.from_flags``).

  Returns:
    How many files could not be classified.

  Raises:
    errors.UserError: when the export cannot be loaded
      (``saved_model.load_export``), before the first file.
  """
  # The library loads TensorFlow: imported once the flags are checked.
  from pyramidnet_tf.serving import saved_model  # pylint: disable=g-import-not-at-top
  failed = 0
  for prediction in saved_model.classify_files(config.saved_model,
                                               list(config.paths)):
    if prediction.error is not None:
      failed += 1
      print(f"{PROG}: {prediction.path}: {prediction.error}", file=sys.stderr,
            flush=True)
    else:
      _print(prediction, config.json)
  return failed


def main(argv):
  """Classifies the files named after the flags and prints the results.

  Args:
    argv: absl's remaining arguments: the program name, then image paths.

  Raises:
    errors.FlagError: without --saved_model or image paths, or for a
      --saved_model that is no export (``predict_config``).
    errors.UserError: when the export cannot be loaded.
    SystemExit: with status 1 after all files, if any could not be
      classified.
  """
  config = predict_config.from_flags(argv[1:])
  failed = predict(config)
  if failed:
    sys.exit(f"{PROG}: {failed} of {len(config.paths)} files could not be "
             "classified (see above)")


def run():
  """The console entry point: parses flags and runs ``main`` guarded."""
  console.run(PROG, main, doc=__doc__, groups=usage.PREDICT_GROUPS,
              knobs=usage.PREDICT_KNOBS, takes_arguments=True)


if __name__ == "__main__":
  run()

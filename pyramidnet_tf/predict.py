"""Classifies image files with an exported SavedModel; prints the top 5.

    python -m pyramidnet_tf.predict --saved_model=EXPORT_DIR a.jpg b.png

Reads the files' bytes and calls the export's ``classify`` signature, so
decoding and preprocessing are exactly those of the export.
"""

import json
import sys

from absl import app
from absl import flags

flags.DEFINE_string("saved_model", None,
                    "Directory written by pyramidnet_tf.export.")
flags.DEFINE_bool("json", False, "Print one JSON object per image instead "
                  "of text.")

FLAGS = flags.FLAGS


def predict(saved_model: str, paths):
  """[(path, [(class_name, class_index, probability), ...]), ...]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(saved_model):
    raise FileNotFoundError(f"--saved_model={saved_model} does not exist")
  loaded = tf.saved_model.load(saved_model)
  if "classify" not in loaded.signatures:
    raise ValueError(f"{saved_model} has no 'classify' signature (signatures: "
                     f"{', '.join(loaded.signatures)}); export it with "
                     "pyramidnet_tf.export")
  classify = loaded.signatures["classify"]
  images = []
  for path in paths:
    if not tf.io.gfile.exists(path):
      raise FileNotFoundError(f"image {path} does not exist")
    with tf.io.gfile.GFile(path, "rb") as f:
      images.append(f.read())
  results = []
  for path, encoded in zip(paths, images):
    try:
      out = classify(images=tf.constant([encoded]))
    except tf.errors.InvalidArgumentError as e:
      raise ValueError(f"{path}: cannot decode as an image "
                       f"({e.message.splitlines()[0]})") from None
    names = [n.decode() for n in out["class_names"][0].numpy()]
    classes = [int(c) for c in out["classes"][0].numpy()]
    probs = [float(p) for p in out["probabilities"][0].numpy()]
    results.append((path, list(zip(names, classes, probs))))
  return results


def main(argv):
  paths = argv[1:]
  if not FLAGS.saved_model:
    raise app.UsageError("--saved_model is required (an export_dir written by"
                         " pyramidnet_tf.export)")
  if not paths:
    raise app.UsageError("give one or more image files after the flags")
  try:
    results = predict(FLAGS.saved_model, paths)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"pyramidnet_tf.predict: error: {e}")
  for path, top in results:
    if FLAGS.json:
      print(json.dumps({"image": path, "top5": [
          {"class_name": n, "class": c, "probability": p}
          for n, c, p in top]}))
    else:
      print(path)
      for rank, (name, index, prob) in enumerate(top, 1):
        print(f"  {rank}. {name} (class {index}) {prob:.4f}")


def run():
  app.run(main)


if __name__ == "__main__":
  run()

"""Exports a model directory as a SavedModel with preprocessing inside.

    python -m pyramidnet_tf.export --model_dir=DIR --export_dir=OUT

Signatures:
* ``serving_default`` / ``classify``: ``images`` = a batch of encoded image
  bytes (JPEG, PNG, BMP, GIF) -> top-5 ``classes`` (int32),
  ``class_names`` (string) and ``probabilities`` (float32). Decoding and the
  evaluation preprocessing of the training run happen inside the graph.
* ``logits``: ``images`` = float32 NHWC images already preprocessed
  (normalised, any size the architecture accepts) -> ``logits``.

The class names (from the training run's manifest, or --data_dir's) are
stored in the SavedModel and in ``class_names.txt`` next to it, so predict
needs nothing else.
"""

import json
import os
import sys

from absl import app
from absl import flags

flags.DEFINE_string("model_dir", None,
                    "Model directory (pyramidnet_tf.train or import_torch).")
flags.DEFINE_string("export_dir", None, "Where to write the SavedModel.")
flags.DEFINE_string("data_dir", None,
                    "Optional data directory whose manifest supplies class "
                    "names (when the model dir records none).")
flags.DEFINE_string("checkpoint", None, "Checkpoint path; default: latest.")
flags.DEFINE_integer("image_size", 0, "Override the serving image size.")
flags.DEFINE_enum("cifar_convention", "pt", ["pt", "fb"],
                  "CIFAR normalisation for models without recorded "
                  "preprocessing (see pyramidnet_tf.train --help).")
flags.DEFINE_integer("top_k", 5, "Classes returned by the classify signature.")
flags.DEFINE_enum("use_ema", "auto", ["auto", "yes", "no"],
                  "Export the EMA of the weights instead of the raw ones. "
                  "auto: when the training run kept one (--ema_decay > 0, "
                  "recorded in model_config.json).")

FLAGS = flags.FLAGS
EXPORT_INFO = "pyramidnet_export.json"


def build_serving_module(model, class_names, preprocessing, top_k: int = 5):
  """A tf.Module whose tf.functions are the export's signatures."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import augment  # pylint: disable=g-import-not-at-top

  k = min(top_k, model.num_classes)
  size = preprocessing.image_size

  class Serving(tf.Module):
    """Classifier with decoding and eval preprocessing in the graph."""

    def __init__(self):
      super().__init__(name="serving")
      self.model = model
      self.class_names = tf.Variable(list(class_names), trainable=False,
                                     name="class_names")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def classify(self, images):
      def one(encoded):
        image = augment.decode(encoded, tf.constant(""), 0, 0)
        return preprocessing.eval_image(image)
      batch = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(
          [size, size, 3], tf.float32))
      probabilities = tf.nn.softmax(self.model(batch, training=False))
      top = tf.math.top_k(probabilities, k)
      return {"classes": top.indices,
              "class_names": tf.gather(self.class_names, top.indices),
              "probabilities": top.values}

    @tf.function(input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.float32)])
    def logits(self, images):
      return {"logits": self.model(images, training=False)}
  return Serving()


def export(model_dir: str, export_dir: str, data_dir=None, checkpoint=None,
           image_size: int = 0, convention: str = "pt", top_k: int = 5,
           use_ema: str = "auto"):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import ema as ema_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import input_pipeline  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import model_dir as model_dir_lib  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf import model_io  # pylint: disable=g-import-not-at-top

  config = model_io.read_config(model_dir)
  checkpoint = checkpoint or tf.train.latest_checkpoint(model_dir)
  model, metadata = model_io.load_model(model_dir, checkpoint)
  averaged = ema_lib.should_use(use_ema, metadata)
  if averaged:
    ema_lib.load_averages(model, checkpoint)
  info = input_pipeline.read_manifest(data_dir) if data_dir else None
  preprocessing = model_dir_lib.preprocessing_of(
      metadata, config["model"], image_size, convention, info)
  if image_size:
    preprocessing = input_pipeline.Preprocessing.from_json(
        dict(preprocessing.to_json(), image_size=image_size))
  class_names = model_dir_lib.class_names_of(metadata, model.num_classes,
                                             info)
  serving = build_serving_module(model, class_names, preprocessing, top_k)
  tf.saved_model.save(serving, export_dir, signatures={
      "serving_default": serving.classify,
      "classify": serving.classify,
      "logits": serving.logits,
  })
  with tf.io.gfile.GFile(os.path.join(export_dir, "class_names.txt"),
                         "w") as f:
    f.write("\n".join(class_names) + "\n")
  with tf.io.gfile.GFile(os.path.join(export_dir, EXPORT_INFO), "w") as f:
    json.dump({"model": config["model"],
               "preprocessing": preprocessing.to_json(),
               "source_model_dir": model_dir,
               "checkpoint": checkpoint, "ema": averaged}, f, indent=2)
  return export_dir


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS.model_dir or not FLAGS.export_dir:
    raise app.UsageError("--model_dir and --export_dir are required")
  try:
    path = export(FLAGS.model_dir, FLAGS.export_dir, FLAGS.data_dir,
                  FLAGS.checkpoint, FLAGS.image_size, FLAGS.cifar_convention,
                  FLAGS.top_k, FLAGS.use_ema)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"pyramidnet_tf.export: error: {e}")
  print(f"exported SavedModel to {path} (signatures: serving_default/classify "
        "on encoded images, logits on float NHWC images)")


def run():
  app.run(main)


if __name__ == "__main__":
  run()

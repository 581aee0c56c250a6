"""Converts CIFAR-10/100, ILSVRC2012 and image folders into sharded, verified TFRecords.

Command-line tools (each also a console script, see the README):

  python -m data_prep.cifar    --source=PATH|tfds --output_dir=DIR [--dataset=cifar10|cifar100]
  python -m data_prep.imagenet --train=PATH --val=PATH --val_labels=PATH --output_dir=DIR
  python -m data_prep.folder   --source=DIR --output_dir=DIR [--val_fraction=0.1]
  python -m data_prep.verify   --data_dir=DIR

Every converter writes `DIR/<split>-<iiiii>-of-<nnnnn>.tfrecord` and `DIR/manifest.json`; the
manifest schema, the tf.train.Example features and the decode rule for each image encoding are
documented in docs/data-format.md.
"""

from pyramidnet_tf import errors

# Bumped whenever the bytes a converter writes for the same input would change.
CONVERTER_VERSION = "1.0.0"


class DataPrepError(errors.UserError):
  """Bad input or an unexpected layout; the message says what was expected and what was found.

  The tools end with it as one line and exit status 1 (``pyramidnet_tf.errors.guard``).
  """


class DataPrepFlagError(DataPrepError, errors.FlagError):
  """Flags that contradict each other or the input they name (``--dataset=cifar100`` for a
  CIFAR-10 archive): the tools end with exit status 2, a usage error."""

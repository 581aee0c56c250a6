"""Evaluates a model directory on a prepared data split; prints JSON.

    python -m pyramidnet_tf.evaluate --model_dir=DIR --data_dir=DATA

Works on trainer output and on directories written by import_torch. Every
example of the split is counted exactly once (the last batch is padded and
the padding masked), on one device or under any strategy. The records are
counted from the shard files, so a manifest that disagrees is only warned
about; a damaged shard ends the run with one line naming it.

The default checkpoint is the newest intact one: a damaged newer one
(truncated, corrupted, NaN/Inf) is skipped with a warning naming it.
Scores that would silently be wrong are refused: CIFAR-style data whose
image size differs from the one the model expects when the model records
none (an import without export_torch's record; pass --image_size), and
data whose class names are the model's in another order. A model that
records its size and differs from the data's gets a warning.
"""

import json
import sys

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.cli import evaluate_config
from pyramidnet_tf.cli import usage


def evaluate(config: evaluate_config.EvaluateConfig) -> dict:
  """Evaluates the model directory of ``config``; returns the JSON record
  (``training.evaluation.evaluate_model_dir``).

  Args:
    config: the evaluation (``evaluate_config.from_flags``).
  """
  # The library loads TensorFlow: imported once the flags are checked.
  from pyramidnet_tf.training import evaluation  # pylint: disable=g-import-not-at-top
  return evaluation.evaluate_model_dir(
      model_dir=config.model_dir, data=config.data, runtime=config.runtime,
      eval_batch=config.eval_batch, checkpoint=config.checkpoint,
      split=config.split, use_ema=config.use_ema)


def main(argv):
  del argv  # console_base.run refuses positional arguments
  try:
    result = evaluate(evaluate_config.from_flags())
  except cli.FlagError:
    raise   # exit status 2 (errors.guard)
  except (ValueError, FileNotFoundError, cli.UserError) as e:
    sys.exit(f"pyramidnet_tf.evaluate: error: {e}")
  print(json.dumps(result, indent=2))


def run():
  console.run("pyramidnet_tf.evaluate", main, doc=__doc__,
              groups=usage.EVALUATE_GROUPS, knobs=usage.EVALUATE_KNOBS)


if __name__ == "__main__":
  run()

"""Checkpoint integrity: is this the run's model, are its values finite.

Why apart from saving and restoring (``checkpointing``): these checks read a
model directory or a checkpoint and say what is wrong in one line naming the
file and the way forward. The trainer runs them before it restores
(``check_config``, ``shape_mismatches``), after every host call of the loop
and before every save (``FiniteGuard``: non-finite values stop training and
are never written), and names the checkpoint a rerun would resume from in
its errors (``last_good_text``).
"""

import os
from typing import List, Optional, Sequence

import tensorflow as tf

from tensorflow.core.protobuf import trackable_object_graph_pb2
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model_dir import store as model_io
from pyramidnet_tf.training import config as config_lib

TRAINER_SOURCE = config_lib.TRAINER_SOURCE


class CheckpointError(RuntimeError):
  """A checkpoint problem the user can act on; printed as one line."""


class NonFiniteWeightsError(CheckpointError):
  """Refusing to checkpoint NaN/Inf weights."""


class ConfigMismatchError(ValueError):
  """Resuming into a model_dir whose model differs from the flags."""


def check_config(model_dir: str, model) -> None:
  """Checks that ``model`` is the model ``model_dir`` was trained with.

  Compares the canonical form of ``model_config.json``'s "model" section
  with ``model``'s constructor arguments; a directory without the file
  passes. A directory of ``import_torch`` is refused whatever the flags: it
  has no training state to resume, and ``--init_from`` is what trains from
  it.

  Args:
    model_dir: the training directory.
    model: the ``PyramidNet`` the flags built.

  Raises:
    ConfigMismatchError: naming each differing constructor argument, or
      saying that the directory holds imported weights.
  """
  path = os.path.join(model_dir, model_io.CONFIG_FILE)
  if not tf.io.gfile.exists(path):
    return
  config = model_io.read_config(model_dir)
  source = config.get("metadata", {}).get("source", TRAINER_SOURCE)
  if source != TRAINER_SOURCE:
    # Imported weights have no optimiser state, step or schedule to resume.
    raise ConfigMismatchError(config_lib.imported_dir_text(model_dir, source))
  # Canonical form: configs written before a constructor arg existed (e.g.
  # ShakeDrop's) match a model built with that arg's default.
  saved = model_lib.canonical_config(config.get("model", {}))
  current = model_lib.canonical_config(model_lib.config_of(model))
  diffs = [f"{key}: {saved.get(key)!r} in {path}, {current.get(key)!r} from "
           "the flags" for key in sorted(set(saved) | set(current))
           if saved.get(key) != current.get(key)]
  if diffs:
    raise ConfigMismatchError(
        f"--model_dir={model_dir} holds a different model; resume with the "
        "same model flags, use a new --model_dir, or fine-tune from it with "
        f"--init_from={model_dir} and a new --model_dir. Differences: " +
        "; ".join(diffs))


def last_good_text(model_dir: str) -> str:
  """A sentence naming the checkpoint a rerun would resume from.

  Args:
    model_dir: the training directory; its checkpoints are all read.
  """
  prefix = model_io.newest_intact(model_dir)
  if prefix is None:
    return f"{model_dir} holds no intact checkpoint yet."
  return (f"The last good checkpoint is {prefix} (step "
          f"{model_io.step_of(prefix)}); rerunning resumes from it.")



def checkpoint_variables(checkpoint: tf.train.Checkpoint) -> List[tf.Variable]:
  """Every float variable the checkpoint saves, each once.

  Args:
    checkpoint: the training checkpoint; all its descendants are walked.
  """
  seen, found = set(), []
  for obj in tf.train.TrackableView(checkpoint).descendants():
    if isinstance(obj, tf.Variable) and obj.dtype.is_floating and (
        id(obj) not in seen):
      seen.add(id(obj))
      found.append(obj)
  return found


def shape_mismatches(checkpoint: tf.train.Checkpoint, path: str
                     ) -> List[str]:
  """``name: shape in path, shape from the flags`` for every variable of
  ``checkpoint`` whose saved counterpart (same object-graph path) has
  another shape.

  Why before restoring: a restore that fails halfway leaves TensorFlow
  warning about unrestored values at exit, after the error, and its own
  message names one variable without saying what to do.

  Args:
    checkpoint: the checkpoint object about to be restored into.
    path: the saved checkpoint's prefix.

  Returns:
    The mismatch descriptions, sorted; empty when every shape fits.
  """
  reader = tf.train.load_checkpoint(path)
  shapes = reader.get_variable_to_shape_map()
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
  view = tf.train.TrackableView(checkpoint)
  found = []
  pending = [(checkpoint, 0, "")]
  while pending:
    obj, node_id, name = pending.pop()
    node = graph.nodes[node_id]
    if isinstance(obj, tf.Variable):
      keys = [a.checkpoint_key for a in node.attributes
              if a.name == "VARIABLE_VALUE"]
      if keys and keys[0] in shapes and (
          list(shapes[keys[0]]) != obj.shape.as_list()):
        found.append(f"{name}: {tuple(shapes[keys[0]])} saved, "
                     f"{tuple(obj.shape.as_list())} from the flags")
      continue
    saved = {child.local_name: child.node_id for child in node.children}
    for child_name, child in view.children(obj).items():
      if child_name in saved:
        pending.append((child, saved[child_name],
                        f"{name}/{child_name}" if name else child_name))
  return sorted(found)


class FiniteGuard:
  """Checks every float variable of a checkpoint for NaN/Inf at once."""

  def __init__(self, model_dir: str, variables: Sequence[tf.Variable]):
    """Compiles one check over ``variables``.

    Args:
      model_dir: the training directory (named in the error).
      variables: what is checked, each once.
    """
    self.model_dir = model_dir
    self.variables = list(variables)
    self._finite = tf.function(lambda: tf.stack(
        [tf.reduce_all(tf.math.is_finite(v)) for v in self.variables]))

  def check(self, step: int, since: Optional[int] = None) -> None:
    """Raises NonFiniteWeightsError naming the variables and the last good
    checkpoint when any checked variable holds NaN/Inf.

    Every worker must call it at the same step (ON_READ reads all-reduce).

    Args:
      step: the current global step, for the message.
      since: the step of the previous check, for the message.

    Raises:
      NonFiniteWeightsError: if any variable holds NaN/Inf.
    """
    if not self.variables:
      return
    finite = self._finite().numpy()
    if finite.all():
      return
    bad = [v.name.split(":")[0] for v, ok in zip(self.variables, finite)
           if not ok]
    names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more"
                                  if len(bad) > 3 else "")
    when = (f" (appeared in the steps after {since}; checked after every "
            "host call)" if since is not None and step - since > 1 else "")
    raise NonFiniteWeightsError(
        f"NaN/Inf at global step {step} in {names}{when}; stopped "
        f"without checkpointing them. {last_good_text(self.model_dir)} Try "
        "a lower --lr or --dtype=float32.")

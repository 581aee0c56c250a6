"""Path problems a tool can see before TensorFlow starts.

TensorFlow takes seconds to start; a mistyped directory should not cost
them. Each check returns one line naming the flag, the path and what to do,
or None; the tools collect them with their other flag problems and report
all at once. Remote paths (``gs://...``) are left to the tools (checking
them needs TensorFlow's file systems).
"""

import json
import os
import re
from typing import List, Optional

_CHECKPOINT_INDEX = re.compile(r"^ckpt-\d+\.index$")
# data_prep's shard names (docs/data-format.md).
_SHARD = re.compile(r"^.+-\d{5}-of-\d{5}\.tfrecord$")
_PREPARE = ("prepare one with data_prep (python -m data_prep.cifar, "
            "data_prep.imagenet or data_prep.folder)")


def _remote(path: str) -> bool:
  return "://" in path


def data_dir_problem(path: Optional[str], flag: str = "data_dir"
                     ) -> Optional[str]:
  """A --data_dir that does not exist or holds no readable manifest.json."""
  if not path or _remote(path):
    return None
  if not os.path.exists(path):
    return f"--{flag}={path} does not exist; {_PREPARE}"
  if not os.path.isdir(path):
    return f"--{flag}={path} is a file, not a data directory; {_PREPARE}"
  manifest = os.path.join(path, "manifest.json")
  if not os.path.isfile(manifest):
    return (f"--{flag}={path} has no manifest.json: it is not a directory "
            f"written by data_prep; {_PREPARE}")
  try:
    with open(manifest) as f:
      json.load(f)
  except (OSError, ValueError) as e:
    return (f"--{flag}={path}: manifest.json cannot be read ({e}); rerun "
            "data_prep into a new directory")
  return None


def data_dir_as_model_dir_problem(path: Optional[str], flag: str = "model_dir"
                                  ) -> Optional[str]:
  """A directory to write a model into that holds data_prep's output.

  Checkpoints written among shards would mix a model into a dataset (and a
  later cleanup of either would take the other with it).

  Args:
    path: the directory (it need not exist).
    flag: its flag, for the message.
  """
  if not path or _remote(path) or not os.path.isdir(path):
    return None
  names = sorted(os.listdir(path))
  found = ("manifest.json" if "manifest.json" in names
           else next((name for name in names if _SHARD.match(name)), None))
  if found is None:
    return None
  return (f"--{flag}={path} is a data directory (it holds {found}, written "
          "by data_prep), not a model directory: pass a directory of its own "
          f"for the checkpoints, e.g. --{flag}=runs/<name>, and keep the data "
          "as --data_dir")


def model_dir_problem(path: Optional[str], flag: str = "model_dir",
                      checkpoint: Optional[str] = None) -> Optional[str]:
  """A model directory to read that is missing, is not one, or holds no
  checkpoint.

  Args:
    path: the directory.
    flag: its flag, for the message.
    checkpoint: the --checkpoint asked for: an explicit path is left to
      the tool; ``best`` needs the best record.
  """
  if not path or _remote(path):
    return None
  if not os.path.exists(path):
    return (f"--{flag}={path} does not exist (a directory written by "
            "pyramidnet_tf.train or pyramidnet_tf.import_torch)")
  if not os.path.isdir(path):
    return f"--{flag}={path} is a file, not a model directory"
  if not os.path.isfile(os.path.join(path, "model_config.json")):
    return (f"--{flag}={path} is not a model directory (no "
            "model_config.json): train into it with pyramidnet_tf.train or "
            "write it with pyramidnet_tf.import_torch")
  if checkpoint == "best":
    if not os.path.isfile(os.path.join(path, "best", "best.json")):
      return (f"--checkpoint=best: {path} keeps no best checkpoint (no "
              "best/best.json; the trainer keeps one when it evaluates); "
              "omit --checkpoint for the newest")
    return None
  if checkpoint:
    return None
  if not any(_CHECKPOINT_INDEX.match(name) for name in os.listdir(path)):
    return f"--{flag}={path} holds no checkpoint (no ckpt-N.index file)"
  return None


def saved_model_problem(path: Optional[str], flag: str = "saved_model"
                        ) -> Optional[str]:
  """A SavedModel directory that is missing, a file, a model directory (not
  exported yet) or not a SavedModel."""
  if not path or _remote(path):
    return None
  export_hint = ("python -m pyramidnet_tf.export --model_dir=MODEL_DIR "
                 "--export_dir=EXPORT_DIR")
  if not os.path.exists(path):
    return (f"--{flag}={path} does not exist (write an export with "
            f"`{export_hint}`)")
  if not os.path.isdir(path):
    return (f"--{flag}={path} is a file; give the directory written by "
            "pyramidnet_tf.export")
  if any(os.path.exists(os.path.join(path, name))
         for name in ("saved_model.pb", "saved_model.pbtxt")):
    return None
  if (os.path.exists(os.path.join(path, "model_config.json")) or
      os.path.exists(os.path.join(path, "checkpoint"))):
    return (f"--{flag}={path} is a model directory (checkpoints), not an "
            "export: run `python -m pyramidnet_tf.export "
            f"--model_dir={path} --export_dir=EXPORT_DIR` first, then pass "
            f"--{flag}=EXPORT_DIR")
  return (f"--{flag}={path} has no saved_model.pb: not a SavedModel (write "
          f"one with `{export_hint}`)")


def missing_files(paths: List[str]) -> List[str]:
  """One line per input file that does not exist."""
  return [f"{p}: does not exist" for p in paths
          if not _remote(p) and not os.path.exists(p)]

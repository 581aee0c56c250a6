"""Tiny prepared data directories for the trainer's tests.

Writes TFRecord shards and a manifest.json following data_prep's output
contract (data_prep/shards.py: image/format "RAW" or "JPEG";
PNG is also accepted by the trainer), with a learnable task: each class has its own mean colour
and a class-dependent stripe, plus noise.
"""

import hashlib
import io
import json
import os
import time

import numpy as np
from PIL import Image


def _example(encoded: bytes, image_format: str, height: int, width: int,
             label: int, filename: str) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = {
      "image/encoded": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[encoded])),
      "image/format": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[image_format.encode()])),
      "image/height": tf.train.Feature(
          int64_list=tf.train.Int64List(value=[height])),
      "image/width": tf.train.Feature(
          int64_list=tf.train.Int64List(value=[width])),
      "image/class/label": tf.train.Feature(
          int64_list=tf.train.Int64List(value=[label])),
      "image/filename": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[filename.encode()])),
  }
  return tf.train.Example(
      features=tf.train.Features(feature=feature)).SerializeToString()


def class_image(label: int, num_classes: int, size: int,
                rng: np.random.Generator) -> np.ndarray:
  """uint8 HWC image whose colour and stripe identify ``label``."""
  hue = label / num_classes
  colour = np.array([np.cos(2 * np.pi * hue), np.sin(2 * np.pi * hue),
                     np.cos(4 * np.pi * hue)]) * 80 + 128
  image = np.ones((size, size, 3)) * colour
  row = (label * size) // num_classes
  image[row:row + max(1, size // num_classes), :, :] = 255 - colour
  image += rng.normal(0, 20, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, encoding: str) -> bytes:
  if encoding == "raw":
    return image.tobytes()
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG" if encoding == "png"
                              else "JPEG", quality=95)
  return buffer.getvalue()


def write_dataset(directory: str, dataset: str = "cifar10",
                  num_classes: int = 10, train_per_class: int = 16,
                  eval_per_class: int = 4, size: int = 16,
                  encoding: str = "raw", shards: int = 2, seed: int = 0,
                  eval_split: str = "test") -> str:
  """Writes <split>-<iiiii>-of-<nnnnn>.tfrecord + manifest.json, with
  ``*_per_class`` examples of every class in each split."""
  splits = {split: [(label, i) for i in range(per_class)
                    for label in range(num_classes)]
            for split, per_class in (("train", train_per_class),
                                     (eval_split, eval_per_class))}
  return write_examples(directory, dataset, num_classes, splits, size,
                        encoding, shards, np.random.default_rng(seed))


def write_examples(directory: str, dataset: str, num_classes: int,
                   splits: dict, size: int = 16, encoding: str = "raw",
                   shards: int = 2, rng=None) -> str:
  """Writes a data_prep-format directory. ``splits``: split name -> either
  a count (labels cycle through the classes) or a list of (label, index)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  rng = rng if rng is not None else np.random.default_rng(0)
  manifest = {"format": "data_prep shards", "format_version": 1,
              "dataset": dataset, "num_classes": num_classes,
              "label_base": 0,
              "class_names": [f"class_{i}" for i in range(num_classes)],
              "image": {"encoding": encoding},
              "splits": {}}
  for split, examples in splits.items():
    if isinstance(examples, int):
      examples = [(i % num_classes, i // num_classes)
                  for i in range(examples)]
    shard_entries = []
    for shard in range(shards):
      name = f"{split}-{shard:05d}-of-{shards:05d}.tfrecord"
      path = os.path.join(directory, name)
      mine = examples[shard::shards]
      with tf.io.TFRecordWriter(path) as writer:
        for label, i in mine:
          image = class_image(label, num_classes, size, rng)
          writer.write(_example(encode(image, encoding), encoding.upper(), size, size,
                                label, f"{split}_{label}_{i}.png"))
      with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
      shard_entries.append({"file": name, "num_examples": len(mine),
                            "sha256": digest})
    manifest["splits"][split] = {"num_examples": len(examples),
                                 "shards": shard_entries}
  with open(os.path.join(directory, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
  return directory


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY_MODEL = ["--dataset=cifar10", "--depth=8", "--alpha=4",
              "--image_size=16"]


def cli_env(**extra) -> dict:
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  env.update(extra)
  return env


def run_cli(module: str, args, timeout: float = 240, **env):
  """Runs ``python -m module args``; returns the CompletedProcess."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  return subprocess.run([sys.executable, "-m", module] + list(args), cwd=REPO,
                        env=cli_env(**env), capture_output=True, text=True,
                        timeout=timeout, check=False)


def train_result(stderr: str) -> dict:
  """The JSON the trainer logs last ("result: {...}")."""
  for line in reversed(stderr.splitlines()):
    if "result: {" in line:
      return json.loads(line.split("result: ", 1)[1])
  raise AssertionError("no result line in the trainer's log:\n" + stderr[-3000:])


def checkpoint_values(path: str) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  reader = tf.train.load_checkpoint(path)
  return {name: reader.get_tensor(name)
          for name, _ in tf.train.list_variables(path)
          if "save_counter" not in name and "_CHECKPOINTABLE_OBJECT_GRAPH"
          not in name}


def tree_bytes(directory: str) -> dict:
  """{path relative to ``directory``: bytes} of every file below it."""
  out = {}
  for parent, _, names in os.walk(directory):
    for name in names:
      path = os.path.join(parent, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, directory)] = f.read()
  return out


def clean_exit(proc):
  """Asserts that a tool's process ended with status 0 and no traceback;
  returns it."""
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  return proc


def wait_for_text(log_path, text, proc, timeout: float = 900,
                  poll: float = 0.05) -> None:
  """Waits until ``text`` is in the log file a running ``proc`` writes.

  Args:
    log_path: the log file (str or Path).
    text: what to wait for.
    proc: the process (``poll()``): its end before ``text`` fails the test.
    timeout: a hang guard only, generous for a loaded machine.
    poll: seconds between reads.
  """
  def log():
    with open(log_path) as f:
      return f.read()
  deadline = time.monotonic() + timeout
  while text not in log():
    assert proc.poll() is None, log()[-4000:]
    assert time.monotonic() < deadline, (
        f"never printed {text!r}:\n" + log()[-4000:])
    time.sleep(poll)

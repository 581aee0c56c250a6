"""Small, self-made inputs for the data_prep tests: CIFAR archives, ILSVRC-style tars, images.

Everything is generated from fixed seeds, so each fixture has the same bytes on every run.
"""

import contextlib
import functools
import hashlib
import http.server
import io
import os
import pickle
import subprocess
import sys
import tarfile
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"]


# ---------------------------------------------------------------------------------------
# Images.


def pixels(height: int, width: int, seed: int) -> np.ndarray:
  """A smooth random RGB image (compresses like a photo, unlike pure noise)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, size=(max(1, height // 8), max(1, width // 8), 3))
  image = Image.fromarray(small.astype(np.uint8)).resize((width, height), Image.BILINEAR)
  noise = rng.integers(-8, 9, size=(height, width, 3))
  return np.clip(np.asarray(image).astype(np.int16) + noise, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str = "JPEG", mode: Optional[str] = None, **kw) -> bytes:
  image = Image.fromarray(array)
  if mode is not None:
    image = image.convert(mode)
  out = io.BytesIO()
  image.save(out, format=fmt, **kw)
  return out.getvalue()


def jpeg(height=24, width=32, seed=0, **kw) -> bytes:
  return encode(pixels(height, width, seed), "JPEG", quality=90, **kw)


def cmyk_jpeg(height=20, width=28, seed=1) -> bytes:
  return encode(pixels(height, width, seed), "JPEG", mode="CMYK", quality=90)


def gray_jpeg(height=22, width=18, seed=2) -> bytes:
  return encode(pixels(height, width, seed), "JPEG", mode="L", quality=90)


def png(height=16, width=20, seed=3) -> bytes:
  return encode(pixels(height, width, seed), "PNG")


def truncated_jpeg(seed=4) -> bytes:
  data = jpeg(64, 64, seed)
  return data[:len(data) // 2]


# ---------------------------------------------------------------------------------------
# CIFAR.


def cifar_arrays(dataset: str, per_batch: int, test: int, seed: int = 0) -> dict:
  """Random CIFAR content: {"train": (uint8 [N,3072] CHW rows, fine, coarse), "test": ...}."""
  rng = np.random.default_rng(seed)
  classes, coarse = (10, 0) if dataset == "cifar10" else (100, 20)
  out = {}
  batches = 5 if dataset == "cifar10" else 1
  for split, n in (("train", per_batch * batches), ("test", test)):
    rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    fine = rng.integers(0, classes, size=n)
    coarse_labels = rng.integers(0, coarse, size=n) if coarse else None
    out[split] = (rows, fine, coarse_labels)
  return out


def _py2_style_pickle(obj) -> bytes:
  # The official files are Python 2 pickles of numpy arrays; numpy 2 names its module
  # numpy._core, the originals say numpy.core.
  data = pickle.dumps(obj, protocol=2)
  return data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def cifar_files(dataset: str, arrays: dict, fmt: str) -> Dict[str, bytes]:
  """{path inside the archive: bytes} for the python or binary archive."""
  files = {}
  train_rows, train_fine, train_coarse = arrays["train"]
  if dataset == "cifar10":
    folder = "cifar-10-batches-py" if fmt == "python" else "cifar-10-batches-bin"
    per = len(train_rows) // 5
    parts = [(f"data_batch_{i + 1}", slice(i * per, (i + 1) * per)) for i in range(5)]
    for name, sl in parts + [("test_batch", None)]:
      rows, fine, _ = (arrays["test"] if sl is None
                       else (train_rows[sl], train_fine[sl], None))
      if fmt == "python":
        files[f"{folder}/{name}"] = _py2_style_pickle({
            b"batch_label": b"training batch", b"labels": [int(v) for v in fine],
            b"data": rows, b"filenames": [b"x_%d.png" % i for i in range(len(rows))]})
      else:
        records = np.concatenate([fine.astype(np.uint8)[:, None], rows], axis=1)
        files[f"{folder}/{name}.bin"] = records.tobytes()
    if fmt == "python":
      files[f"{folder}/batches.meta"] = _py2_style_pickle({
          b"num_cases_per_batch": per, b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
    else:
      files[f"{folder}/batches.meta.txt"] = ("\n".join(CIFAR10_NAMES) + "\n\n").encode()
  else:
    folder = "cifar-100-python" if fmt == "python" else "cifar-100-binary"
    fine_names = [f"fine_{i:02d}" for i in range(100)]
    coarse_names = [f"coarse_{i:02d}" for i in range(20)]
    for split in ("train", "test"):
      rows, fine, coarse = arrays[split]
      if fmt == "python":
        files[f"{folder}/{split}"] = _py2_style_pickle({
            b"filenames": [b"y_%d.png" % i for i in range(len(rows))],
            b"batch_label": split.encode(), b"fine_labels": [int(v) for v in fine],
            b"coarse_labels": [int(v) for v in coarse], b"data": rows})
      else:
        records = np.concatenate([coarse.astype(np.uint8)[:, None],
                                  fine.astype(np.uint8)[:, None], rows], axis=1)
        files[f"{folder}/{split}.bin"] = records.tobytes()
    if fmt == "python":
      files[f"{folder}/meta"] = _py2_style_pickle({b"fine_label_names": fine_names,
                                                    b"coarse_label_names": coarse_names})
    else:
      files[f"{folder}/fine_label_names.txt"] = ("\n".join(fine_names) + "\n").encode()
      files[f"{folder}/coarse_label_names.txt"] = ("\n".join(coarse_names) + "\n").encode()
  return files


def write_tar(path: str, files: Dict[str, bytes], mode: str = "w") -> str:
  """Writes `files` ({name: bytes}) into a tar (mode "w" or "w:gz"), in the given order."""
  with tarfile.open(path, mode) as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      info.mtime = 1_300_000_000
      info.mode = 0o644
      tar.addfile(info, io.BytesIO(data))
  return path


def write_tree(root: str, files: Dict[str, bytes]) -> str:
  for name, data in files.items():
    path = os.path.join(root, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)
  return root


def tar_bytes(files: Dict[str, bytes]) -> bytes:
  out = io.BytesIO()
  with tarfile.open(fileobj=out, mode="w") as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      info.mtime = 1_300_000_000
      tar.addfile(info, io.BytesIO(data))
  return out.getvalue()


# ---------------------------------------------------------------------------------------
# Reading what data_prep wrote.


def read_records(path: str) -> List[dict]:
  """Every record of a TFRecord file as {feature: python value}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  records = []
  for raw in tf.data.TFRecordDataset(path):
    example = tf.train.Example.FromString(raw.numpy())
    record = {}
    for key, feature in example.features.feature.items():
      kind = feature.WhichOneof("kind")
      record[key] = list(getattr(feature, kind).value)[0]
    records.append(record)
  return records


def dir_bytes(path: str) -> Dict[str, bytes]:
  """{file name: bytes} for every visible file of a folder."""
  out = {}
  for name in sorted(os.listdir(path)):
    full = os.path.join(path, name)
    if os.path.isfile(full) and not name.startswith("."):
      with open(full, "rb") as f:
        out[name] = f.read()
  return out


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------
# Running the command-line tools.


def run_cli(module: str, *args: str, timeout: float = 120,
            env: Optional[dict] = None) -> subprocess.CompletedProcess:
  """`python -m data_prep.<module> args...` from the repository root."""
  full_env = dict(os.environ)
  full_env["PYTHONPATH"] = REPO_ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
  full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  if env:
    full_env.update(env)
  return subprocess.run([sys.executable, "-m", f"data_prep.{module}", *args], cwd=REPO_ROOT,
                        env=full_env, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def serve_directory(root: str):
  """An HTTP server for `root` on 127.0.0.1 (a free port); yields its base URL."""
  handler = functools.partial(_QuietHandler, directory=root)
  server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f"http://127.0.0.1:{server.server_address[1]}"
  finally:
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

  def log_message(self, *args):  # keep test output clean
    pass


# ---------------------------------------------------------------------------------------
# ILSVRC2012-style inputs.

SYNSETS = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475"]
# Content that needs repair or rejection, placed in the first synset (as in the real data:
# the names say .JPEG whatever the bytes are).
SPECIAL = {
    "cmyk": ("_cmyk.JPEG", "repaired", "CMYK JPEG"),
    "png": ("_png.JPEG", "repaired", "PNG data"),
    "gray": ("_gray.JPEG", "repaired", "grayscale JPEG"),
    "truncated": ("_trunc.JPEG", "rejected", "truncated JPEG"),
}


def special_bytes(kind: str) -> bytes:
  return {"cmyk": cmyk_jpeg, "png": png, "gray": gray_jpeg,
          "truncated": truncated_jpeg}[kind]()


def ilsvrc_train(synsets: Sequence[str] = SYNSETS, per_class: int = 4,
                 special: Sequence[str] = tuple(SPECIAL)) -> Dict[str, Dict[str, bytes]]:
  """{synset: {file name: bytes}}: small clean JPEGs plus the `special` files."""
  out = {}
  for c, synset in enumerate(synsets):
    files = {}
    for j in range(per_class):
      files[f"{synset}_{j + 1}.JPEG"] = jpeg(16 + (5 * j + 3 * c) % 24, 20 + (7 * j + c) % 20,
                                            seed=100 * c + j)
    out[synset] = files
  for kind in special:
    out[synsets[0]][synsets[0] + SPECIAL[kind][0]] = special_bytes(kind)
  return out


def write_train_tar(path: str, train: Dict[str, Dict[str, bytes]]) -> str:
  """ILSVRC2012_img_train.tar layout: one uncompressed tar per synset, in a tar."""
  return write_tar(path, {f"{synset}.tar": tar_bytes(files) for synset, files in train.items()})


def write_train_folder(root: str, train: Dict[str, Dict[str, bytes]]) -> str:
  return write_tree(root, {f"{s}/{name}": data for s, files in train.items()
                           for name, data in files.items()})


def ilsvrc_val(count: int = 10, synsets: Sequence[str] = SYNSETS) -> Tuple[Dict[str, bytes],
                                                                         List[str]]:
  """({ILSVRC2012_val_0000000i.JPEG: bytes}, the synset of each, in file-name order)."""
  files, labels = {}, []
  for i in range(1, count + 1):
    files[f"ILSVRC2012_val_{i:08d}.JPEG"] = jpeg(18 + i % 9, 22 + (3 * i) % 11, seed=5000 + i)
    labels.append(synsets[(i * 3) % len(synsets)])
  return files, labels


def write_val_tar(path: str, files: Dict[str, bytes]) -> str:
  # Added in reverse: the labels must follow the names, not the archive order.
  return write_tar(path, dict(reversed(list(files.items()))))


def write_tfds_labels(path: str, labels: Sequence[str]) -> str:
  with open(path, "w") as f:
    f.write("".join(s + "\n" for s in labels))
  return path


def write_kaggle_csv(path: str, names: Sequence[str], labels: Sequence[str]) -> str:
  rows = ["ImageId,PredictionString"]
  order = list(range(len(names)))[::-1]  # Kaggle's rows are not in name order either
  for i in order:
    stem = os.path.splitext(names[i])[0]
    boxes = " ".join(f"{labels[i]} {10 + b} {12 + b} {40 + b} {44 + b}" for b in range(1 + i % 2))
    rows.append(f"{stem},{boxes} ")
  with open(path, "w") as f:
    f.write("\n".join(rows) + "\n")
  return path


def devkit_order(synsets: Sequence[str]) -> List[str]:
  """The fixture's ILSVRC2012_ID order: NOT alphabetical (reversed), as in the real devkit."""
  return sorted(synsets)[::-1]


def write_devkit(folder: str, labels: Sequence[str],
                 synsets: Sequence[str] = SYNSETS) -> Tuple[str, str]:
  """data/ILSVRC2012_validation_ground_truth.txt and data/meta.mat (IDs in devkit_order)."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  data = os.path.join(folder, "data")
  os.makedirs(data, exist_ok=True)
  order = devkit_order(synsets)
  fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
            "wordnet_height", "num_train_images"]
  rows = [(i + 1, wnid, f"words of {wnid}", f"gloss of {wnid}", 0, np.zeros((0,)), 0, 1300)
          for i, wnid in enumerate(order)]
  # A non-leaf node after the leaves, as the real meta.mat has 860 of them.
  rows.append((len(order) + 1, "n00001740", "entity", "that which exists", len(order),
               np.arange(1, len(order) + 1), 3, 0))
  struct = np.zeros((len(rows),), dtype=[(f, object) for f in fields])
  for i, row in enumerate(rows):
    struct[i] = row
  meta = os.path.join(data, "meta.mat")
  scipy.io.savemat(meta, {"synsets": struct})
  ground_truth = os.path.join(data, "ILSVRC2012_validation_ground_truth.txt")
  with open(ground_truth, "w") as f:
    f.write("".join(f"{order.index(s) + 1}\n" for s in labels))
  return ground_truth, meta

"""Manifest reading, sharding, resume positions and exact evaluation."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.data import augment
from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.data import pipeline as input_pipeline
from pyramidnet_tf.data import preprocessing as preprocessing_lib
from pyramidnet_tf.data import records as records_lib
from tests import train_fixtures

PRE = preprocessing_lib.Preprocessing("cifar", 16, "cifar10", "pt")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return train_fixtures.write_dataset(
      str(tmp_path_factory.mktemp("data")), num_classes=4, train_per_class=6,
      eval_per_class=5, size=16, shards=3)


def test_reads_the_manifest(data_dir):
  info = manifest_lib.read_manifest(data_dir)
  assert info.num_classes == 4
  assert info.num_examples("train") == 24
  assert info.num_examples("test") == 20
  assert info.eval_split == "test"
  assert info.is_cifar


def test_errors_say_how_to_make_data(tmp_path, data_dir):
  with pytest.raises(manifest_lib.DataError, match="data_prep"):
    manifest_lib.read_manifest("")
  with pytest.raises(manifest_lib.DataError,
                     match="manifest.json not found.*data_prep"):
    manifest_lib.read_manifest(str(tmp_path))
  manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
  manifest["splits"]["train"]["shards"][0]["file"] = "missing.tfrecord"
  json.dump(manifest, open(tmp_path / "manifest.json", "w"))
  with pytest.raises(manifest_lib.DataError, match="missing.tfrecord"):
    manifest_lib.read_manifest(str(tmp_path))
  info = manifest_lib.read_manifest(data_dir)
  with pytest.raises(manifest_lib.DataError, match="no split 'validation'"):
    info.shards("validation")


def _batches(ds, n):
  return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


def test_resume_continues_the_same_stream(data_dir):
  info = manifest_lib.read_manifest(data_dir)
  full = _batches(input_pipeline.train_dataset(
      info, PRE, 5, seed=3, deterministic=True), 12)
  resumed = _batches(input_pipeline.train_dataset(
      info, PRE, 5, seed=3, start_step=7, deterministic=True), 5)
  for (xa, ya), (xb, yb) in zip(full[7:], resumed):
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(xa, xb)
  other_seed = _batches(input_pipeline.train_dataset(
      info, PRE, 5, seed=4, deterministic=True), 2)
  assert not np.array_equal(other_seed[0][0], full[0][0])


@pytest.mark.parametrize("pipelines", [1, 2])
def test_a_new_batch_size_resumes_at_the_examples_seen(data_dir, pipelines):
  """A run re-based on examples seen (another batch size) continues the
  stream where it stopped: no example replayed, none skipped, across the
  epoch boundary, on every input pipeline."""
  info = manifest_lib.read_manifest(data_dir)

  def stream(per_pipeline_batch, steps, **position):
    images, labels = [], []
    for pid in range(pipelines):
      batches = _batches(input_pipeline.train_dataset(
          info, PRE, per_pipeline_batch, seed=3, deterministic=True,
          num_pipelines=pipelines, pipeline_id=pid, **position), steps)
      images.append(np.concatenate([x for x, _ in batches]))
      labels.append(np.concatenate([y for _, y in batches]))
    return images, labels
  # 18 examples per pipeline at batch 3 (all 24 of them over 2 pipelines:
  # past the epoch end), then the rest at batch 2.
  full_x, full_y = stream(3, 10)
  seen = 3 * 4 * pipelines           # 4 steps at global batch 3 x pipelines
  later_x, later_y = stream(2, 6, start_examples=seen)
  for pid in range(pipelines):
    np.testing.assert_array_equal(later_y[pid], full_y[pid][12:24])
    np.testing.assert_array_equal(later_x[pid], full_x[pid][12:24])
  # What the step count alone gave: position 4 steps x batch 2, a replay.
  replay_x, _ = stream(2, 6, start_step=4)
  assert not np.array_equal(replay_x[0], full_x[0][12:24])


def _epoch_labels(info, pipelines):
  """Sorted filenames-free check: every record once per epoch overall."""
  seen = []
  for pid in range(pipelines):
    records, count = input_pipeline._pipeline_records(  # pylint: disable=protected-access
        info, "train", pipelines, pid)
    items = list(records.as_numpy_iterator())
    assert len(items) == count
    seen.extend(items)
  return seen


@pytest.mark.parametrize("pipelines", [1, 2, 3, 5])
def test_sharding_covers_every_record_once(data_dir, pipelines):
  # 3 files: 2 and 3 pipelines shard by file, 5 by record.
  info = manifest_lib.read_manifest(data_dir)
  seen = _epoch_labels(info, pipelines)
  assert len(seen) == 24
  assert len(set(seen)) == 24


def test_epochs_are_permutations_and_batches_full(data_dir):
  info = manifest_lib.read_manifest(data_dir)
  ds = input_pipeline.train_dataset(info, PRE, 8, seed=0, deterministic=True)
  labels = np.concatenate([y for _, y in _batches(ds, 6)])  # two epochs
  for epoch in (labels[:24], labels[24:]):
    assert sorted(epoch.tolist()) == sorted([c for c in range(4)] * 6)
  assert not np.array_equal(labels[:24], labels[24:])


@pytest.mark.parametrize("global_seed", [0, 5, None])
def test_the_stream_builds_whatever_the_process_global_seed(data_dir,
                                                            global_seed):
  """A user's tf.random.set_seed(0) must not break tracing the epoch
  shuffle (TF compares the seed pair with (0, 0) in Python)."""
  info = manifest_lib.read_manifest(data_dir)
  tf.random.set_seed(global_seed)
  try:
    ds = input_pipeline.train_dataset(info, PRE, 8, seed=2)
    labels = np.concatenate([y for _, y in _batches(ds, 3)])
  finally:
    tf.random.set_seed(None)
  assert sorted(labels.tolist()) == sorted([c for c in range(4)] * 6)


@pytest.mark.parametrize("pipelines,replicas", [(1, 1), (1, 2), (2, 1)])
def test_eval_counts_every_example_once(data_dir, pipelines, replicas):
  info = manifest_lib.read_manifest(data_dir)
  steps = input_pipeline.eval_steps(info, "test", 3, pipelines, replicas)
  real = 0
  for pid in range(pipelines):
    ds = input_pipeline.eval_dataset(info, PRE, 3, steps, "test", pipelines,
                                     pid, replicas)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == steps * replicas
    labels = np.concatenate([y for _, y in batches])
    real += int((labels >= 0).sum())
  assert real == 20


def _eval_images(info, pipelines, replicas):
  """Every real eval example of every pipeline, as sortable bytes."""
  steps = input_pipeline.eval_steps(info, "test", 3, pipelines, replicas)
  seen = []
  for pid in range(pipelines):
    ds = input_pipeline.eval_dataset(info, PRE, 3, steps, "test", pipelines,
                                     pid, replicas)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == steps * replicas  # the same on every pipeline
    for images, labels in batches:
      seen.extend(image.tobytes() + bytes([label])
                  for image, label in zip(images, labels) if label >= 0)
  return sorted(seen)


@pytest.mark.parametrize("pipelines,replicas", [(1, 1), (1, 2), (2, 2),
                                                (5, 1)])
def test_recount_makes_eval_exact_whatever_the_manifest_says(
    data_dir, tmp_path, pipelines, replicas):
  # 3 files of 7, 7 and 6 records; 5 pipelines shard by record.
  manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
  shards = manifest["splits"]["test"]["shards"]
  shards[0]["num_examples"] -= 5
  shards[2]["num_examples"] += 4
  miscounted = str(tmp_path / "miscounted")
  os.makedirs(miscounted)
  for name in os.listdir(data_dir):
    if name.endswith(".tfrecord"):
      os.symlink(os.path.join(data_dir, name), os.path.join(miscounted, name))
  json.dump(manifest, open(os.path.join(miscounted, "manifest.json"), "w"))
  info = manifest_lib.read_manifest(miscounted)
  assert info.num_examples("test") == 19
  counted, mismatches = records_lib.recount(info, ["test"])
  assert counted.num_examples("test") == 20
  assert set(mismatches) == {"test"}
  assert "has 19 examples but its shards hold 20" in mismatches["test"]
  assert "test-00000-of-00003.tfrecord holds 7, listed 2" in mismatches["test"]
  expected = _eval_images(manifest_lib.read_manifest(data_dir), 1, 1)
  assert len(expected) == 20
  assert _eval_images(counted, pipelines, replicas) == expected
  assert records_lib.recount(counted, ["test"])[1] == {}


def test_count_records_finds_a_truncated_shard(data_dir, tmp_path):
  path = manifest_lib.read_manifest(data_dir).shards("train")[0].path
  data = open(path, "rb").read()
  assert records_lib.count_records(path) == 8
  cut = str(tmp_path / "train-00000-of-00001.tfrecord")
  open(cut, "wb").write(data[:-10])
  with pytest.raises(manifest_lib.DataError,
                     match=r"train-00000-of-00001.tfrecord: record 7 \(byte "
                     r"[\d,]+\) is truncated.*data_prep.verify"):
    records_lib.count_records(cut)


def test_synthetic_dataset_shapes():
  ds = input_pipeline.synthetic_dataset(32, 10, 4, seed=1)
  x, y = next(iter(ds))
  assert x.shape == (4, 32, 32, 3) and y.shape == (4,)
  assert int(tf.reduce_max(y)) < 10


def _unnormalised(x):
  mean, std = augment.CIFAR_STATS["cifar10"]
  return x * np.array(std) + np.array(mean)


@pytest.mark.parametrize("policy", [dict(autoaugment="cifar10"),
                                    dict(randaugment=(2, 9))])
def test_policy_pipeline_is_normalised_and_seeded(data_dir, policy):
  info = manifest_lib.read_manifest(data_dir)
  pre = preprocessing_lib.Preprocessing("cifar", 16, "cifar10", "pt", **policy)

  def batches(seed, preprocessing=pre):
    return _batches(input_pipeline.train_dataset(
        info, preprocessing, 6, seed=seed, deterministic=True), 4)
  first = batches(3)
  again = batches(3)
  plain = batches(3, PRE)
  other = batches(4)
  changed = 0
  for (x, y), (xa, ya), (xp, yp) in zip(first, again, plain):
    assert x.shape == (6, 16, 16, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x, xa)
    np.testing.assert_array_equal(y, ya)
    np.testing.assert_array_equal(y, yp)   # same records, same order
    pixels = _unnormalised(x)
    # Normalised from uint8 values: integers in [0, 255] once undone.
    assert pixels.min() > -0.01 and pixels.max() < 255.01
    np.testing.assert_allclose(pixels, np.round(pixels), atol=2e-3)
    changed += int(not np.array_equal(x, xp))
  assert changed == len(first)   # the policy changed every batch
  assert not np.array_equal(first[0][0], other[0][0])


def test_preprocessing_for_carries_the_policy():
  pre = preprocessing_lib.preprocessing_for("cifar10", "cifar10", 0, "pt",
                                         randaugment=[2, 9])
  assert pre.randaugment == (2, 9) and pre.autoaugment == "none"
  assert preprocessing_lib.Preprocessing.from_json(
      json.loads(json.dumps(pre.to_json()))) == pre
  folder = preprocessing_lib.preprocessing_for("folder", "imagenet", 0, "pt",
                                            autoaugment="imagenet")
  assert folder.kind == "imagenet" and folder.autoaugment == "imagenet"
  # Configs written before the policy fields existed still load.
  old = {k: v for k, v in PRE.to_json().items()
         if k not in ("autoaugment", "randaugment")}
  assert preprocessing_lib.Preprocessing.from_json(old) == PRE
  with pytest.raises(ValueError, match="--autoaugment and --randaugment"):
    preprocessing_lib.preprocessing_for("cifar10", "cifar10", 0, "pt",
                                     autoaugment="cifar10",
                                     randaugment=(1, 2))

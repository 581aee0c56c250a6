"""data_prep.planning: the seeded record order and the cut into shard plans."""

import pytest

from data_prep import DataPrepError
from data_prep import manifest as manifest_lib
from data_prep import planning


def _items(n, prefix="k"):
  return [planning.Item(f"{prefix}{i:03d}", f"{prefix}{i:03d}.jpg", i % 3, 10,
                        ("raw", bytes([i]) * 3, 1, 1))
          for i in range(n)]


def test_order_is_a_seeded_hash_of_the_key_not_the_input_order():
  items = _items(50)
  a = planning.order(items, seed=0)
  b = planning.order(list(reversed(items)), seed=0)
  assert [i.key for i in a] == [i.key for i in b]
  assert [i.key for i in a] != [i.key for i in items]          # actually shuffled
  assert [i.key for i in planning.order(items, seed=1)] != [i.key for i in a]


def test_duplicate_keys_are_an_error():
  items = _items(3) + _items(1)
  with pytest.raises(DataPrepError, match="k000"):
    planning.order(items, 0)


def test_plan_cuts_contiguous_near_equal_shards():
  plans = planning.plan_split("train", _items(10), 3, 0, manifest_lib.raw_image(1, 1), "--x")
  assert [len(p.items) for p in plans] == [3, 3, 4]
  assert [p.file for p in plans] == ["train-00000-of-00003.tfrecord",
                                     "train-00001-of-00003.tfrecord",
                                     "train-00002-of-00003.tfrecord"]
  ordered = planning.order(_items(10), 0)
  assert [i.key for p in plans for i in p.items] == [i.key for i in ordered]
  assert len({p.plan_sha256 for p in plans}) == 3


def test_plan_errors_name_the_flag():
  with pytest.raises(DataPrepError, match=r"--train_shards=11 is more than the 10 images"):
    planning.plan_split("train", _items(10), 11, 0, manifest_lib.raw_image(1, 1), "--train_shards")
  with pytest.raises(DataPrepError, match=r"--val_shards=0: must be between 1"):
    planning.plan_split("validation", _items(3), 0, 0, manifest_lib.raw_image(1, 1), "--val_shards")
  with pytest.raises(DataPrepError, match="has no images"):
    planning.plan_split("train", [], 1, 0, manifest_lib.raw_image(1, 1), "--train_shards")

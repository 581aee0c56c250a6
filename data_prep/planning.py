"""What a conversion writes: input items, their seeded order and the shards cut from it.

Every converter turns its input into `Item`s; `plan_split` orders a split by SHA-256 of
"<seed>:<key>" and cuts it into contiguous `ShardPlan`s, each with a hash of everything that
decides its bytes, so a rerun can tell a finished shard from a stale one. `ShardResult` is
what writing one shard produced (checksums and counts), as recorded in state files and in
manifest.json. The format is described in docs/data-format.md.
"""

import collections
import dataclasses
import hashlib
import json
import re
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

from data_prep import CONVERTER_VERSION, DataPrepError
from pyramidnet_tf import images

MAX_SHARDS = 99999
SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.tfrecord$")


class Item(NamedTuple):
  """One input image.

  source is ("file", path), ("tar", path, offset) for `size` bytes at `offset` of an
  uncompressed archive, or ("raw", pixels, height, width) for uint8 HWC RGB bytes.
  """

  key: str
  filename: str
  label: int
  size: int
  source: tuple
  synset: Optional[str] = None
  coarse_label: Optional[int] = None


@dataclasses.dataclass
class ShardPlan:
  """The items of one shard, in record order, and the hash of what decides its bytes."""

  split: str
  index: int
  total: int
  items: List[Item]
  plan_sha256: str = ""

  @property
  def file(self) -> str:
    return shard_name(self.split, self.index, self.total)


@dataclasses.dataclass
class ShardResult:
  """One written shard: its checksums and what happened to each of its inputs."""

  split: str
  file: str
  num_examples: int
  sha256: str
  plan_sha256: str
  input_sha256: str
  written: int
  repaired: List[Tuple[str, str]]  # (image, reason)
  rejected: List[Tuple[str, str]]

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, d: dict) -> "ShardResult":
    """The result that `to_json` gave `d` for.

    Args:
      d: A dict as written by `to_json` (and read back from a state file).

    Returns:
      The ShardResult.

    Raises:
      KeyError, TypeError, ValueError: `d` is not such a dict.
    """
    return cls(split=d["split"], file=d["file"], num_examples=int(d["num_examples"]),
               sha256=d["sha256"], plan_sha256=d["plan_sha256"],
               input_sha256=d["input_sha256"], written=int(d["written"]),
               repaired=[tuple(r) for r in d["repaired"]],
               rejected=[tuple(r) for r in d["rejected"]])


def shard_name(split: str, index: int, total: int) -> str:
  """The file name of shard `index` of `total` of a split, e.g. train-00007-of-01024.tfrecord.

  Args:
    split: The split's name.
    index: 0-based shard index.
    total: How many shards the split has.

  Returns:
    The file name (no folder).
  """
  return f"{split}-{index:05d}-of-{total:05d}.tfrecord"


def order_key(seed: int, key: str) -> bytes:
  """The sort key of an input: SHA-256 of "<seed>:<key>".

  Args:
    seed: The --seed of the conversion.
    key: The input's stable, unique key.

  Returns:
    The 32-byte digest.
  """
  return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).digest()


def order(items: Iterable[Item], seed: int) -> List[Item]:
  """Items sorted by the seeded hash of their key, so listing order never matters.

  Args:
    items: The items of one split.
    seed: The --seed of the conversion.

  Returns:
    The items in record order.

  Raises:
    DataPrepError: Two items have the same key.
  """
  items = list(items)
  keys = collections.Counter(item.key for item in items)
  duplicates = sorted(k for k, n in keys.items() if n > 1)
  if duplicates:
    raise DataPrepError(f"{len(duplicates)} input names occur more than once, e.g. "
                        f"{', '.join(duplicates[:5])}; every image needs a unique name")
  return sorted(items, key=lambda item: (order_key(seed, item.key), item.key))


def _plan_hash(plan: ShardPlan, image: dict, seed: int) -> str:
  h = hashlib.sha256()
  header = [CONVERTER_VERSION, images.REPAIR_JPEG_QUALITY, image["encoding"], seed,
            plan.split, plan.index, plan.total]
  h.update(json.dumps(header).encode("utf-8"))
  for item in plan.items:
    row = [item.key, item.filename, item.label, item.size, item.synset, item.coarse_label]
    if item.source[0] == "raw":
      row.append(hashlib.sha256(item.source[1]).hexdigest())
      row.extend(item.source[2:])
    h.update(b"\n" + json.dumps(row, ensure_ascii=False).encode("utf-8"))
  return h.hexdigest()


def plan_split(split: str, items: Sequence[Item], num_shards: int, seed: int,
               image: dict, flag: str) -> List[ShardPlan]:
  """Orders a split and cuts it into `num_shards` contiguous, near-equal shards.

  Shard i of S holds the records [i*N//S, (i+1)*N//S) of the order.

  Args:
    split: The split's name.
    items: Its items, in any order.
    num_shards: How many shards to cut it into.
    seed: The --seed of the conversion.
    image: The manifest's "image" entry (its encoding is part of each plan's hash).
    flag: The flag that set `num_shards`, named in error messages.

  Returns:
    The shard plans, by index.

  Raises:
    DataPrepError: The split is empty, or `num_shards` is out of range.
  """
  n = len(items)
  if n == 0:
    raise DataPrepError(f"split {split!r} has no images")
  if not 1 <= num_shards <= MAX_SHARDS:
    raise DataPrepError(f"{flag}={num_shards}: must be between 1 and {MAX_SHARDS}")
  if num_shards > n:
    raise DataPrepError(f"{flag}={num_shards} is more than the {n:,} images of split "
                        f"{split!r}; pass {flag}={n} or fewer")
  ordered = order(items, seed)
  plans = []
  for i in range(num_shards):
    plan = ShardPlan(split, i, num_shards, ordered[i * n // num_shards:(i + 1) * n // num_shards])
    plan.plan_sha256 = _plan_hash(plan, image, seed)
    plans.append(plan)
  return plans

"""What a conversion did, per split, and the lines it prints about it.

Every run prints `seen = written + repaired + rejected` for each split and in total, the
kinds of repairs, every rejected input with its reason, and whether manifest.json was
written (with what to do when it was not).
"""

import collections
import dataclasses
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from data_prep import manifest as manifest_lib
from data_prep import planning


@dataclasses.dataclass
class SplitSummary:
  """Counts of one split: seen = written (untouched) + repaired + rejected."""

  seen: int = 0
  written: int = 0
  repaired: int = 0
  rejected: int = 0
  shards: int = 0


@dataclasses.dataclass
class Summary:
  """The outcome of a conversion, as `data_prep.shards.convert` returns it."""

  splits: Dict[str, SplitSummary]
  rejected: List[Tuple[str, str, str]]   # (split, image, reason)
  repaired: List[Tuple[str, str, str]]
  kept_shards: int
  manifest_written: bool
  exit_code: int


def tally(plans_by_split: Dict[str, Sequence[planning.ShardPlan]],
          results: Dict[str, planning.ShardResult]
          ) -> Tuple[Dict[str, SplitSummary], List[Tuple[str, str, str]],
                     List[Tuple[str, str, str]]]:
  """Adds up the shard results of each split.

  Args:
    plans_by_split: {split: its shard plans}.
    results: {shard file: its result}, for every planned shard.

  Returns:
    ({split: its counts}, rejected inputs, repaired inputs), each input as
    (split, image, reason), in shard order.
  """
  split_summaries = {}
  all_rejected, all_repaired = [], []
  for split, plans in plans_by_split.items():
    s = SplitSummary(shards=len(plans))
    for plan in plans:
      r = results[plan.file]
      s.written += r.written
      s.repaired += len(r.repaired)
      s.rejected += len(r.rejected)
      all_repaired.extend((split, image, reason) for image, reason in r.repaired)
      all_rejected.extend((split, image, reason) for image, reason in r.rejected)
    s.seen = s.written + s.repaired + s.rejected
    split_summaries[split] = s
  return split_summaries, all_rejected, all_repaired


def plural(count: int, word: str) -> str:
  """`count` (with thousands separators) and `word`, plural unless one: "1,024 shards".

  Args:
    count: How many.
    word: The singular noun.

  Returns:
    The phrase.
  """
  return f"{count:,} {word}{'' if count == 1 else 's'}"


def _reason_kind(reason: str) -> str:
  return re.sub(r"\d+", "N", reason.split(":")[0])


def print_summary(summary: Summary, output_dir: str, max_rejected: int,
                  out: Optional[TextIO] = None) -> None:
  """Prints the per-split counts, repairs, rejections and the manifest's fate.

  Args:
    summary: The conversion's outcome.
    output_dir: The output folder (named in the lines about manifest.json).
    max_rejected: The --max_rejected of the run (named when it was exceeded).
    out: Where to print; stdout by default.
  """
  out = out if out is not None else sys.stdout
  manifest_path = os.path.join(output_dir, manifest_lib.MANIFEST)
  width = max(len(s) for s in list(summary.splits) + ["total"])
  total = SplitSummary()
  for split, s in summary.splits.items():
    print(f"{split:<{width}}: seen {s.seen:,} = written {s.written:,} + repaired "
          f"{s.repaired:,} + rejected {s.rejected:,}  ({plural(s.shards, 'shard')})", file=out)
    for field in ("seen", "written", "repaired", "rejected", "shards"):
      setattr(total, field, getattr(total, field) + getattr(s, field))
  print(f"{'total':<{width}}: seen {total.seen:,} = written {total.written:,} + repaired "
        f"{total.repaired:,} + rejected {total.rejected:,}  ({plural(total.shards, 'shard')}, "
        f"{summary.kept_shards:,} kept from an earlier run)", file=out)
  if summary.repaired:
    kinds = collections.Counter(_reason_kind(reason) for _, _, reason in summary.repaired)
    print("repaired: " + ", ".join(f"{n:,} {kind}" for kind, n in sorted(kinds.items())) +
          (f" (each listed in {manifest_path})" if summary.manifest_written else ""), file=out)
  for split, image, reason in summary.rejected:
    print(f"rejected: {split} {image}: {reason}", file=out)
  if summary.manifest_written:
    print(f"wrote {manifest_path}", file=out)
  else:
    print(f"error: {plural(total.rejected, 'input')} rejected but "
          f"--max_rejected={max_rejected}; "
          f"{manifest_lib.MANIFEST} was not written. The shards are kept: rerun the same "
          f"command with --max_rejected={total.rejected} to accept these losses, or fix the "
          "inputs and rerun (only the affected shards are redone).", file=out)

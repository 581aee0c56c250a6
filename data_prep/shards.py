"""One conversion, from planned items to verified shards and manifest.json.

Every converter (data_prep.cifar, .imagenet, .folder) describes its dataset with a
`manifest.DatasetInfo`, lists each split as `planning.Item`s and calls `convert`, which plans
the shards (planning), keeps what an earlier run finished (resume), writes the rest
(writer), writes manifest.json when the rejections are within --max_rejected (manifest) and
prints the summary (summary). What the output holds is described in docs/data-format.md.
"""

from typing import Dict, List, Sequence, Tuple

from absl import logging

from data_prep import DataPrepError
from data_prep import manifest as manifest_lib
from data_prep import planning
from data_prep import progress as progress_lib
from data_prep import resume
from data_prep import summary as summary_lib
from data_prep import writer



def convert(info: manifest_lib.DatasetInfo, splits: Dict[str, Sequence[planning.Item]],
            num_shards: Dict[str, Tuple[int, str]], output_dir: str, workers: int = 1,
            max_rejected: int = 0, seed: int = 0,
            overwrite: bool = False) -> summary_lib.Summary:
  """Plans, writes (or keeps) every shard, then writes manifest.json and prints a summary.

  All planning errors are raised before anything is written to `output_dir`.

  Args:
    info: The dataset's description for the manifest.
    splits: {split: its items}, in the order the manifest lists the splits.
    num_shards: {split: (shard count, the flag that set it, for error messages)}.
    output_dir: The output folder; created if missing.
    workers: How many processes may write shards at once (1: this process).
    max_rejected: How many inputs may be rejected with the manifest still written.
    seed: The seed of the record order.
    overwrite: Replace another dataset in `output_dir` (or splits this run does not write);
      without it such a folder is refused (resume.check_replacement).

  Returns:
    What the conversion did; exit_code is 1 when too many inputs were rejected.

  Raises:
    DataPrepError: Bad settings, bad input, an output folder holding foreign files, or
      another dataset without `overwrite`.
    DiskFullError: The output ran out of space; rerunning resumes.
  """
  if workers < 1:
    raise DataPrepError(f"--workers={workers}: must be at least 1")
  if max_rejected < 0:
    raise DataPrepError(f"--max_rejected={max_rejected}: must be 0 or more")
  plans_by_split = {}
  for split, items in splits.items():
    count, flag = num_shards[split]
    plans_by_split[split] = planning.plan_split(split, items, count, seed, info.image, flag)
  try:
    return _convert_planned(info, plans_by_split, output_dir, workers, max_rejected, seed,
                            overwrite)
  except Exception as e:  # pylint: disable=broad-except
    reason = writer.no_space_reason(e)
    if reason is None:
      raise
    raise writer.disk_full_error(output_dir, reason) from None


def _convert_planned(info: manifest_lib.DatasetInfo,
                     plans_by_split: Dict[str, List[planning.ShardPlan]], output_dir: str,
                     workers: int, max_rejected: int, seed: int,
                     overwrite: bool) -> summary_lib.Summary:
  all_plans = [plan for plans in plans_by_split.values() for plan in plans]
  kept = resume.prepare(output_dir, all_plans, info, overwrite)
  todo = [plan for plan in all_plans if plan.file not in kept]
  if kept:
    logging.info("resuming: kept %d verified shards, writing %d", len(kept), len(todo))
  results = dict(kept)
  progress = progress_lib.Progress(sum(len(p.items) for p in todo),
                                   f"writing {len(todo)} shards")
  try:
    for result in writer.write_shards(todo, output_dir, workers, progress):
      results[result.file] = result
  finally:
    progress.close()
  split_summaries, rejected, repaired = summary_lib.tally(plans_by_split, results)
  ok = len(rejected) <= max_rejected
  if ok:
    writer.commit(output_dir, manifest_lib.build(info, seed, plans_by_split, results))
  summary = summary_lib.Summary(split_summaries, rejected, repaired, len(kept), ok,
                                0 if ok else 1)
  summary_lib.print_summary(summary, output_dir, max_rejected)
  return summary

"""The resume policy: what a rerun in the same --model_dir may change.

Why: a run's step counter, learning-rate schedule and input position are
functions of the step, and a step means "one batch of this size, from this
data, seen this way, by this network". A rerun that silently changed one of
those would train something else under the same name (a larger batch ends
the run early, a smaller one replays examples, other data or augmentation
changes what the remaining steps see). So the settings fall in three
groups, checked against the launch that trained the checkpoint resumed:

* The network (every model flag): fixed for the directory; a difference is
  refused by ``checkpointing.check_config`` (the checkpoint holds that
  network). To change it, fine-tune from the run with ``--init_from``.
* ``STEP_SETTINGS``, what a step is and sees: the batch size, the data (the
  train split's identity: kind, classes, size and shards; not the path it is
  read from), the input's preprocessing, augmentation and order
  (image size, augmentation, AutoAugment/RandAugment, CIFAR convention,
  shuffle buffer, tf.data service mode, the seed), the loss's regularisers
  (label smoothing, CutMix, Mixup, Cutout) and which weights train
  (``--freeze``). A difference is refused with one line listing it and the
  ways forward, unless ``--rebase_resume`` accepts it: the run then
  continues from the examples it has seen (the input at that example, the
  schedule at examples seen / new batch size) with the new settings.
* Everything else may change and is applied, each change printed: length
  (epochs, train_steps), learning rate and schedule, optimiser (momentum,
  Nesterov, weight decay, gradient clipping, EMA, backbone lr scale),
  cadences, logging, evaluation, checkpoints, and the runtime (devices,
  distribution, dtype, XLA, channel padding, recompute, sync BN,
  determinism, caching, the data service's address), which changes how
  fast a step runs or its rounding, not what it means.

Every launch is recorded in ``train_config.json`` (``launches``: the step and
examples it started at, the settings and what changed), so the file keeps
how the run was trained from its first step. The step counter never goes
back (checkpoint names stay in order); after a re-base the schedule runs
``step_offset`` steps ahead of (or behind) the counter.

This module is plain Python (no TensorFlow): the trainer hands it the
launches read from disk, the step restored and the run's settings.
"""

import dataclasses
import datetime
import hashlib
import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

# What a step is and sees: refused unless --rebase_resume (module doc).
STEP_SETTINGS = (
    "batch_size", "synthetic_like", "image_size", "augment", "autoaugment",
    "randaugment", "cifar_convention", "shuffle_buffer", "data_service_mode",
    "seed", "label_smoothing", "cutmix_prob", "cutmix_beta", "mixup_alpha",
    "cutout_size", "freeze")
# Not compared: the network (checkpointing.check_config refuses a different
# one), the directory itself, --init_from and --init_checkpoint (not applied
# on a resume) and the
# launch's own directive.
NOT_COMPARED = ("dataset", "depth", "alpha", "bottleneck", "mode",
                "num_classes", "drop_rate", "rounding", "shakedrop",
                "shakedrop_pl", "shakedrop_level", "model_dir", "init_from",
                "init_checkpoint", "rebase_resume")
# The data's identity: a launch's "data" record (see ``data_identity``).
DATA_KEY = "data"
REBASE_FLAG = "--rebase_resume"


class ResumeRefused(ValueError):
  """A rerun changes what a step means; one line naming the differences."""


def data_identity(kind: str, train_examples: int, num_classes: Optional[int],
                  shard_files: Sequence[Tuple[str, int]]) -> Dict[str, Any]:
  """What identifies the training data, independent of where it is read.

  Args:
    kind: the data's kind (cifar10, cifar100, images; synthetic-<family>).
    train_examples: examples in the train split.
    num_classes: the data's classes (None: the model's default).
    shard_files: (file name, examples) of each train shard, in order.

  Returns:
    A JSON-friendly dict; two data directories with equal identities give
    the same input order.
  """
  shards = hashlib.sha256(json.dumps(
      [[name, int(count)] for name, count in shard_files]).encode())
  return {"kind": kind, "train_examples": int(train_examples),
          "num_classes": num_classes,
          "train_shards": shards.hexdigest()[:16]}


def _data_difference(saved: Optional[Dict], current: Dict) -> Optional[str]:
  """How the data changed, in words; None if the same (or unknown)."""
  if not saved:
    return None
  parts = []
  if saved.get("kind") != current["kind"]:
    parts.append(f"kind {saved.get('kind')} -> {current['kind']}")
  if saved.get("num_classes") != current["num_classes"]:
    parts.append(f"classes {saved.get('num_classes')} -> "
                 f"{current['num_classes']}")
  if saved.get("train_examples") != current["train_examples"]:
    parts.append(f"train split {saved.get('train_examples')} -> "
                 f"{current['train_examples']} examples")
  if not parts and saved.get("train_shards") != current["train_shards"]:
    parts.append("other train shards")
  return ", ".join(parts) or None


def _plain(value):
  """JSON's form of a setting (tuples become lists), for comparing."""
  return json.loads(json.dumps(value))


def _text(value) -> str:
  if isinstance(value, list):
    return ",".join(str(v) for v in value) or "''"
  if value is None or value == "":
    return "''" if value == "" else "unset"
  return str(value)


def _change(name: str, old, new) -> str:
  return f"--{name} {_text(old)} -> {_text(new)}"


@dataclasses.dataclass(frozen=True)
class Launch:
  """One launch of a run: where it started and with what.

  Attributes:
    start_step: the step counter it started (or resumed) at.
    start_examples: training examples seen before it, all replicas.
    step_offset: schedule step minus step counter during the launch (0
      unless a re-base changed the batch size).
    settings: the flat settings (``TrainConfig.flat()``).
    data: ``data_identity`` of its training data (None: not recorded).
    changed: name -> [old, new] of the settings it changed.
    rebased: it re-based the run on examples seen (--rebase_resume).
    started: UTC time of the launch (ISO 8601).
  """
  start_step: int
  start_examples: int
  step_offset: int
  settings: Dict[str, Any]
  data: Optional[Dict[str, Any]] = None
  changed: Dict[str, List[Any]] = dataclasses.field(default_factory=dict)
  rebased: bool = False
  started: str = ""

  @property
  def batch_size(self) -> int:
    return int(self.settings["batch_size"])

  def examples_at(self, step: int) -> int:
    """Examples seen by counter ``step`` (within this launch's segment)."""
    return self.start_examples + (step - self.start_step) * self.batch_size

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: Dict[str, Any]) -> "Launch":
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in value.items() if k in names})


def launches_of(saved: Optional[Dict[str, Any]]) -> List[Launch]:
  """The launches a ``train_config.json`` records.

  Args:
    saved: the parsed file (None: there is none).

  Returns:
    Its "launches", oldest first; a file written before launches were
    recorded counts as one launch from step 0 with its settings.
  """
  if not saved:
    return []
  if saved.get("launches"):
    return [Launch.from_json(v) for v in saved["launches"]]
  settings = {name: value for section in saved.values()
              if isinstance(section, dict) for name, value in section.items()}
  if "batch_size" not in settings:
    return []
  return [Launch(start_step=0, start_examples=0, step_offset=0,
                 settings=settings)]


def segment(launches: Sequence[Launch], step: int) -> Optional[Launch]:
  """The launch that trained counter ``step``: the latest one started at
  or before it (a launch that resumed from an older checkpoint supersedes
  the launches after that checkpoint)."""
  for launch in reversed(launches):
    if launch.start_step <= step:
      return launch
  return None


@dataclasses.dataclass(frozen=True)
class ResumePlan:
  """Where a launch starts and what it records.

  Attributes:
    start_examples: examples seen before the launch (the input position).
    step_offset: schedule step minus step counter.
    launch: the record appended to ``train_config.json``'s launches.
    changed: the changes applied, as ``--name old -> new`` phrases.
    rebase_text: the re-base in words ("" when none).
  """
  start_examples: int
  step_offset: int
  launch: Launch
  changed: Tuple[str, ...] = ()
  rebase_text: str = ""

  def schedule_step(self, counter: int) -> int:
    """The schedule's step at step counter ``counter``."""
    return counter + self.step_offset


def plan(launches: Sequence[Launch], start_step: int,
         settings: Dict[str, Any], data: Dict[str, Any], *,
         model_dir: str, rebase: bool) -> ResumePlan:
  """Checks a launch at ``start_step`` against the run's history.

  Args:
    launches: the run's recorded launches (``launches_of``), oldest first.
    start_step: the step counter restored (0: a fresh run).
    settings: this launch's flat settings (``TrainConfig.flat()``).
    data: ``data_identity`` of this launch's training data.
    model_dir: the run's directory, for messages.
    rebase: --rebase_resume was given.

  Returns:
    The launch's ``ResumePlan``.

  Raises:
    ResumeRefused: ``STEP_SETTINGS`` or the data differ from the launch that
      trained the restored step and ``rebase`` is False: one line listing
      them and the ways forward.
  """
  now = datetime.datetime.now(datetime.timezone.utc).isoformat(
      timespec="seconds")
  batch = int(settings["batch_size"])
  previous = segment(launches, start_step) if start_step else None
  if previous is None:
    # A fresh run, or a checkpoint without any record of its settings
    # (written before train_config.json was): counted at this batch.
    examples = start_step * batch
    return ResumePlan(examples, 0, Launch(
        start_step=start_step, start_examples=examples, step_offset=0,
        settings=_plain(settings), data=data, started=now))
  examples = previous.examples_at(start_step)
  old, new = previous.settings, _plain(settings)
  refused, allowed, changed = [], [], {}
  for name, value in new.items():
    if name in NOT_COMPARED or name not in old or old[name] == value:
      continue
    changed[name] = [old[name], value]
    if name in STEP_SETTINGS:
      refused.append(_change(name, old[name], value))
    elif name == "data_dir" and _data_difference(previous.data, data) is None:
      allowed.append(_change(name, old[name], value) + " (the same data)")
    else:
      allowed.append(_change(name, old[name], value))
  data_change = _data_difference(previous.data, data)
  if data_change:
    changed[DATA_KEY] = [previous.data, data]
    refused.append(f"the data ({data_change})")
  offset = previous.step_offset
  rebase_text = ""
  if refused and not rebase:
    raise ResumeRefused(
        f"--model_dir={model_dir} was trained with other settings that "
        f"change what a step means: {', '.join(refused)} (step "
        f"{start_step}, {examples} examples seen); rerun with the settings "
        "it was trained with, pass a new --model_dir, fine-tune from it "
        f"(--init_from={model_dir} --model_dir=NEW), or pass {REBASE_FLAG} "
        f"to continue from the {examples} examples seen with the new "
        "settings")
  if refused:
    offset = examples // batch - start_step
    rebase_text = (
        f"{REBASE_FLAG}: {', '.join(refused)}; the {examples} examples seen "
        f"by step {start_step} continue with batch {batch}: the input "
        f"resumes at example {examples}, the schedule at step "
        f"{start_step + offset}, and the step counter goes on from "
        f"{start_step}")
  return ResumePlan(
      start_examples=examples, step_offset=offset,
      launch=Launch(start_step=start_step, start_examples=examples,
                    step_offset=offset, settings=new, data=data,
                    changed=changed, rebased=bool(refused), started=now),
      changed=tuple(allowed), rebase_text=rebase_text)

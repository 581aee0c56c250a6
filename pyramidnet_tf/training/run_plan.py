"""The run's arithmetic: batches, steps and where the run starts.

Why one value: the global batch, the per-replica batch, the steps of an
epoch, the run's length and its start are read by the input, the step, the
outer loop, the epoch record and the console lines; each of them takes this
plan instead of its own copies, so they cannot disagree.

Two step counts meet here. The schedule counts schedule steps (the run's
length in steps of this batch size); the step counter counts the steps this
model directory has run. They differ by ``step_offset`` after a resume that
was re-based on the examples seen (``training.resume``): the counter never
goes back, so the run ends at counter ``schedule_steps - step_offset``.

Plain Python (no TensorFlow), so the arithmetic is tested on its own.
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How long a run is, in what batches, and where it starts.

  Attributes:
    global_batch: examples per step, all replicas together.
    replicas: replicas in sync (the global batch is split among them).
    train_examples: examples in the train split (one epoch).
    schedule_steps: the run's length in schedule steps (``--train_steps``,
      or ``--epochs`` x steps per epoch).
    start_step: the step counter the run starts or resumes at.
    step_offset: schedule step minus step counter (a re-based resume).
    start_examples: examples seen before the start, all replicas (the
      input position).
  """
  global_batch: int
  replicas: int
  train_examples: int
  schedule_steps: int
  start_step: int = 0
  step_offset: int = 0
  start_examples: int = 0

  @classmethod
  def create(cls, *, train_examples: int, global_batch: int, replicas: int,
             epochs: float, train_steps: int = 0) -> "RunPlan":
    """The plan of a run starting at step 0.

    Args:
      train_examples: examples in the train split.
      global_batch: ``--batch_size``.
      replicas: replicas in sync.
      epochs: ``--epochs`` (used when ``train_steps`` is 0).
      train_steps: ``--train_steps``; 0: from ``epochs``.

    Raises:
      ValueError: the batch does not split evenly among the replicas, or
        the train split holds less than one batch.
    """
    if global_batch % replicas:
      raise ValueError(f"--batch_size={global_batch} must be a multiple of "
                       f"the {replicas} replicas (per-replica batch = global "
                       "/ replicas)")
    steps_per_epoch = train_examples // global_batch
    if steps_per_epoch < 1:
      raise ValueError(f"the train split has {train_examples} examples, "
                       f"fewer than one --batch_size={global_batch}")
    schedule_steps = train_steps or max(1, int(round(epochs *
                                                     steps_per_epoch)))
    return cls(global_batch=global_batch, replicas=replicas,
               train_examples=train_examples, schedule_steps=schedule_steps)

  def resumed(self, start_step: int, step_offset: int = 0,
              start_examples: Optional[int] = None) -> "RunPlan":
    """The same run resumed at step counter ``start_step``.

    Args:
      start_step: the step counter restored (0: a fresh start).
      step_offset: schedule step minus step counter (``resume.ResumePlan``).
      start_examples: examples seen before ``start_step``; default:
        ``start_step`` x the global batch (a run never re-based).
    """
    if start_examples is None:
      start_examples = start_step * self.global_batch
    return dataclasses.replace(self, start_step=start_step,
                               step_offset=step_offset,
                               start_examples=start_examples)

  @property
  def per_replica_batch(self) -> int:
    """Examples per step on each replica."""
    return self.global_batch // self.replicas

  @property
  def steps_per_epoch(self) -> int:
    """Steps of one epoch of the train split (its last partial batch is
    left for the next epoch's input)."""
    return self.train_examples // self.global_batch

  @property
  def total_steps(self) -> int:
    """The step counter the run ends at."""
    return self.schedule_steps - self.step_offset

  @property
  def epochs(self) -> float:
    """The run's length in epochs (from schedule step 0)."""
    return self.schedule_steps / self.steps_per_epoch

  @property
  def finished_before(self) -> bool:
    """Whether the run had already reached its end when it started."""
    return self.start_step >= self.total_steps

  def schedule_step(self, step: int) -> int:
    """The schedule's step at step counter ``step``."""
    return step + self.step_offset

  def epoch(self, step: int) -> float:
    """Epochs done at step counter ``step`` (from schedule step 0)."""
    return self.schedule_step(step) / self.steps_per_epoch

"""Learning-rate schedules as pure functions of the global step.

Why functions of the step (not stateful objects): the step is checkpointed, so
a resumed run recomputes exactly the LR it would have had, and the schedule
can be evaluated inside the training ``tf.function``.

``step`` decays at epoch boundaries the way the authors' PyTorch code does:
the LR is a function of the 0-based epoch ``step // steps_per_epoch``, and is
multiplied by ``decay_factor`` once for every boundary <= epoch (CIFAR: x0.1
at 150 and 225, so epochs 0-149 use lr, 150-224 lr/10, 225+ lr/100).
``cosine`` decays per step from lr to 0 over the run (no restart). Both can
start with a linear warmup over ``warmup_epochs`` (per step, from lr/warmup
steps to lr), after which the schedule continues as without warmup.

``step_offset`` shifts the schedule against the step counter: a run re-based
on the examples it has seen (``training.resume``, a resume with another batch
size) keeps counting its steps but is at schedule step counter + offset.
"""

import dataclasses
import math
from typing import Sequence

import tensorflow as tf

from pyramidnet_tf import options

SCHEDULES = options.SCHEDULES


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Everything the LR at any step depends on.

  A frozen value, so the LR is a pure function of the global step (see the
  module docstring); call it with a step to get the LR.

  Attributes:
    name: "step" or "cosine".
    base_lr: the peak LR (--lr), > 0.
    steps_per_epoch: global steps per epoch, >= 1 (converts epochs to
      steps).
    total_steps: schedule steps of the whole run; the cosine schedule
      reaches 0 there.
    decay_epochs: "step" schedule: the 0-based epochs, in increasing order,
      from which the LR is multiplied by another ``decay_factor``.
    decay_factor: "step" schedule: the factor applied at each of them.
    warmup_epochs: epochs of linear warmup (fractions allowed), >= 0.
    step_offset: added to the global step before the schedule reads it
      (0 unless the run was re-based on examples seen).

  Raises:
    ValueError: on construction, naming the flag of an invalid field.
  """

  name: str
  base_lr: float
  steps_per_epoch: int
  total_steps: int
  decay_epochs: Sequence[int] = ()
  decay_factor: float = 0.1
  warmup_epochs: float = 0.0
  step_offset: int = 0

  def __post_init__(self):
    if self.name not in SCHEDULES:
      raise ValueError(f"--lr_schedule must be one of {', '.join(SCHEDULES)}; "
                       f"got {self.name!r}")
    if self.base_lr <= 0:
      raise ValueError(f"--lr must be > 0; got {self.base_lr}")
    if self.steps_per_epoch < 1:
      raise ValueError(f"steps per epoch must be >= 1; got "
                       f"{self.steps_per_epoch}")
    if self.warmup_epochs < 0:
      raise ValueError(f"--warmup_epochs must be >= 0; got "
                       f"{self.warmup_epochs}")
    if list(self.decay_epochs) != sorted(self.decay_epochs):
      raise ValueError(f"--lr_decay_epochs must be increasing; got "
                       f"{list(self.decay_epochs)}")

  @property
  def warmup_steps(self) -> int:
    """``warmup_epochs`` in steps, rounded to the nearest step."""
    return int(round(self.warmup_epochs * self.steps_per_epoch))

  def __call__(self, step) -> tf.Tensor:
    """LR (float32 scalar tensor) used by the update that follows ``step``.

    Args:
      step: the global step before the update (int or integer tensor,
        0-based; ``step_offset`` is added); works inside a ``tf.function``.
    """
    step = tf.cast(step, tf.int64) + self.step_offset
    base = tf.constant(self.base_lr, tf.float32)
    if self.name == "step":
      epoch = step // self.steps_per_epoch
      passed = tf.constant(0.0)
      for boundary in self.decay_epochs:
        passed += tf.cast(epoch >= boundary, tf.float32)
      lr = base * tf.pow(tf.constant(self.decay_factor, tf.float32), passed)
    else:
      span = max(self.total_steps - self.warmup_steps, 1)
      progress = tf.cast(step - self.warmup_steps, tf.float32) / span
      progress = tf.clip_by_value(progress, 0.0, 1.0)
      lr = 0.5 * base * (1.0 + tf.cos(math.pi * progress))
    if self.warmup_steps > 0:
      warm = base * tf.cast(step + 1, tf.float32) / self.warmup_steps
      lr = tf.where(step < self.warmup_steps, warm, lr)
    return lr

  def value(self, step: int) -> float:
    """The LR at ``step`` as a Python float (for logs and tests).

    Args:
      step: the global step before the update (0-based); runs eagerly.
    """
    return float(self(step).numpy())

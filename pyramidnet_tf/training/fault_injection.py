"""Faults the fault-injection tests ask a training run for; not a user
feature.

Why in the package: the tests run the real ``python -m pyramidnet_tf.train``
in a subprocess and ask it, through ``$PYRAMIDNET_TF_TEST_FAULTS``, for a
fault at a chosen step; the trainer adds ``FaultInjection`` to the outer
loop's actions only when that variable is set.
"""

import dataclasses
import logging
import os
import signal
import threading
from typing import Optional

import numpy as np
import tensorflow as tf

from pyramidnet_tf.training import loop

FAULTS_ENV = "PYRAMIDNET_TF_TEST_FAULTS"


@dataclasses.dataclass(frozen=True)
class InjectedFaults:
  """Faults the fault-injection tests ask for; not a user feature.

  Read once from $PYRAMIDNET_TF_TEST_FAULTS, comma-separated items:

  * ``nonfinite@STEP:TEXT``: when the global step reaches STEP (the loop
    ends a host call there), set to +Inf every float variable of the
    checkpoint whose name contains TEXT.
  * ``kill_in_save@STEP:SECONDS``: SIGKILL this process SECONDS after the
    save at global step STEP starts.
  """
  nonfinite_step: Optional[int] = None
  nonfinite_text: str = ""
  kill_step: Optional[int] = None
  kill_delay: float = 0.0

  @classmethod
  def from_env(cls) -> "InjectedFaults":
    """The faults $PYRAMIDNET_TF_TEST_FAULTS asks for (none if unset).

    Raises:
      ValueError: if an item does not parse.
    """
    spec = os.environ.get(FAULTS_ENV, "").strip()
    values = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
      try:
        kind, rest = item.split("@", 1)
        step, arg = rest.split(":", 1)
        if kind == "nonfinite":
          values.update(nonfinite_step=int(step), nonfinite_text=arg)
        elif kind == "kill_in_save":
          values.update(kill_step=int(step), kill_delay=float(arg))
        else:
          raise ValueError(kind)
      except ValueError:
        raise ValueError(f"{FAULTS_ENV}: cannot parse {item!r} (test hook: "
                         "nonfinite@STEP:TEXT or kill_in_save@STEP:SECONDS)"
                         ) from None
    return cls(**values)



class FaultInjection(loop.Action):
  """The outer loop's test-only action of ``InjectedFaults``.

  ``nonfinite``: the loop ends a host call at STEP, and this action (listed
  before the finiteness check) sets the chosen variables to +Inf right
  after it. ``kill_in_save``: a timer started when the save of STEP starts
  (``Checkpointer.on_save_start``, on every save, the trainer's final one
  included).
  """

  def __init__(self, faults: InjectedFaults, checkpointer):
    """Hooks the save side into ``checkpointer``.

    Args:
      faults: what to inject (``InjectedFaults.from_env``).
      checkpointer: ``checkpointing.Checkpointer``; its guarded variables
        are the ones poisoned.
    """
    self.faults = faults
    self.checkpointer = checkpointer
    self._injected = False
    checkpointer.on_save_start(self._kill_during_save)

  @classmethod
  def from_env(cls, checkpointer) -> Optional["FaultInjection"]:
    """The action $PYRAMIDNET_TF_TEST_FAULTS asks for; None if unset.

    Raises:
      ValueError: if an item does not parse.
    """
    faults = InjectedFaults.from_env()
    if faults == InjectedFaults():
      return None
    return cls(faults, checkpointer)

  def next_stop(self, step: int) -> Optional[int]:
    target = self.faults.nonfinite_step
    if target is not None and not self._injected and target > step:
      return target
    return None

  def observe(self, r: loop.Round) -> None:
    target = self.faults.nonfinite_step
    if (r.bad_step >= 0 or target is None or self._injected or
        r.step < target):
      return
    self._injected = True
    hit = [v for v in self.checkpointer.guard.variables
           if self.faults.nonfinite_text in v.name]
    for v in hit:
      v.assign(tf.fill(tf.shape(v), tf.constant(np.inf, v.dtype)))
    logging.warning("test hook %s: set %d variable(s) matching %r to +Inf at "
                    "step %d", FAULTS_ENV, len(hit),
                    self.faults.nonfinite_text, r.step)

  def _kill_during_save(self, step: int) -> None:
    if self.faults.kill_step == step:
      timer = threading.Timer(self.faults.kill_delay, os.kill,
                              (os.getpid(), signal.SIGKILL))
      timer.daemon = True
      timer.start()

"""XLA compile units smaller than the train step: one per residual unit.

Why: --jit_compile compiles the whole forward/backward as one XLA
program, so the first step pays for every unit at once, and any change to the
step (batch size, dtype, loss) recompiles everything. With
``--jit_scope=unit`` each residual unit's forward is its own
``tf.function(jit_compile=True)``; its gradient function is compiled by XLA
too. The stem, final BN, pooling, classifier, loss and optimizer run as plain
TensorFlow ops. Each unit's forward and backward are separate entries of
``compile_cache`` (a changed head or loss could reuse them, but cache keys
embed TF's per-process function names, so that is not guaranteed). Units of
the same shape could share one executable, but PyramidNet widens every unit
(each has its own channel count), so no two units share a shape
(``distinct_unit_signatures``): on a GPU, per-unit compilation does *not*
reduce the number of distinct convolutions to autotune; it only splits
compilation into smaller programs (``bench/compile_bench.py`` compares the
scopes' compile times and step speed).

The model's variables, names, checkpoints and outputs are unchanged: only the
class of each unit object is swapped for a subclass whose ``__call__`` goes
through the compiled function (``unjit_units`` swaps it back).

    model = compile_units.jit_units(model)       # same object, returned
    train_step = step.TrainStep(model=model, ..., jit_compile=False)
"""

from typing import Optional

import tensorflow as tf

from pyramidnet_tf.model import units
from pyramidnet_tf import options

JIT_SCOPES = options.JIT_SCOPES


class _JitUnit:
  """Mixin: ``__call__`` runs the unit's own XLA-compiled function."""

  def __call__(self, x: tf.Tensor, training: bool, *args, **kwargs):
    # ``training`` stays a Python bool (one trace per mode); further
    # arguments (e.g. ShakeDrop's seed tensor) pass through unchanged.
    return self._xla_forward(x, bool(training), *args, **kwargs)  # pylint: disable=no-member


def _compiled_forward(unit, plain_class):
  """``plain_class.__call__`` of ``unit`` as its own XLA-compiled function.

  One Python function per unit, not one shared method: each unit is traced
  once per mode, and its name shows up in XLA logs and compile-cache
  signatures.
  """
  def forward(x, training, *args, **kwargs):
    return plain_class.__call__(unit, x, training, *args, **kwargs)
  name = f"{unit.name}_xla"
  forward.__name__ = name
  # TensorFlow's retracing warning counts traces per code object: give each
  # unit its own (otherwise 6+ units trigger a spurious warning).
  forward.__code__ = forward.__code__.replace(co_name=name)
  # autograph off: the unit body has no data-dependent Python control flow.
  return tf.function(forward, jit_compile=True, autograph=False)


_JIT_CLASSES = {
    cls: type(f"Jit{cls.__name__}", (_JitUnit, cls),
              {"__doc__": f"{cls.__name__} compiled by XLA per unit."})
    for cls in (units.BasicUnit, units.BottleneckUnit)
}
_PLAIN_CLASSES = {jit: plain for plain, jit in _JIT_CLASSES.items()}


def _all_units(model):
  return [unit for stage in model.stages for unit in stage]


def is_jit(model) -> bool:
  """True when ``jit_units`` has been applied to ``model``.

  Args:
    model: a ``PyramidNet``.
  """
  return any(isinstance(unit, _JitUnit) for unit in _all_units(model))


def jit_units(model, num_replicas: Optional[int] = None):
  """XLA-compiles each residual unit of ``model`` separately; returns it.

  Idempotent. Sync batch norm on more than one replica is refused: its
  cross-replica all-reduce cannot run inside an XLA program (same rule as
  --jit_compile with --sync_bn).

  Args:
    model: a ``PyramidNet``, modified in place; enable sync BN on it first,
      so that the check below sees it.
    num_replicas: replicas the step runs on; None = unknown, which sync BN
      refuses too.

  Returns:
    ``model`` itself.

  Raises:
    ValueError: with sync batch norm and ``num_replicas`` None or > 1, or
      for a unit type other than ``BasicUnit`` / ``BottleneckUnit``.
  """
  if any(bn.cross_replica for bn in model.batch_norms()) and (
      num_replicas is None or num_replicas > 1):
    raise ValueError("--jit_scope=unit cannot be combined with --sync_bn on "
                     "more than one replica: the sync-BN all-reduce cannot "
                     "run inside the XLA-compiled units. Drop one of the two "
                     "flags.")
  for unit in _all_units(model):
    if isinstance(unit, _JitUnit):
      continue
    if type(unit) not in _JIT_CLASSES:
      raise ValueError(f"jit_units: unknown unit type {type(unit).__name__}; "
                       f"expected one of "
                       f"{', '.join(c.__name__ for c in _JIT_CLASSES)}")
    plain_class = type(unit)
    # object.__setattr__: a plain attribute, not tracked by tf.Module (so no
    # checkpoint or variable list sees it).
    object.__setattr__(unit, "_xla_forward",
                       _compiled_forward(unit, plain_class))
    # Swapping the class (to a subclass with the same attributes) keeps the
    # unit the same object: the model's attribute, its variables and their
    # checkpoint paths are untouched, which wrapping it would change.
    # tests/runtime/test_compile_units.py checks outputs, gradients, BN
    # updates and checkpoint keys against the plain units.
    unit.__class__ = _JIT_CLASSES[plain_class]
  return model


def unjit_units(model):
  """Undoes ``jit_units`` (plain TensorFlow units again); returns model.

  Args:
    model: a ``PyramidNet``, modified in place; units that are not
      compiled are left alone.
  """
  for unit in _all_units(model):
    if type(unit) in _PLAIN_CLASSES:
      unit.__class__ = _PLAIN_CLASSES[type(unit)]
      object.__delattr__(unit, "_xla_forward")
  return model


def distinct_unit_signatures(model, image_size: int) -> int:
  """How many units differ in (in channels, planes, stride, input size).

  Units with the same signature compile to the same HLO (up to variable
  values) and could share one executable and one autotuning; PyramidNet's
  linear widening makes almost every unit distinct.

  Args:
    model: a ``PyramidNet``.
    image_size: side of the input images in pixels (the stem's input).
  """
  size = image_size
  if model.dataset == "imagenet":
    size = -(-size // 4)  # conv1 stride 2 + max pool stride 2
  signatures = set()
  for unit in _all_units(model):
    signatures.add((type(unit).__name__, unit.in_channels, unit.planes,
                    unit.stride, size))
    size = -(-size // unit.stride)
  return len(signatures)

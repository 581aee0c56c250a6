"""ShakeDrop (Yamada et al.) on a residual branch.

The branch output F(x) (after its last BN, before the addition) is scaled:

* training, forward:  m = b + a - b*a,  b ~ Bernoulli(p_l), a ~ U[-1, 1];
* training, backward: the branch gradient is scaled by b + c - b*c with
  c ~ U[0, 1] drawn independently of a. The forward and backward factors
  differ on purpose, hence ``tf.custom_gradient``;
* evaluation: m = E[b + a - b*a] = p_l.

So a kept unit (b = 1) is an ordinary residual unit, a dropped one (b = 0)
multiplies its branch by a random, possibly negative, factor.

p_l follows the linear decay rule p_l = 1 - (l / L)(1 - p_L), l = 1..L counted
over the units of all stages (``keep_prob``); p_L (``--shakedrop_pl``) is the
keep probability of the last unit, 0.5 in every published recipe.

Levels (how widely one random value is shared). They give
the same expected factors and differ only in the noise, so a model trained
with one level reproduces its recipe only with that level:

* ``batch``:  one gate b per mini-batch (per replica), a and c per sample.
  The PyTorch ports (owruby/shake-drop_pytorch, fast-autoaugment).
* ``sample``: b, a and c all per sample. AutoAugment's TensorFlow code.
* ``pixel``:  one gate b per mini-batch, a and c per element. The authors'
  Torch7 code (their 15.78% CIFAR-100 result).

ShakeDrop creates no variables, so checkpoints (including imported PyTorch
ones) are unaffected. The random values come from stateless RNG ops keyed by
an explicit seed: a training step is reproducible from (seed, step), and the
op compiles under XLA.
"""

import dataclasses
from typing import Optional, Tuple

import tensorflow as tf

from pyramidnet_tf.model import layers
from pyramidnet_tf import options

LEVELS = options.SHAKEDROP_LEVELS
DEFAULT_KEEP_PROB = 0.5
DEFAULT_LEVEL = "batch"

# Salts folded into a unit's seed, one per random quantity, so that b, a and
# c are independent streams.
_GATE, _FORWARD, _BACKWARD = 0, 1, 2


def validate(keep_prob_last: float, level: str) -> float:
  """Checks p_L and the level; returns p_L as a float.

  Args:
    keep_prob_last: p_L, the keep probability of the last unit; anything
      ``float()`` accepts, in [0, 1].
    level: one of ``LEVELS``.

  Raises:
    ValueError: naming the argument and its valid range / choices.
  """
  if level not in LEVELS:
    raise ValueError(f"shakedrop_level must be one of {', '.join(LEVELS)}; "
                     f"got {level!r}")
  try:
    p = float(keep_prob_last)
  except (TypeError, ValueError):
    raise ValueError(f"shakedrop_pl must be a number in [0, 1]; got "
                     f"{keep_prob_last!r}") from None
  if not 0.0 <= p <= 1.0:
    raise ValueError(f"shakedrop_pl must be in [0, 1] (the keep probability "
                     f"of the last unit); got {keep_prob_last!r}")
  return p


def keep_prob(index: int, num_units: int, keep_prob_last: float) -> float:
  """p_l = 1 - (l / L)(1 - p_L) for the 1-based unit index l of L units.

  Args:
    index: l, the unit's 1-based index over all stages, in 1..``num_units``.
    num_units: L, the number of residual units over all stages.
    keep_prob_last: p_L, in [0, 1].

  Raises:
    ValueError: if ``index`` is outside 1..``num_units``.
  """
  if not 1 <= index <= num_units:
    raise ValueError(f"unit index must be in 1..{num_units}; got {index}")
  return 1.0 - (index / num_units) * (1.0 - keep_prob_last)


def random_seed() -> tf.Tensor:
  """A fresh int32 [2] seed from TF's stateful RNG (for seedless calls)."""
  return tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)


def _shapes(x: tf.Tensor, level: str, channels: Optional[int] = None
            ) -> Tuple[tf.Tensor, tf.Tensor]:
  """(shape of b, shape of a and c), broadcastable against ``x`` (against
  its first ``channels`` channels for pixel level, when given)."""
  rank = x.shape.rank
  per_batch = tf.ones([rank], tf.int32)
  per_sample = tf.concat([tf.shape(x)[:1], tf.ones([rank - 1], tf.int32)], 0)
  if level == "batch":
    return per_batch, per_sample
  if level == "sample":
    return per_sample, per_sample
  if channels is None:
    return per_batch, tf.shape(x)  # pixel
  return per_batch, tf.concat([tf.shape(x)[:-1], [channels]], 0)


def factors(x: tf.Tensor, keep: float, level: str, seed: tf.Tensor,
            channels: Optional[int] = None
            ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
  """Draws the gate b ~ Bernoulli(keep), a ~ U[-1, 1] and c ~ U[0, 1].

  Args:
    x: the branch output; only its shape is used.
    keep: the gate's keep probability p_l, in [0, 1].
    level: "batch", "sample" or "pixel": which values share one draw (see
      the module docstring).
    seed: int32/int64 [2] stateless seed; each quantity folds in its own
      salt, so b, a and c are independent.
    channels: the logical channels of ``x`` when its last axis is
      zero-padded beyond them (``channel_alignment``); None when it is not.
      Pixel-level factors are drawn for the logical channels only and padded
      with zeros, so the draws do not depend on the padding.

  Returns:
    (forward factor b + a - b*a, backward factor b + c - b*c, b, a): float32
    tensors broadcastable against ``x``; deterministic in ``seed``.
  """
  gate_shape, noise_shape = _shapes(x, level, channels)
  fold = tf.random.experimental.stateless_fold_in
  gate = tf.cast(
      tf.random.stateless_uniform(gate_shape, fold(seed, _GATE)) < keep,
      tf.float32)
  alpha = tf.random.stateless_uniform(noise_shape, fold(seed, _FORWARD),
                                      minval=-1.0, maxval=1.0)
  beta = tf.random.stateless_uniform(noise_shape, fold(seed, _BACKWARD))
  forward = gate + alpha - gate * alpha
  backward = gate + beta - gate * beta
  extra = 0 if channels is None else x.shape[-1] - channels
  if level == "pixel" and extra:
    forward, backward, alpha = (layers.append_zero_channels(factor, extra)
                                for factor in (forward, backward, alpha))
  return forward, backward, gate, alpha


def _scale(x: tf.Tensor, forward: tf.Tensor, backward: tf.Tensor
           ) -> tf.Tensor:
  """x * forward, whose gradient is dy * backward (not dy * forward)."""

  @tf.custom_gradient
  def scale(branch):
    def grad(dy):
      return dy * backward
    return branch * forward, grad

  return scale(x)


def shake_drop(x: tf.Tensor, keep: float, level: str, training: bool,
               seed: Optional[tf.Tensor] = None,
               channels: Optional[int] = None) -> tf.Tensor:
  """ShakeDrop of branch output ``x`` with keep probability ``keep``.

  Args:
    x: the residual branch output (any float dtype; factors are cast to it).
    keep: p_l of this unit.
    level: "batch", "sample" or "pixel" (module docstring).
    training: random factors if True, the expectation ``keep`` if False.
    seed: int32/int64 [2] stateless seed (training only); None draws one.
    channels: logical channels of a zero-padded ``x`` (see ``factors``).

  Returns:
    ``x`` scaled by the forward factor (training; its gradient is scaled by
    the backward factor) or by ``keep`` (evaluation), in the dtype of ``x``.
  """
  if not training:
    return x * tf.cast(keep, x.dtype)
  if seed is None:
    seed = random_seed()
  forward, backward, _, _ = factors(x, keep, level, seed, channels)
  return _scale(x, tf.cast(forward, x.dtype), tf.cast(backward, x.dtype))


@dataclasses.dataclass(frozen=True)
class ShakeDrop:
  """The ShakeDrop of one residual unit (a plain object: no variables).

  Holds what differs between units (their index and p_l), so a unit only
  calls it on its branch output; being variable-free, it leaves the unit's
  checkpoint names alone.

  Attributes:
    index: the unit's 1-based index l over all stages; folded into the
      model's seed so every unit draws its own values.
    keep: p_l.
    level: "batch", "sample" or "pixel".
  """

  index: int
  keep: float
  level: str

  def unit_seed(self, seed: tf.Tensor) -> tf.Tensor:
    """This unit's own seed: the model's seed with ``index`` folded in.

    Args:
      seed: the model's int32/int64 [2] stateless seed.
    """
    return tf.random.experimental.stateless_fold_in(seed, self.index)

  def __call__(self, branch: tf.Tensor, training: bool,
               seed: Optional[tf.Tensor] = None,
               channels: Optional[int] = None) -> tf.Tensor:
    """``shake_drop`` of ``branch`` with this unit's p_l, level and seed.

    Args:
      branch: the unit's branch output, after its last BN.
      training: random factors if True, the expectation p_l if False.
      seed: the model's int32/int64 [2] stateless seed; None draws one from
        TF's stateful RNG. Ignored when not training.
      channels: logical channels of a zero-padded ``branch``, or None.

    Returns:
      The scaled branch, in the dtype of ``branch``.
    """
    if training:
      seed = self.unit_seed(seed if seed is not None else random_seed())
    return shake_drop(branch, self.keep, self.level, training, seed,
                      channels)

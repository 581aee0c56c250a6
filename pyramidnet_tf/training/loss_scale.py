"""Dynamic loss scaling for float16 training, without Keras.

Why: float16 gradients of small losses underflow to zero. The loss is
multiplied by ``scale`` before differentiation and the gradients divided by it
afterwards. When any (already all-reduced, hence identical on every replica)
gradient is non-finite, the update is skipped and the scale halved; after
``growth_interval`` finite steps in a row it doubles. bfloat16 has float32's
exponent range and needs none of this.
"""

import tensorflow as tf


class DynamicLossScale(tf.Module):
  """The scale and its counter as variables, so they are checkpointed.

  Used by the train step for float16 only: it scales the loss by ``scale``,
  then ``unscale``s the all-reduced gradients, applies them only if
  ``all_finite``, and calls ``update``.
  """

  def __init__(self, initial_scale: float = 2.0 ** 15,
               growth_interval: int = 2000, name=None):
    """Creates the scale and good-step counter variables.

    Args:
      initial_scale: the first loss scale (a power of two keeps the scaling
        exact).
      growth_interval: finite steps in a row after which the scale doubles.
      name: module name; prefixes the variables' names.
    """
    super().__init__(name=name)
    self.growth_interval = int(growth_interval)
    with self.name_scope:
      self.scale = tf.Variable(float(initial_scale), trainable=False,
                               name="loss_scale")
      self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False,
                                    name="good_steps")

  @staticmethod
  def all_finite(grads) -> tf.Tensor:
    """Scalar bool tensor: True if every gradient is free of NaN/Inf.

    Args:
      grads: a sequence of gradient tensors (no None entries).
    """
    return tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads])

  def unscale(self, grads):
    """The gradients of the unscaled loss.

    Args:
      grads: gradients of the scaled loss, in any float dtype.

    Returns:
      A list of float32 gradients, each divided by ``scale``.
    """
    inv = 1.0 / self.scale
    return [tf.cast(g, tf.float32) * inv for g in grads]

  def update(self, finite: tf.Tensor):
    """Adjusts scale and counter after a step; call in a replica context.

    Args:
      finite: scalar bool tensor, ``all_finite`` of this step's all-reduced
        gradients (identical on every replica). True counts a good step and
        doubles the scale every ``growth_interval`` of them; False halves it
        (never below 1) and resets the counter.

    Returns:
      The grouped update op.
    """
    context = tf.distribute.get_replica_context()
    return context.merge_call(self._update_cross_replica, args=(finite,))

  def _update_cross_replica(self, strategy, finite):
    def fn(good_steps, scale, finite):
      grown = good_steps + 1 >= self.growth_interval
      new_good = tf.where(finite, tf.where(grown, tf.zeros_like(good_steps),
                                           good_steps + 1),
                          tf.zeros_like(good_steps))
      new_scale = tf.where(finite, tf.where(grown, scale * 2.0, scale),
                           tf.maximum(scale * 0.5, 1.0))
      return tf.group(good_steps.assign(new_good), scale.assign(new_scale))

    def scale_fn(scale, good_steps, finite):
      return fn(good_steps, scale, finite)
    # Both variables are mirrored; update them per device with one function.
    return strategy.extended.update(self.scale, scale_fn,
                                    args=(self.good_steps, finite), group=True)

"""Momentum SGD in PyTorch's form, with coupled L2 weight decay.

Why our own optimizer: Keras is off limits, Sonnet's optimizers refuse
MultiWorkerMirroredStrategy, and the PyramidNet recipes need exactly what
``torch.optim.SGD(momentum=0.9, nesterov=True, weight_decay=1e-4)`` does:

    g <- g + wd * p                    (coupled L2, before momentum)
    v <- mu * v + g
    p <- p - lr * (g + mu * v)         (Nesterov)   or   p - lr * v   (plain)

Gradients arrive already summed over replicas (the train step all-reduces
them explicitly), so every replica applies the identical update to its copy of
each variable inside ``strategy.extended.update``.
"""

from typing import Callable, Optional, Sequence

import tensorflow as tf


def default_decay_filter(variable: tf.Variable) -> bool:
  """Coupled L2 on every trainable variable, as the authors' code does.

  Args:
    variable: a variable the optimizer updates (unused: always True).
  """
  del variable
  return True


def no_bn_no_bias_filter(variable: tf.Variable) -> bool:
  """Decay only convolution and classifier kernels (not BN gamma/beta, bias).

  Relies on the variable names of ``pyramidnet_tf.model.layers``: BN variables are
  ``gamma``/``beta`` and the classifier's bias is ``bias``.

  Args:
    variable: a variable the optimizer updates; only its name's last
      component is read.

  Returns:
    False for variables named ``gamma``, ``beta`` or ``bias``, else True.
  """
  leaf = variable.name.split("/")[-1].split(":")[0]
  return leaf not in ("gamma", "beta", "bias")


class NesterovSGD(tf.Module):
  """SGD with (Nesterov) momentum and coupled L2, one momentum slot per var.

  Slots are created eagerly in ``__init__`` (under the strategy's scope when
  one is active), named after their variable so checkpoints are readable.
  """

  def __init__(self, variables: Sequence[tf.Variable], momentum: float = 0.9,
               nesterov: bool = True, weight_decay: float = 1e-4,
               decay_filter: Callable[[tf.Variable], bool] = default_decay_filter,
               name: Optional[str] = None,
               lr_scale: Optional[Callable[[tf.Variable], float]] = None):
    """Creates one zero momentum slot per variable.

    Args:
      variables: the variables to train; ``apply`` takes their gradients
        in this order.
      momentum: mu, in [0, 1).
      nesterov: Nesterov momentum (PyTorch's form) if True, plain if False.
      weight_decay: coupled L2 coefficient, >= 0 (added to the gradient).
      decay_filter: which variables get weight decay (e.g.
        ``no_bn_no_bias_filter``); called once per variable here.
      name: module name; prefixes the slots' names.
      lr_scale: learning-rate multiplier per variable (fine-tuning's
        --backbone_lr_scale), in [0, 1]; 0 freezes the variable: it gets no
        gradient, no weight decay and no momentum, and its slot stays zero
        (slots exist for every variable, so checkpoints do not depend on
        what is frozen). None: 1 for all.

    Raises:
      ValueError: for a momentum outside [0, 1), Nesterov with momentum 0,
        or a negative weight decay.
    """
    super().__init__(name=name)
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"momentum must be in [0, 1); got {momentum}")
    if nesterov and momentum == 0.0:
      raise ValueError("Nesterov momentum needs momentum > 0 (PyTorch rule)")
    if weight_decay < 0:
      raise ValueError(f"weight_decay must be >= 0; got {weight_decay}")
    self.momentum = float(momentum)
    self.nesterov = bool(nesterov)
    self.weight_decay = float(weight_decay)
    self._variables = list(variables)
    self._decays = [decay_filter(v) for v in self._variables]
    self._scales = [1.0 if lr_scale is None else float(lr_scale(v))
                    for v in self._variables]
    bad = [s for s in self._scales if not 0.0 <= s <= 1.0]
    if bad:
      raise ValueError(f"learning-rate scales must be in [0, 1]; got {bad[0]}")
    self.slots = []
    with self.name_scope:
      for v in self._variables:
        with tf.init_scope():
          strategy = tf.distribute.get_strategy()
          with strategy.extended.colocate_vars_with(v):
            self.slots.append(
                tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False,
                            name=v.name.split(":")[0].replace("/", "_") +
                            "_momentum"))

  @property
  def decayed_variable_names(self):
    """Names of the variables that get weight decay (for logs and tests)."""
    return [v.name for v, d in zip(self._variables, self._decays) if d]

  @property
  def trained_variables(self):
    """The variables ``apply`` updates (learning-rate scale > 0), in order;
    ``apply`` takes one gradient for each."""
    return [v for v, s in zip(self._variables, self._scales) if s > 0]

  def _update_one(self, var, slot, grad, lr, decays, apply_mask):
    grad = tf.cast(grad, var.dtype)
    if decays and self.weight_decay:
      grad = grad + self.weight_decay * var
    if apply_mask is None:
      # TF's fused kernel computes exactly the update above: v <- mu v + g;
      # p <- p - lr g - lr mu v (Nesterov) or p - lr v. One op per variable
      # instead of about eight (c110 has 439 variables).
      return tf.raw_ops.ResourceApplyMomentum(
          var=var.handle, accum=slot.handle, lr=tf.cast(lr, var.dtype),
          grad=grad, momentum=tf.constant(self.momentum, var.dtype),
          use_locking=False, use_nesterov=self.nesterov)
    velocity = self.momentum * slot + grad
    step = grad + self.momentum * velocity if self.nesterov else velocity
    # fp16 overflow: keep the old values when the step is skipped.
    return tf.group(
        slot.assign(tf.where(apply_mask, velocity, slot)),
        var.assign_sub(tf.where(apply_mask, lr * step, tf.zeros_like(step))))

  def apply(self, grads, lr, apply_mask=None):
    """Applies summed gradients (one per variable, in construction order).

    Must be called in a replica context (inside ``strategy.run``) or with no
    strategy.

    Args:
      grads: one gradient per variable of ``trained_variables`` (all of them
        unless some are frozen), already summed over replicas; any float
        dtype (cast to the variable's).
      lr: the learning rate, a float or float32 scalar tensor.
      apply_mask: optional scalar bool tensor; False keeps variables and
        slots unchanged (a float16 step with non-finite gradients). None
        always applies, through TF's fused momentum kernel.

    Returns:
      The grouped update op.

    Raises:
      ValueError: if the number of gradients differs from the number of
        variables, or a gradient is None.
      RuntimeError: if called in a cross-replica context.
    """
    trained = len(self.trained_variables)
    if len(grads) != trained:
      raise ValueError(f"{len(grads)} gradients for {trained} variables")
    context = tf.distribute.get_replica_context()
    if context is None:
      raise RuntimeError("NesterovSGD.apply must run in a replica context")
    return context.merge_call(self._apply_cross_replica,
                              args=(grads, lr, apply_mask))

  def _apply_cross_replica(self, strategy, grads, lr, apply_mask):
    updates = []
    grads = iter(grads)
    for var, slot, decays, scale in zip(self._variables, self.slots,
                                        self._decays, self._scales):
      if scale == 0:
        continue   # frozen: not even decay or momentum moves it
      grad = next(grads)
      if grad is None:
        raise ValueError(f"no gradient for {var.name}")
      updates.append(strategy.extended.update(
          var, self._update_fn(decays, scale),
          args=(slot, grad, lr, apply_mask), group=True))
    return tf.group(updates)

  def _update_fn(self, decays, scale=1.0):
    def fn(var, slot, grad, lr, apply_mask):
      # Inside the update, where lr is this replica's plain tensor.
      if scale != 1.0:
        lr = lr * scale
      return self._update_one(var, slot, grad, lr, decays, apply_mask)
    return fn

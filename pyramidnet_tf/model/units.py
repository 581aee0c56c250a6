"""PyramidNet's residual units.

Both units differ from pre-activation ResNet units in two ways the paper
insists on: no ReLU before the first convolution and a BN after the last one;
and there is no ReLU after the addition. The shortcut has no parameters: a 2x2
average pool when the unit strides, then zero channels appended at the end.

Each unit also lists its variables under the authors' PyTorch state_dict names
(``torch_variables``), in PyTorch's registration order, so that checkpoint
import is driven by structure rather than by variable creation order.

A unit may carry a ``shakedrop.ShakeDrop``, applied to the
branch output after its last BN and before the addition; it has no
variables, so the state_dict names above do not change.

Units take and return tensors of ``physical_in`` / ``physical_out``
channels (``channel_alignment``): the logical channels first, then zeros.
The zero-padded shortcut stays exact, because the input's padding channels
are already zero.
"""

from typing import List, Optional, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import record as tf_record  # pylint: disable=g-direct-tensorflow-import

from pyramidnet_tf.model import layers
from pyramidnet_tf.model import shakedrop as shakedrop_lib

# (PyTorch key suffix, variable or None, layout) triples; layout is "conv",
# "dense", "vector" or "counter" (num_batches_tracked: no TF variable).
TorchEntry = Tuple[str, Optional[tf.Variable], str]


def torch_shape(variable: tf.Variable, layout: str) -> Tuple[int, ...]:
  """The PyTorch shape of a TF variable with the given layout.

  Args:
    variable: a TF variable in TF layout.
    layout: "conv" (TF ``[kh, kw, in, out]``), "dense" (TF ``[in, out]``);
      any other layout ("vector", "counter") keeps the shape as is.

  Returns:
    The shape the same tensor has in a PyTorch state_dict (``[out, in, kh,
    kw]`` for "conv", ``[out, in]`` for "dense").
  """
  shape = tuple(variable.shape.as_list())
  if layout == "conv":  # TF [kh, kw, in, out] <- torch [out, in, kh, kw]
    return (shape[3], shape[2], shape[0], shape[1])
  if layout == "dense":  # TF [in, out] <- torch [out, in]
    return (shape[1], shape[0])
  return shape


def to_tf_layout(array: np.ndarray, layout: str) -> np.ndarray:
  """A PyTorch-layout array in the TF layout of ``layout``.

  Args:
    array: a state_dict tensor as a NumPy array, in PyTorch layout.
    layout: "conv" (``[out, in, kh, kw]`` -> ``[kh, kw, in, out]``), "dense"
      (``[out, in]`` -> ``[in, out]``); any other layout is returned as is.

  Returns:
    The array transposed (a view, not a copy) to the TF variable's layout.
  """
  if layout == "conv":
    return np.transpose(array, (2, 3, 1, 0))
  if layout == "dense":
    return np.transpose(array)
  return array


def to_torch_layout(array: np.ndarray, layout: str) -> np.ndarray:
  """A TF-layout array in PyTorch's layout: the inverse of ``to_tf_layout``.

  Args:
    array: a TF variable's value as a NumPy array.
    layout: "conv" (``[kh, kw, in, out]`` -> ``[out, in, kh, kw]``), "dense"
      (``[in, out]`` -> ``[out, in]``); any other layout is returned as is.

  Returns:
    The array transposed (a view, not a copy) to PyTorch's layout.
  """
  if layout == "conv":
    return np.transpose(array, (3, 2, 0, 1))
  if layout == "dense":
    return np.transpose(array)
  return array


def bn_torch_variables(prefix: str, bn: layers.BatchNorm) -> List[TorchEntry]:
  """The state_dict entries of a ``torch.nn.BatchNorm2d`` for ``bn``.

  Args:
    prefix: the module's state_dict key prefix, e.g. "layer1.0.bn1".
    bn: the TF batch norm whose variables take those keys.

  Returns:
    Entries for weight (gamma), bias (beta), running_mean, running_var and
    num_batches_tracked (no TF variable: None), in PyTorch's order.
  """
  return [
      (f"{prefix}.weight", bn.gamma, "vector"),
      (f"{prefix}.bias", bn.beta, "vector"),
      (f"{prefix}.running_mean", bn.moving_mean, "vector"),
      (f"{prefix}.running_var", bn.moving_variance, "vector"),
      (f"{prefix}.num_batches_tracked", None, "counter"),
  ]


def conv_torch_variables(prefix: str, conv: layers.Conv2D) -> List[TorchEntry]:
  """The state_dict entry of a bias-free ``torch.nn.Conv2d`` for ``conv``.

  Args:
    prefix: the module's state_dict key prefix, e.g. "layer1.0.conv1".
    conv: the TF convolution whose kernel takes ``<prefix>.weight``.

  Returns:
    One entry, ``(<prefix>.weight, conv.kernel, "conv")``.
  """
  return [(f"{prefix}.weight", conv.kernel, "conv")]


class _Unit(tf.Module):
  """Shared shortcut logic; subclasses define the residual branch.

  Subclasses define ``residual(x, training)``, ``convs()`` and
  ``torch_variables(prefix)``, and set ``expansion`` (output channels per
  plane).
  """

  expansion = 1

  def __init__(self, in_channels: int, planes: int, stride: int,
               name: Optional[str] = None,
               shakedrop: Optional[shakedrop_lib.ShakeDrop] = None):
    """Records the unit's channel counts and stride.

    Args:
      in_channels: logical channels of the unit's input.
      planes: the unit's width; it outputs ``planes * expansion`` channels.
      stride: 1, or 2 for the first unit of a downsampling stage (the branch
        strides in a 3x3 convolution, the shortcut average-pools 2x2).
      name: module name (``layer<s>_<i>`` in ``PyramidNet``).
      shakedrop: this unit's ShakeDrop, or None for a plain unit.

    Raises:
      ValueError: if the unit would output fewer channels than it takes.
    """
    super().__init__(name=name)
    self.shakedrop = shakedrop
    self.in_channels = in_channels
    self.planes = planes
    self.stride = stride
    self.out_channels = planes * self.expansion
    if self.out_channels < in_channels:
      raise ValueError(
          f"unit output channels ({self.out_channels}) must be >= its input "
          f"channels ({in_channels}): the zero-padded shortcut cannot drop "
          "channels")
    self.physical_in = in_channels
    self.physical_out = self.out_channels
    # Recompute the unit's activations in the backward pass instead of
    # keeping them (``_recomputed``); set through ``PyramidNet.set_recompute``.
    self.recompute = False

  def set_physical_channels(self, align) -> None:
    """Pads every tensor of the unit to ``align(channels)`` channels.

    Args:
      align: maps a logical channel count to its physical (padded) count,
        ``>=`` the logical one; e.g. ``channel_alignment.align`` with the
        multiple bound.
    """
    self.physical_in = align(self.in_channels)
    self.physical_out = align(self.out_channels)
    for conv in self.convs():
      conv.set_physical_channels(align(conv.in_channels),
                                 align(conv.out_channels))
    for bn in self.batch_norms():
      bn.set_physical_channels(align(bn.channels))

  def batch_norms(self) -> List[layers.BatchNorm]:
    """The unit's batch norms (its submodules of that type)."""
    return [m for m in self.submodules if isinstance(m, layers.BatchNorm)]

  def shortcut(self, x: tf.Tensor) -> tf.Tensor:
    """The parameter-free shortcut: 2x2 average pool if strided, zeros added.

    Args:
      x: the unit's NHWC input, ``physical_in`` channels.

    Returns:
      ``x`` (pooled when the unit strides) with zero channels appended up to
      ``physical_out``.
    """
    if self.stride != 1:
      x = layers.avg_pool_2x2_s2(x)
    return layers.append_zero_channels(x, self.physical_out - self.physical_in)

  def __call__(self, x: tf.Tensor, training: bool,
               seed: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Branch output plus shortcut.

    Args:
      x: NHWC input with ``physical_in`` channels, in the compute dtype.
      training: batch statistics (and BN updates) and random ShakeDrop
        factors if True; moving statistics and ShakeDrop's expectation if
        False.
      seed: the model's int32/int64 [2] stateless seed, used only by
        ShakeDrop (which folds in its unit index); None lets ShakeDrop draw
        one.

    Returns:
      NHWC output with ``physical_out`` channels, its padding channels zero.
    """
    if training and self.recompute:
      return self._recomputed(x, seed)
    return self._forward(x, training, seed)

  def _forward(self, x: tf.Tensor, training: bool,
               seed: Optional[tf.Tensor]) -> tf.Tensor:
    """Branch (with ShakeDrop) plus shortcut, every op on the tape."""
    # ``residual`` is the branch each subclass defines.
    branch = self.residual(x, training)
    if self.shakedrop is not None:
      branch = self.shakedrop(branch, training, seed,
                              channels=self.out_channels)
    return branch + self.shortcut(x)

  def _recomputed(self, x: tf.Tensor, seed: Optional[tf.Tensor]
                  ) -> tf.Tensor:
    """The training forward, keeping only ``x`` for the backward pass.

    The forward runs with the tape stopped, so none of the unit's
    intermediate activations outlive it; the gradient runs the forward a
    second time under its own tape and differentiates that. The second run
    sees the same input, variables and ShakeDrop seed, so it rebuilds the
    same activations: the same batch moments (sync BN: the same all-reduce),
    the same random factors. Its batch norms leave the moving statistics
    alone (``layers.moving_updates_suspended``): they are updated once per
    step, by the first forward.

    Args:
      x: NHWC input with ``physical_in`` channels.
      seed: the model's stateless seed for ShakeDrop, or None (a unit with
        ShakeDrop then draws one here, shared by both runs).

    Returns:
      The unit's training-mode output; its gradient flows to ``x`` and to
      the unit's trainable variables.
    """
    if self.shakedrop is not None and seed is None:
      seed = shakedrop_lib.random_seed()

    @tf.custom_gradient
    def unit(inputs):
      # Nothing of this run goes on the caller's tape (eagerly, a tape
      # holds every tensor it records); TF's own recompute_grad does the
      # same with this (non-exported) switch.
      with tf_record.stop_recording():
        outputs = self._forward(inputs, True, seed)

      def grad(d_outputs, variables=None):
        variables = list(variables or [])
        # Make the recomputation wait for the incoming gradient: otherwise
        # graph executors (TF and XLA alike) may run it as soon as ``inputs``
        # exists, during the forward pass, and keep its activations alive.
        # where(v == v, 0, nan) is 0 for any finite or infinite v and
        # carries a NaN gradient on (the step's loss is NaN anyway).
        first = tf.reduce_max(tf.reshape(d_outputs, [-1])[:1])
        after = tf.where(tf.equal(first, first), 0.0, float("nan"))
        with tf.GradientTape() as tape:
          again = tf.identity(inputs) + tf.cast(after, inputs.dtype)
          tape.watch(again)
          tape.watch(variables)
          with layers.moving_updates_suspended():
            recomputed = self._forward(again, True, seed)
        grads = tape.gradient(
            recomputed, [again] + variables, output_gradients=d_outputs,
            unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return grads[0], grads[1:]

      return outputs, grad

    return unit(x)


class BasicUnit(_Unit):
  """BN -> conv3x3(stride) -> BN -> ReLU -> conv3x3 -> BN, + shortcut.

  The basic PyramidNet unit (CIFAR 6n+2 depths, ImageNet 18 and 34); it
  outputs ``planes`` channels.
  """

  expansion = 1

  def __init__(self, in_channels: int, planes: int, stride: int,
               name: Optional[str] = None,
               shakedrop: Optional[shakedrop_lib.ShakeDrop] = None):
    """Creates the unit's convolutions and batch norms.

    Args:
      in_channels: logical channels of the unit's input.
      planes: width of both convolutions and of the output.
      stride: stride of the first 3x3 convolution and the shortcut (1 or 2).
      name: module name; prefixes its variables' names.
      shakedrop: this unit's ShakeDrop, or None for a plain unit.

    Raises:
      ValueError: if ``planes < in_channels``.
    """
    super().__init__(in_channels, planes, stride, name=name,
                     shakedrop=shakedrop)
    with self.name_scope:
      self.bn1 = layers.BatchNorm(in_channels, name="bn1")
      self.conv1 = layers.Conv2D(in_channels, planes, 3, stride, 1,
                                 name="conv1")
      self.bn2 = layers.BatchNorm(planes, name="bn2")
      self.conv2 = layers.Conv2D(planes, planes, 3, 1, 1, name="conv2")
      self.bn3 = layers.BatchNorm(planes, name="bn3")

  def residual(self, x, training):
    """The residual branch, before ShakeDrop and the addition.

    Args:
      x: NHWC input with ``physical_in`` channels.
      training: batch-norm mode (batch statistics if True).

    Returns:
      NHWC branch output with ``physical_out`` channels.
    """
    out = self.conv1(self.bn1(x, training))
    out = tf.nn.relu(self.bn2(out, training))
    return self.bn3(self.conv2(out), training)

  def torch_variables(self, prefix: str) -> List[TorchEntry]:
    """The unit's state_dict entries in PyTorch's registration order.

    Args:
      prefix: the unit's state_dict key prefix, e.g. "layer1.0".

    Returns:
      Entries for bn1, conv1, bn2, conv2 and bn3.
    """
    return (bn_torch_variables(f"{prefix}.bn1", self.bn1) +
            conv_torch_variables(f"{prefix}.conv1", self.conv1) +
            bn_torch_variables(f"{prefix}.bn2", self.bn2) +
            conv_torch_variables(f"{prefix}.conv2", self.conv2) +
            bn_torch_variables(f"{prefix}.bn3", self.bn3))

  def convs(self):
    """The unit's convolutions, in branch order."""
    return [self.conv1, self.conv2]


class BottleneckUnit(_Unit):
  """BN -> 1x1 -> BN -> ReLU -> 3x3(stride) -> BN -> ReLU -> 1x1 (x4) -> BN.

  The bottleneck PyramidNet unit (CIFAR 9n+2 depths, ImageNet 50 and
  deeper); it outputs ``4 * planes`` channels.
  """

  expansion = 4

  def __init__(self, in_channels: int, planes: int, stride: int,
               name: Optional[str] = None,
               shakedrop: Optional[shakedrop_lib.ShakeDrop] = None):
    """Creates the unit's convolutions and batch norms.

    Args:
      in_channels: logical channels of the unit's input.
      planes: width of the 1x1 and 3x3 convolutions; the last 1x1 and the
        output have ``4 * planes`` channels.
      stride: stride of the 3x3 convolution and the shortcut (1 or 2).
      name: module name; prefixes its variables' names.
      shakedrop: this unit's ShakeDrop, or None for a plain unit.

    Raises:
      ValueError: if ``4 * planes < in_channels``.
    """
    super().__init__(in_channels, planes, stride, name=name,
                     shakedrop=shakedrop)
    with self.name_scope:
      self.bn1 = layers.BatchNorm(in_channels, name="bn1")
      self.conv1 = layers.Conv2D(in_channels, planes, 1, name="conv1")
      self.bn2 = layers.BatchNorm(planes, name="bn2")
      self.conv2 = layers.Conv2D(planes, planes, 3, stride, 1, name="conv2")
      self.bn3 = layers.BatchNorm(planes, name="bn3")
      self.conv3 = layers.Conv2D(planes, planes * 4, 1, name="conv3")
      self.bn4 = layers.BatchNorm(planes * 4, name="bn4")

  def residual(self, x, training):
    """The residual branch, before ShakeDrop and the addition.

    Args:
      x: NHWC input with ``physical_in`` channels.
      training: batch-norm mode (batch statistics if True).

    Returns:
      NHWC branch output with ``physical_out`` channels.
    """
    out = self.conv1(self.bn1(x, training))
    out = tf.nn.relu(self.bn2(out, training))
    out = tf.nn.relu(self.bn3(self.conv2(out), training))
    return self.bn4(self.conv3(out), training)

  def torch_variables(self, prefix: str) -> List[TorchEntry]:
    """The unit's state_dict entries in PyTorch's registration order.

    Args:
      prefix: the unit's state_dict key prefix, e.g. "layer1.0".

    Returns:
      Entries for bn1, conv1, bn2, conv2, bn3, conv3 and bn4.
    """
    return (bn_torch_variables(f"{prefix}.bn1", self.bn1) +
            conv_torch_variables(f"{prefix}.conv1", self.conv1) +
            bn_torch_variables(f"{prefix}.bn2", self.bn2) +
            conv_torch_variables(f"{prefix}.conv2", self.conv2) +
            bn_torch_variables(f"{prefix}.bn3", self.bn3) +
            conv_torch_variables(f"{prefix}.conv3", self.conv3) +
            bn_torch_variables(f"{prefix}.bn4", self.bn4))

  def convs(self):
    """The unit's convolutions, in branch order."""
    return [self.conv1, self.conv2, self.conv3]

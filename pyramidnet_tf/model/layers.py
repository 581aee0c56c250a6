"""Conv2D, BatchNorm and Dense as plain tf.Modules with PyTorch semantics.

Why not tf.nn defaults: PyramidNet checkpoints come from PyTorch/Torch7, so
every layer reproduces those frameworks exactly:

* convolutions pad symmetrically (TF's 'SAME' puts the odd pixel of a stride-2
  convolution on the bottom/right, PyTorch pads both sides equally), and are
  initialised He-normal with fan_out;
* batch norm uses eps 1e-5, momentum 0.1, normalises with the biased batch
  variance and tracks the unbiased one, and can compute its batch moments over
  all replicas (sync BN) by flipping ``cross_replica``;
* the classifier is initialised like ``torch.nn.Linear``.

Physical channels (``channel_alignment.py``): a layer can compute on more
channels than it has, its tensors zero-padded up to an aligned count, because
oneDNN's convolution and batch-norm kernels run several times slower on
channel counts that are not a multiple of 8 (PyramidNet's linear widening
makes almost every count odd). Variables keep their logical shapes (so
checkpoints and PyTorch imports do not change) and are zero-padded on use;
the padded channels stay exactly zero forward and backward, so the logical
channels compute what they would without padding. All channel padding goes
through ``append_zero_channels`` (see there for why it is never ``tf.pad``).

Variables are float32 whatever the compute dtype, so bfloat16/float16 runs
keep float32 master weights and float32 BN statistics.
"""

import contextlib
import math
import threading
from typing import Iterator, Optional

import tensorflow as tf

BN_EPSILON = 1e-5
BN_MOMENTUM = 0.1

_trace_state = threading.local()


@contextlib.contextmanager
def moving_updates_suspended() -> Iterator[None]:
  """Training-mode batch norms called inside do not touch their moving
  statistics.

  For recomputation (``units``' ``recompute``): the backward pass runs a
  residual unit's forward a second time to rebuild its activations; its
  batch norms must normalise with the same batch moments, but the moving
  statistics were already updated once by the first forward and must not be
  updated again. A Python-level switch, read while ops are created (traced),
  so it works the same eagerly, in ``tf.function`` and under XLA.
  """
  depth = getattr(_trace_state, "suspended", 0)
  _trace_state.suspended = depth + 1
  try:
    yield
  finally:
    _trace_state.suspended = depth


def moving_updates_are_suspended() -> bool:
  """True inside ``moving_updates_suspended``."""
  return getattr(_trace_state, "suspended", 0) > 0


def append_zero_channels(x: tf.Tensor, extra: int, axis: int = -1
                         ) -> tf.Tensor:
  """``x`` with ``extra`` all-zero entries appended along ``axis``.

  Used for every channel padding of ``channel_alignment`` (kernels, batch-norm
  vectors, the shortcut). A concatenation with zeros, never ``tf.pad``: in
  TensorFlow 2.21.0 (CPU, oneDNN), the graph rewrite that merges a ``Pad``
  into the convolution it feeds (``mkl_layout_pass``, producing
  ``_MklNativePadWithFusedConv2D``) also matches a ``Pad`` that feeds a
  convolution fused with inference batch norm through the batch norm's
  scale, offset, mean or variance, and then aborts the whole process
  ("Check failed ... Attempt to add nullptr Node to node with type
  _MklNativePadWithFusedConv2D"). A ``ConcatV2`` is never merged.
  ``tests/model/test_onednn_workaround.py`` keeps the TF behaviour (it aborts on
  the ``Pad`` form) and this module (it does not) under test.

  Spatial padding of a convolution's input stays ``tf.pad``: that merge is
  what the rewrite is for, and it runs correctly there.

  Args:
    x: any tensor of known rank; other axes may have dynamic sizes.
    extra: number of zero entries to append (>= 0; 0 returns ``x`` itself).
    axis: the axis to extend; negative values count from the end.

  Returns:
    ``x`` concatenated with zeros of its dtype, ``extra`` longer on ``axis``.
  """
  if extra == 0:
    return x
  axis = axis % x.shape.rank
  dynamic = tf.shape(x)
  shape = [dynamic[i] if size is None else size
           for i, size in enumerate(x.shape.as_list())]
  shape[axis] = extra
  return tf.concat([x, tf.zeros(shape, x.dtype)], axis=axis)


def _padding(kernel_size: int, stride: int, padding: int):
  """The ``padding`` argument of tf.nn.conv2d equal to PyTorch's ``padding``.

  A list is explicit padding (``Conv2D`` applies it as tf.pad + 'VALID').
  """
  if padding == 0:
    return "VALID"
  # With stride 1 and pad (k-1)/2, TF's 'SAME' pads both sides equally.
  if stride == 1 and 2 * padding == kernel_size - 1:
    return "SAME"
  return [[0, 0], [padding, padding], [padding, padding], [0, 0]]


def _check_physical(name: str, logical: int, physical: int) -> int:
  if not isinstance(physical, int) or physical < logical:
    raise ValueError(f"{name}: physical channels must be an integer >= its "
                     f"{logical} channels; got {physical!r}")
  return physical


class Conv2D(tf.Module):
  """Bias-free 2-D convolution on NHWC tensors with PyTorch-style padding.

  The kernel is stored as ``[kh, kw, in, out]`` (TF layout); PyTorch's
  ``[out, in, kh, kw]`` maps to it by transposing (2, 3, 1, 0).

  ``physical_in`` / ``physical_out`` (default: the logical counts) are the
  channels of the tensors it takes and returns; the kernel is zero-padded to
  them on use.
  """

  def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
               stride: int = 1, padding: int = 0, name: Optional[str] = None):
    """Creates the He-normal (fan_out) kernel.

    Args:
      in_channels: logical input channels.
      out_channels: logical output channels.
      kernel_size: side of the square kernel, in pixels.
      stride: stride in both spatial dimensions.
      padding: PyTorch's ``padding``: pixels of zeros added on every side
        of the input (symmetric).
      name: module name; the kernel variable is ``<name>/kernel``.
    """
    super().__init__(name=name)
    self.in_channels = in_channels
    self.out_channels = out_channels
    self.kernel_size = kernel_size
    self.stride = stride
    self.padding = padding
    self._tf_padding = _padding(kernel_size, stride, padding)
    # He/MSRA normal with fan_out, as the authors' Torch7 and PyTorch code.
    stddev = math.sqrt(2.0 / (kernel_size * kernel_size * out_channels))
    with self.name_scope:
      self.kernel = tf.Variable(
          tf.random.normal(
              [kernel_size, kernel_size, in_channels, out_channels],
              stddev=stddev, dtype=tf.float32),
          name="kernel")
    self.physical_in = in_channels
    self.physical_out = out_channels

  def set_physical_channels(self, physical_in: int, physical_out: int):
    """Channels of the (zero-padded) input and output tensors.

    Args:
      physical_in: channels of the input tensors, ``>= in_channels``.
      physical_out: channels of the output tensors, ``>= out_channels``.

    Raises:
      ValueError: if either is not an int or is below its logical count.
    """
    self.physical_in = _check_physical(f"{self.name} input", self.in_channels,
                                       physical_in)
    self.physical_out = _check_physical(f"{self.name} output",
                                        self.out_channels, physical_out)

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """Convolves ``x`` in its own dtype (the kernel is cast to it).

    Args:
      x: NHWC with ``physical_in`` channels.

    Returns:
      NHWC with ``physical_out`` channels; the padding channels are zero.
    """
    kernel = tf.cast(self.kernel, x.dtype)
    # Zero input/output channels appended; their gradients are dropped (only
    # the logical entries are variables).
    kernel = append_zero_channels(kernel, self.physical_in - self.in_channels,
                                  axis=2)
    kernel = append_zero_channels(kernel,
                                  self.physical_out - self.out_channels,
                                  axis=3)
    padding = self._tf_padding
    if isinstance(padding, list):
      # An explicit pad + 'VALID', not conv2d's explicit padding: TF's oneDNN
      # rewrite skips the backprop ops of explicitly padded convolutions (on
      # CPU they then run in Eigen: in bfloat16, 0.3 s each at c110 b128),
      # and merges this form into one padded convolution.
      x = tf.pad(x, padding)
      padding = "VALID"
    return tf.nn.conv2d(x, kernel, strides=self.stride, padding=padding)

  def output_size(self, size: int) -> int:
    """Spatial output size for a square input of ``size`` (PyTorch rule).

    Args:
      size: height (= width) of the input, in pixels.

    Returns:
      ``(size + 2 * padding - kernel_size) // stride + 1``.
    """
    return (size + 2 * self.padding - self.kernel_size) // self.stride + 1


def _replica_context_for_sync():
  """The replica context when a cross-replica all-reduce is meaningful."""
  if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
    return None
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync <= 1:
    return None
  return context


class BatchNorm(tf.Module):
  """Batch normalisation over N, H, W of an NHWC tensor (PyTorch semantics).

  Training normalises with the biased batch variance and updates
  ``moving_variance`` with the unbiased one (x m/(m-1)), as PyTorch and Torch7.
  ``moving <- (1 - momentum) * moving + momentum * batch``.

  Setting ``cross_replica = True`` makes training-mode moments come from one
  all-reduce of (sum, sum of squares, count) over all replicas in sync, i.e.
  the statistics of the global batch (sync BN). Outside a multi-replica
  replica context it is the same as local BN.

  Local training BN and inference are TF's fused kernel (FusedBatchNormV3:
  cuDNN on GPU, oneDNN on CPU; one op forward, one backward, instead of
  about fifteen element-wise ops and reductions). Its training-mode batch
  variance output is the unbiased one PyTorch tracks.
  ``physical_channels`` (default ``channels``): see the module docstring;
  padded channels have gamma = beta = 0, so they output zeros.
  """

  def __init__(self, channels: int, eps: float = BN_EPSILON,
               momentum: float = BN_MOMENTUM, cross_replica: bool = False,
               name: Optional[str] = None):
    """Creates gamma = 1, beta = 0 and the moving statistics (0 and 1).

    Args:
      channels: logical channels (the length of every variable).
      eps: added to the variance before the square root.
      momentum: PyTorch's convention: the weight of the new batch statistic
        in the moving averages (0.1 here is TF's 0.9).
      cross_replica: compute training moments over all replicas (sync BN);
        may also be set later through the attribute.
      name: module name; prefixes the variables' names.
    """
    super().__init__(name=name)
    self.channels = channels
    self.eps = eps
    self.momentum = momentum
    self.cross_replica = cross_replica
    # Fine-tuning's frozen parts: inference mode even in training calls, so
    # the moving statistics stay as loaded and the output ignores the batch.
    self.frozen = False
    with self.name_scope:
      self.gamma = tf.Variable(tf.ones([channels]), name="gamma")
      self.beta = tf.Variable(tf.zeros([channels]), name="beta")
      # ON_READ + MEAN: each replica updates its own copy during a step; a
      # cross-replica read (checkpoint, eval outside strategy.run) averages.
      self.moving_mean = tf.Variable(
          tf.zeros([channels]), trainable=False, name="moving_mean",
          synchronization=tf.VariableSynchronization.ON_READ,
          aggregation=tf.VariableAggregation.MEAN)
      self.moving_variance = tf.Variable(
          tf.ones([channels]), trainable=False, name="moving_variance",
          synchronization=tf.VariableSynchronization.ON_READ,
          aggregation=tf.VariableAggregation.MEAN)
    self.physical_channels = channels

  def set_physical_channels(self, physical: int):
    """Channels of the (zero-padded) tensors it normalises.

    Args:
      physical: channels of the input and output, ``>= channels``.

    Raises:
      ValueError: if it is not an int or is below ``channels``.
    """
    self.physical_channels = _check_physical(self.name, self.channels,
                                             physical)

  def _to_physical(self, vector: tf.Tensor) -> tf.Tensor:
    """A per-channel float32 vector zero-padded to the physical channels."""
    return append_zero_channels(vector, self.physical_channels - self.channels)

  def _sync_moments(self, x32: tf.Tensor, context):
    """(mean, biased variance, element count per channel) of the global
    batch: one all-reduce of the replicas' sums, squared sums and counts."""
    axes = [0, 1, 2]
    count = tf.cast(tf.reduce_prod(tf.shape(x32)[:-1]), tf.float32)
    local_sum = tf.reduce_sum(x32, axes)
    local_sq = tf.reduce_sum(tf.square(x32), axes)
    packed = tf.concat([local_sum, local_sq, tf.reshape(count, [1])], axis=0)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, packed)
    channels = self.physical_channels
    total_sum = total[:channels]
    total_sq = total[channels:2 * channels]
    total_count = total[-1]
    mean = total_sum / total_count
    variance = tf.maximum(total_sq / total_count - tf.square(mean), 0.0)
    return mean, variance, total_count

  def _update_moving(self, mean: tf.Tensor, unbiased: tf.Tensor) -> None:
    if moving_updates_are_suspended():
      return  # a recomputation: the first forward already updated them
    decay = 1.0 - self.momentum
    self.moving_mean.assign(
        decay * self.moving_mean + self.momentum * tf.stop_gradient(mean))
    self.moving_variance.assign(
        decay * self.moving_variance +
        self.momentum * tf.stop_gradient(unbiased))

  def _fused_training(self, x: tf.Tensor) -> tf.Tensor:
    y, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=self._to_physical(self.gamma),
        offset=self._to_physical(self.beta), mean=tf.zeros([0]),
        variance=tf.zeros([0]), epsilon=self.eps, is_training=True)
    self._update_moving(mean[:self.channels], unbiased[:self.channels])
    return y

  def _fused_inference(self, x: tf.Tensor) -> tf.Tensor:
    # Padded channels: mean 0, variance 0 (eps > 0), gamma = beta = 0: zeros.
    y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=x, scale=self._to_physical(self.gamma),
        offset=self._to_physical(self.beta),
        mean=self._to_physical(self.moving_mean),
        variance=self._to_physical(self.moving_variance),
        epsilon=self.eps, is_training=False)
    return y

  def _sync_training(self, x: tf.Tensor, context) -> tf.Tensor:
    mean, variance, count = self._sync_moments(tf.cast(x, tf.float32),
                                               context)
    mean, variance = mean[:self.channels], variance[:self.channels]
    self._update_moving(mean, variance * count / tf.maximum(count - 1.0, 1.0))
    # Fold the statistics into one scale and shift (float32), then apply them
    # in the compute dtype: one multiply-add per element.
    scale = self.gamma * tf.math.rsqrt(variance + self.eps)
    shift = self.beta - mean * scale
    return (x * tf.cast(self._to_physical(scale), x.dtype) +
            tf.cast(self._to_physical(shift), x.dtype))

  def __call__(self, x: tf.Tensor, training: bool) -> tf.Tensor:
    """Normalises ``x``; in training also updates the moving statistics.

    Args:
      x: NHWC with ``physical_channels`` channels, in the compute dtype.
      training: normalise with the batch's moments (the global batch's when
        ``cross_replica``) and update ``moving_mean`` / ``moving_variance``
        if True; with the moving statistics if False (always when
        ``frozen``).

    Returns:
      A tensor of the shape and dtype of ``x``; padding channels are zero.
    """
    if not training or self.frozen:
      return self._fused_inference(x)
    context = _replica_context_for_sync() if self.cross_replica else None
    if context is None:
      return self._fused_training(x)
    return self._sync_training(x, context)


class Dense(tf.Module):
  """Fully connected layer with ``torch.nn.Linear``'s default initialisation.

  Weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)). The kernel is ``[in, out]``;
  PyTorch's ``[out, in]`` maps to it by a transpose.
  """

  def __init__(self, in_features: int, out_features: int,
               name: Optional[str] = None):
    """Creates the kernel and bias.

    Args:
      in_features: length of each input vector.
      out_features: length of each output vector (the number of classes
        for the classifier).
      name: module name; prefixes the variables' names.
    """
    super().__init__(name=name)
    self.in_features = in_features
    self.out_features = out_features
    bound = 1.0 / math.sqrt(in_features)
    with self.name_scope:
      self.kernel = tf.Variable(
          tf.random.uniform([in_features, out_features], -bound, bound),
          name="kernel")
      self.bias = tf.Variable(
          tf.random.uniform([out_features], -bound, bound), name="bias")

  def __call__(self, x: tf.Tensor) -> tf.Tensor:
    """``x @ kernel + bias`` in the dtype of ``x``.

    Args:
      x: ``[N, in_features]``.

    Returns:
      ``[N, out_features]`` in the dtype of ``x``.
    """
    return (tf.matmul(x, tf.cast(self.kernel, x.dtype)) +
            tf.cast(self.bias, x.dtype))


def max_pool_3x3_s2_p1(x: tf.Tensor) -> tf.Tensor:
  """PyTorch ``MaxPool2d(3, stride=2, padding=1)`` for non-negative inputs.

  PyTorch pads with -inf; the ImageNet stem pools a ReLU output (>= 0), where
  zero padding gives the same maximum. Symmetric, unlike TF's 'SAME'.

  Args:
    x: NHWC, all values >= 0.

  Returns:
    NHWC with spatial sizes ``(size - 1) // 2 + 1``.
  """
  x = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
  return tf.nn.max_pool2d(x, ksize=3, strides=2, padding="VALID")


def avg_pool_2x2_s2(x: tf.Tensor) -> tf.Tensor:
  """PyTorch ``AvgPool2d(2, stride=2, ceil_mode=True)``.

  Even sizes: a plain 2x2 mean. Odd sizes: TF's 'SAME' adds the partial last
  window and averages only its valid pixels, which is what ceil_mode does.

  Args:
    x: NHWC.

  Returns:
    NHWC with spatial sizes ``ceil(size / 2)``.
  """
  return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="SAME")

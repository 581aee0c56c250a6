"""PyramidNet (Han, Kim & Kim, CVPR 2017) as a tf.Module.

Built to be the authors' network to the parameter: the same stems, units,
widths, shortcut, head and initialisation as their Torch7 and PyTorch code
(``docs/architecture.md``, parity rules), so their PyTorch checkpoints load by
name (see ``torch_variables`` and ``import_torch``) and give the same logits.

    model = PyramidNet("cifar10", depth=110, alpha=48, bottleneck=False)
    logits = model(images_nhwc, training=False)   # float32 [N, num_classes]

With ``shakedrop=True`` every unit scales its branch by ShakeDrop's factor
(``shakedrop.py``). Training calls take ``seed``, an int32/int64 [2]
stateless seed, so that a step's random factors are reproducible:

    logits = model(images, training=True, seed=tf.constant([step, 7]))

``set_channel_multiple(m)`` (or ``channel_multiple=m``) carries every tensor
with its channels zero-padded to a multiple of m, for the CPU's oneDNN
kernels (``channel_alignment``); same variables, same outputs.
"""

import collections
from typing import List, Optional

import tensorflow as tf

from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.model import layers
from pyramidnet_tf.model import shakedrop as shakedrop_lib
from pyramidnet_tf.model import units
from pyramidnet_tf.model import widths as widths_lib

# What the backward pass recomputes instead of keeping (``set_recompute``).
RECOMPUTE = ("none", "unit")


class PyramidNet(tf.Module):
  """The additive or multiplicative PyramidNet for CIFAR or ImageNet.

  A ``tf.Module`` rather than a Keras model so that variable names and
  order can follow the authors' PyTorch state_dict exactly.

  Attributes:
    arch: the validated ``widths.Architecture`` (depth, unit counts, widths).
    widths: planes of every residual unit, in unit order.
    stage_widths: the same, grouped per stage.
    num_features: channels entering the classifier (the paper's output dim).
    num_classes: classifier outputs.
    shakedrop, shakedrop_pl, shakedrop_level: the ShakeDrop setting.
    num_units: residual units over all stages (ShakeDrop's L).
  """

  def __init__(self, dataset: str, depth: int, alpha: float,
               bottleneck: Optional[bool] = None, *, mode: str = "add",
               num_classes: Optional[int] = None, drop_rate: float = 0.0,
               rounding: str = "py3", shakedrop: bool = False,
               shakedrop_pl: float = shakedrop_lib.DEFAULT_KEEP_PROB,
               shakedrop_level: str = shakedrop_lib.DEFAULT_LEVEL,
               channel_multiple: int = 1,
               name: Optional[str] = None):
    """Builds the network and its variables.

    Args:
      dataset: "cifar10", "cifar100" or "imagenet" (stem, stages, classes).
      depth: depth as the paper counts it (CIFAR: 6n+2 basic, 9n+2
        bottleneck; ImageNet: 18/34/50/101/152/200, or 8n+2 / 12n+2).
      alpha: widening factor.
      bottleneck: unit type; None = the paper's choice for this depth.
      mode: "add" (additive widening) or "mul" (multiplicative).
      num_classes: classifier size; default from the dataset (10/100/1000).
      drop_rate: dropout before the classifier (0.5 in the ImageNet a=450
        model); no parameters, so checkpoints are unaffected.
      rounding: "py3" (PyTorch's round-half-to-even) or "half_up" (Torch7).
      shakedrop: ShakeDrop on every residual branch (no parameters, but it
        scales eval outputs by p_l, so it belongs to the model's config).
      shakedrop_pl: p_L, the keep probability of the last unit; unit l of L
        keeps with 1 - (l / L)(1 - p_L).
      shakedrop_level: "batch", "sample" or "pixel" (see ``shakedrop``).
      channel_multiple: pad activations' channels to a multiple of this
        (``set_channel_multiple``); not part of the model's config.
      name: module name.

    Raises:
      ValueError: for any invalid argument, naming it and the valid choices.
    """
    super().__init__(name=name)
    self.arch = widths_lib.architecture(dataset, depth, alpha, bottleneck,
                                        mode, rounding)
    if num_classes is None:
      num_classes = widths_lib.NUM_CLASSES[dataset]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or (
        num_classes < 1):
      raise ValueError(
          f"num_classes must be a positive integer; got {num_classes!r}")
    try:
      drop_rate = float(drop_rate)
    except (TypeError, ValueError):
      raise ValueError(f"drop_rate must be a number in [0, 1); got "
                       f"{drop_rate!r}") from None
    if not 0.0 <= drop_rate < 1.0:
      raise ValueError(f"drop_rate must be in [0, 1); got {drop_rate}")
    if not isinstance(shakedrop, bool):
      raise ValueError(f"shakedrop must be True or False; got {shakedrop!r}")
    shakedrop_pl = shakedrop_lib.validate(shakedrop_pl, shakedrop_level)
    self.shakedrop = shakedrop
    self.shakedrop_pl = shakedrop_pl
    self.shakedrop_level = shakedrop_level
    self.dataset = dataset
    self.num_classes = num_classes
    self.drop_rate = drop_rate
    self.widths = self.arch.flat_planes
    self.stage_widths = [list(stage) for stage in self.arch.planes]
    self.num_features = self.arch.num_features
    self.num_units = len(self.widths)

    unit_class = (units.BottleneckUnit if self.arch.bottleneck else
                  units.BasicUnit)
    stem = self.arch.stem_width
    with self.name_scope:
      if dataset == "imagenet":
        self.conv1 = layers.Conv2D(3, stem, 7, stride=2, padding=3,
                                   name="conv1")
      else:
        self.conv1 = layers.Conv2D(3, stem, 3, stride=1, padding=1,
                                   name="conv1")
      self.bn1 = layers.BatchNorm(stem, name="bn1")
      channels = stem
      index_over_stages = 0  # ShakeDrop's l, 1-based over all stages
      self.num_stages = len(self.arch.planes)
      for index, (planes, stride) in enumerate(
          zip(self.arch.planes, widths_lib.stage_strides(self.arch))):
        stage = []
        for position, unit_planes in enumerate(planes):
          index_over_stages += 1
          unit = unit_class(channels, unit_planes,
                            stride if position == 0 else 1,
                            name=f"layer{index + 1}_{position}",
                            shakedrop=self._unit_shakedrop(index_over_stages))
          stage.append(unit)
          channels = unit.out_channels
        # layer1, layer2, ...: the PyTorch names, also in TF checkpoints.
        setattr(self, f"layer{index + 1}", stage)
      self.bn_final = layers.BatchNorm(channels, name="bn_final")
      self.fc = layers.Dense(channels, num_classes, name="fc")
    self.channel_multiple = 1
    self.set_channel_multiple(channel_multiple)
    self.recompute = "none"

  def set_channel_multiple(self, multiple: int) -> None:
    """Carries every activation with its channels zero-padded to a multiple
    of ``multiple`` (1: no padding). Call before tracing; variables,
    checkpoints and outputs are unchanged (``channel_alignment``).

    Args:
      multiple: the channel alignment, a positive int (8 for float32 and
        16 for bfloat16 on CPU; 1 on GPU by default).

    Raises:
      ValueError: if ``multiple`` is not a positive int.
    """
    if isinstance(multiple, bool) or not isinstance(multiple, int) or (
        multiple < 1):
      raise ValueError(f"channel_multiple must be a positive integer; got "
                       f"{multiple!r}")

    def align(channels):
      return channel_alignment.align(channels, multiple)

    # The images keep their 3 channels; everything after the stem is padded.
    self.conv1.set_physical_channels(self.conv1.in_channels,
                                     align(self.conv1.out_channels))
    self.bn1.set_physical_channels(align(self.bn1.channels))
    for stage in self.stages:
      for unit in stage:
        unit.set_physical_channels(align)
    self.bn_final.set_physical_channels(align(self.bn_final.channels))
    self.channel_multiple = multiple

  def set_recompute(self, recompute: str) -> None:
    """Chooses what the backward pass keeps of the residual units.

    Args:
      recompute: one of ``RECOMPUTE``. "none": every activation the
        gradient needs is kept from the forward pass. "unit": only each
        residual unit's input is kept; the unit's forward runs again in the
        backward pass to rebuild the rest (about one more forward per step,
        for a fraction of the activation memory). Same loss, gradients,
        batch-norm statistics and ShakeDrop draws either way.

    Raises:
      ValueError: if ``recompute`` is not one of ``RECOMPUTE``.
    """
    if recompute not in RECOMPUTE:
      raise ValueError(f"recompute must be one of {', '.join(RECOMPUTE)}; "
                       f"got {recompute!r}")
    for stage in self.stages:
      for unit in stage:
        unit.recompute = recompute == "unit"
    self.recompute = recompute

  def _unit_shakedrop(self, index: int
                      ) -> Optional[shakedrop_lib.ShakeDrop]:
    if not self.shakedrop:
      return None
    keep = shakedrop_lib.keep_prob(index, self.num_units, self.shakedrop_pl)
    return shakedrop_lib.ShakeDrop(index, keep, self.shakedrop_level)

  def _training_seed(self, training: bool, seed) -> Optional[tf.Tensor]:
    """The seed the units fold their index into; None if unused.

    Each replica folds in its replica id, so replicas given the same seed
    still draw their own gates ("one gate per mini-batch" means per replica's
    mini-batch, as in the data-parallel reference runs).
    """
    if not (self.shakedrop and training):
      return None
    if seed is None:
      seed = shakedrop_lib.random_seed()
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64) or (
        seed.shape.rank is not None and seed.shape.as_list() != [2]):
      raise ValueError("seed must be an int32/int64 tensor of shape [2] (a "
                       f"stateless RNG seed); got {seed.dtype.name} "
                       f"{seed.shape}")
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      seed = tf.random.experimental.stateless_fold_in(
          seed, tf.cast(context.replica_id_in_sync_group, tf.int32))
    return seed

  @property
  def stages(self) -> List[List[tf.Module]]:
    """Residual units per stage (``layer1``, ``layer2``, ...)."""
    return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

  def features(self, images: tf.Tensor, training: bool = False,
               seed: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Pooled features ``[N, num_features]`` (before dropout/classifier).

    Args:
      images: float NHWC images, as for ``__call__``.
      training: training mode (batch-norm batch statistics and updates,
        random ShakeDrop factors).
      seed: see ``__call__``.

    Returns:
      The globally averaged final activations, in the images' dtype, with
      any channel padding removed.
    """
    seed = self._training_seed(training, seed)
    x = self.bn1(self.conv1(images), training)
    if self.dataset == "imagenet":
      # CIFAR's stem has no ReLU (the first unit starts with its own BN).
      x = layers.max_pool_3x3_s2_p1(tf.nn.relu(x))
    for stage in self.stages:
      for unit in stage:
        x = unit(x, training, seed)
    x = tf.nn.relu(self.bn_final(x, training))
    # The authors pool 8x8 / 7x7, i.e. the global mean at 32 / 224 pixels;
    # the global mean keeps that meaning at any resolution.
    x = tf.reduce_mean(x, axis=[1, 2])
    if self.bn_final.physical_channels != self.num_features:
      x = x[:, :self.num_features]  # drop the zero padding channels
    return x

  def __call__(self, images: tf.Tensor, training: bool = False,
               seed: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Maps float NHWC images to float32 logits ``[N, num_classes]``.

    The compute dtype is the images' dtype (float32, bfloat16 or float16);
    variables stay float32 and are cast on use.

    ``seed`` (int32/int64 [2]) keys ShakeDrop's stateless random factors in
    training; it is ignored without ShakeDrop or in eval. With ShakeDrop, a
    training call without a seed draws one from TF's stateful RNG.

    Args:
      images: ``[N, H, W, 3]`` float images, already normalised as the
        dataset's pipeline (or the imported release) expects; any size the
        stem and strides accept (32 for CIFAR, 224 for ImageNet as trained).
      training: batch statistics, BN updates, dropout and random ShakeDrop
        factors if True; inference if False.
      seed: int32/int64 [2] stateless seed for ShakeDrop, or None.

    Returns:
      float32 logits ``[N, num_classes]``.

    Raises:
      ValueError: with ShakeDrop in training, if ``seed`` is not an
        int32/int64 tensor of shape [2].
    """
    x = self.features(images, training, seed)
    if training and self.drop_rate > 0:
      x = tf.nn.dropout(x, rate=self.drop_rate)
    return tf.cast(self.fc(x), tf.float32)

  def batch_norms(self) -> List[layers.BatchNorm]:
    """Every batch norm of the network (stem, units and ``bn_final``)."""
    return [m for m in self.submodules if isinstance(m, layers.BatchNorm)]

  def convs(self) -> List[layers.Conv2D]:
    """Every convolution of the network (stem and units)."""
    return [m for m in self.submodules if isinstance(m, layers.Conv2D)]

  def set_sync_batch_norm(self, enabled: bool) -> None:
    """Makes every BN compute training moments over all replicas (or not).

    Args:
      enabled: True for sync BN (the global batch's moments), False for each
        replica's own.
    """
    for bn in self.batch_norms():
      bn.cross_replica = bool(enabled)

  def torch_variables(self) -> "collections.OrderedDict[str, units.TorchEntry]":
    """PyTorch state_dict key -> (variable or None, layout), in key order.

    Names and order are those of dyhan0920/PyramidNet-PyTorch (also used by
    CutMix-PyTorch and fast-autoaugment): ``conv1``, ``bn1``,
    ``layer<s>.<i>.*``, ``bn_final``, ``fc``.
    """
    entries = units.conv_torch_variables("conv1", self.conv1)
    entries += units.bn_torch_variables("bn1", self.bn1)
    for index, stage in enumerate(self.stages):
      for position, unit in enumerate(stage):
        entries += unit.torch_variables(f"layer{index + 1}.{position}")
    entries += units.bn_torch_variables("bn_final", self.bn_final)
    entries += [("fc.weight", self.fc.kernel, "dense"),
                ("fc.bias", self.fc.bias, "vector")]
    return collections.OrderedDict(
        (key, (variable, layout)) for key, variable, layout in entries)


def count_params(model: tf.Module) -> int:
  """Number of trainable scalars (what the authors' train.py prints).

  Args:
    model: any ``tf.Module``; moving BN statistics are not counted.
  """
  return int(sum(v.shape.num_elements() for v in model.trainable_variables))


def config_of(model: PyramidNet) -> dict:
  """The constructor arguments that rebuild ``model`` (JSON-serialisable).

  ``channel_multiple`` is left out: it is a runtime choice, not part of the
  network.

  Args:
    model: the network to describe.
  """
  arch = model.arch
  return {
      "dataset": arch.dataset,
      "depth": arch.depth,
      "alpha": arch.alpha,
      "bottleneck": arch.bottleneck,
      "mode": arch.mode,
      "num_classes": model.num_classes,
      "drop_rate": model.drop_rate,
      "rounding": arch.rounding,
      "shakedrop": model.shakedrop,
      "shakedrop_pl": model.shakedrop_pl,
      "shakedrop_level": model.shakedrop_level,
  }


# Constructor defaults of keys newer than some saved model_config.json files:
# a config without them describes a model built without the feature.
_ADDED_KEY_DEFAULTS = {
    "shakedrop": False,
    "shakedrop_pl": shakedrop_lib.DEFAULT_KEEP_PROB,
    "shakedrop_level": shakedrop_lib.DEFAULT_LEVEL,
}


def canonical_config(config: dict) -> dict:
  """``config`` as comparable values: missing newer keys get their defaults,
  and ShakeDrop's p_L / level are reset when ShakeDrop is off (they do not
  change that network), so equal networks compare equal.

  Args:
    config: a model config such as ``config_of`` returns or
      ``model_config.json`` holds; not modified.

  Returns:
    A new dict.
  """
  config = dict(_ADDED_KEY_DEFAULTS, **config)
  if not config["shakedrop"]:
    config["shakedrop_pl"] = _ADDED_KEY_DEFAULTS["shakedrop_pl"]
    config["shakedrop_level"] = _ADDED_KEY_DEFAULTS["shakedrop_level"]
  return config

"""AutoAugment (published CIFAR-10 and ImageNet policies) and RandAugment.

The policies choose, per image and from a stateless seed, which operations
of ``augment_ops`` run and at which magnitude; they run inside the training
pipeline's parallel ``tf.data`` map, so they are graph ops too. Magnitudes
use ``augment_ops``'s scale, 10 being AutoAugment's strongest setting.

RandAugment's M uses the same scale and is limited to it: 0 <= M <= 10,
M = 10 being AutoAugment's strongest setting. torchvision's RandAugment
(31 magnitude bins, 0..30) reaches the same rotation (30 degrees), shear
(0.3), Solarize threshold and Posterize bits at 3 M; its translations go to
150/331 of the side at 30 (ours to 10/32 at 10) and its enhance factors
1 +- 0.03 m take a random sign (ours, as the TF code, are 0.18 M + 0.1).
At 10, the scale's end, Solarize inverts every pixel and Posterize keeps 4
bits (torchvision's ends are the same). The TF code extrapolates above 10
(Rotate 42 degrees, shear 0.42 and an enhance factor 2.62 at M = 14, Solarize
still Invert, Posterize keeping 3 bits and none from M = 20), which no
published table calibrated, so those magnitudes are refused
(``options.parse_randaugment``).
"""

from typing import Callable, Optional, Tuple

import tensorflow as tf

from pyramidnet_tf import options
from pyramidnet_tf.data import augment_ops

MAX_RANDAUGMENT_MAGNITUDE = options.RANDAUGMENT_MAX_MAGNITUDE
AUTOAUGMENT_POLICIES = options.AUTOAUGMENT_POLICIES

# Cubuk et al., "AutoAugment: Learning Augmentation Strategies from Data",
# CVPR 2019, appendix table of the CIFAR-10 policy: 25 sub-policies of two
# (operation, probability, magnitude) triples. Values checked against two
# public copies of that table: DeepVoltaire/AutoAugment autoaugment.py
# (CIFAR10Policy) and pytorch/vision torchvision/transforms/autoaugment.py
# (AutoAugmentPolicy.CIFAR10). Its first 5 sub-policies are ``exp0_0`` of
# tensorflow/models research/autoaugment policies.py; that file's
# good_policies() is a larger union (95 sub-policies from 19 searches, with
# Cutout), which the paper's table summarises. Magnitudes of operations that
# take none are kept as published.
CIFAR10_POLICY = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)

# The paper's ImageNet policy (same two sources: ImageNetPolicy /
# AutoAugmentPolicy.IMAGENET). It repeats some sub-policies, as published.
IMAGENET_POLICY = (
    (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
    (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Equalize", 0.4, 4), ("Rotate", 0.8, 8)),
    (("Solarize", 0.6, 3), ("Equalize", 0.6, 7)),
    (("Posterize", 0.8, 5), ("Equalize", 1.0, 2)),
    (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
    (("Equalize", 0.6, 8), ("Posterize", 0.4, 6)),
    (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
    (("Rotate", 0.4, 9), ("Equalize", 0.6, 2)),
    (("Equalize", 0.0, 7), ("Equalize", 0.8, 8)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
    (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
    (("Sharpness", 0.4, 7), ("Invert", 0.6, 8)),
    (("ShearX", 0.6, 5), ("Equalize", 1.0, 9)),
    (("Color", 0.4, 0), ("Equalize", 0.6, 3)),
    (("Equalize", 0.4, 7), ("Solarize", 0.2, 4)),
    (("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)),
    (("Invert", 0.6, 4), ("Equalize", 1.0, 8)),
    (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
    (("Equalize", 0.8, 8), ("Equalize", 0.6, 3)),
)

# The RandAugment paper's 14 transformations (Cubuk et al. 2020, sec. 3).
# The TF ImageNet code swaps Identity for Invert, Cutout and SolarizeAdd.
RANDAUGMENT_OPS = (
    "Identity", "AutoContrast", "Equalize", "Rotate", "Solarize", "Color",
    "Posterize", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
    "TranslateX", "TranslateY")


# ---------------------------------------------------------------- helpers


def _signs(seed, n):
  return tf.where(tf.random.stateless_uniform([n], seed) < 0.5, -1.0, 1.0)


def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


# ----------------------------------------------------------- AutoAugment


def policy_table(name: str):
  """The sub-policies of --autoaugment=``name``.

  Args:
    name: "cifar10" or "imagenet".

  Returns:
    ``CIFAR10_POLICY`` or ``IMAGENET_POLICY``.

  Raises:
    ValueError: for any other name ("none" included).
  """
  tables = {"cifar10": CIFAR10_POLICY, "imagenet": IMAGENET_POLICY}
  if name not in tables:
    raise ValueError(f"--autoaugment must be one of "
                     f"{', '.join(AUTOAUGMENT_POLICIES)}; got {name!r}")
  return tables[name]


def autoaugment_choices(seed, num_subpolicies: int):
  """(sub-policy index, two uniform draws, two signs) for a stateless
  seed: operation i of the chosen sub-policy runs iff draw i < its
  probability.

  Args:
    seed: the image's int32/int64 [2] stateless policy seed.
    num_subpolicies: size of the policy table.
  """
  choice_seed, draw_seed, sign_seed = _split(seed, 3)
  index = tf.random.stateless_uniform([], choice_seed, 0, num_subpolicies,
                                      dtype=tf.int32)
  return (index, tf.random.stateless_uniform([2], draw_seed),
          _signs(sign_seed, 2))


def autoaugment(image, seed, policy: str = "cifar10"):
  """One sub-policy chosen uniformly, each of its two operations applied
  with its probability (AutoAugment's sampling).

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    seed: the image's int32/int64 [2] stateless policy seed.
    policy: "cifar10" or "imagenet" (``policy_table``).

  Raises:
    ValueError: for an unknown ``policy``.
  """
  table = policy_table(policy)
  index, draws, signs = autoaugment_choices(seed, len(table))
  ops = tf.constant([[augment_ops.OP_NAMES.index(n) for n, _, _ in s]
                     for s in table])
  probabilities = tf.constant([[p for _, p, _ in s] for s in table])
  magnitudes = tf.constant([[float(m) for _, _, m in s] for s in table])
  for slot in range(2):
    op = tf.where(draws[slot] < probabilities[index, slot], ops[index, slot],
                  augment_ops.OP_NAMES.index("Identity"))
    image = augment_ops.apply_by_index(op, image, magnitudes[index, slot],
                                       signs[slot])
  return image


# ------------------------------------------------------------ RandAugment


def randaugment_choices(seed, num_layers: int):
  """(operation indices into RANDAUGMENT_OPS, signs), one per layer.

  Args:
    seed: the image's int32/int64 [2] stateless policy seed.
    num_layers: N, operations per image.
  """
  op_seed, sign_seed = _split(seed, 2)
  ops = tf.random.stateless_uniform([num_layers], op_seed, 0,
                                    len(RANDAUGMENT_OPS), dtype=tf.int32)
  return ops, _signs(sign_seed, num_layers)


def randaugment(image, seed, num_layers: int, magnitude: float):
  """N operations drawn uniformly with replacement from RANDAUGMENT_OPS,
  each applied (always) at magnitude M.

  Args:
    image: HWC RGB, uint8 or float32 in [0, 255].
    seed: the image's int32/int64 [2] stateless policy seed.
    num_layers: N, operations per image (a Python int >= 1).
    magnitude: M, a Python number in 0..``MAX_RANDAUGMENT_MAGNITUDE`` on
      AutoAugment's scale (10 = its strongest; ``make_policy`` refuses
      others).
  """
  ops, signs = randaugment_choices(seed, num_layers)
  op_index = tf.gather(tf.constant([augment_ops.OP_NAMES.index(n)
                                    for n in RANDAUGMENT_OPS]), ops)
  for layer in range(num_layers):
    image = augment_ops.apply_by_index(op_index[layer], image,
                                       float(magnitude), signs[layer])
  return image


# ------------------------------------------------------ flags -> policy


# --randaugment=N,M -> (N, M) or None; TensorFlow-free, so the flags are
# checked before TensorFlow starts.
parse_randaugment = options.parse_randaugment


def make_policy(autoaugment_policy: str = "none",
                randaugment_nm: Optional[Tuple[int, int]] = None
                ) -> Optional[Callable]:
  """``policy(image, seed) -> image`` for the flags, or None when off.

  Args:
    autoaugment_policy: --autoaugment: "none", "cifar10" or "imagenet".
    randaugment_nm: --randaugment as ``parse_randaugment`` returns it:
      (N, M), or None.

  Raises:
    ValueError: for an unknown policy, both AutoAugment and RandAugment,
      or a RandAugment magnitude outside 0..``MAX_RANDAUGMENT_MAGNITUDE``.
  """
  if autoaugment_policy not in AUTOAUGMENT_POLICIES:
    raise ValueError(f"--autoaugment must be one of "
                     f"{', '.join(AUTOAUGMENT_POLICIES)}; got "
                     f"{autoaugment_policy!r}")
  if autoaugment_policy != "none" and randaugment_nm:
    raise ValueError("--autoaugment and --randaugment are alternatives; "
                     "set --autoaugment=none or drop --randaugment")
  if autoaugment_policy != "none":
    return lambda image, seed: autoaugment(image, seed, autoaugment_policy)
  if randaugment_nm:
    n, m = parse_randaugment([str(v) for v in randaugment_nm])
    return lambda image, seed: randaugment(image, seed, n, m)
  return None

"""Reads the imgclsmob / pytorchcv PyramidNet releases.

The CIFAR-10, CIFAR-100 and SVHN PyramidNets most people download come from
osmr/imgclsmob, used through the ``pytorchcv`` package; it also has an
ImageNet PyramidNet-101 (alpha 360). Their networks are ours to the
parameter, but their state_dicts name modules after pytorchcv's blocks:

* ``features.init_block.{conv,bn}``: the stem;
* ``features.stage<s>.unit<m>.body.conv<k>.{bn,conv}``: each residual branch
  convolution with the batch norm that precedes it;
* ``features.stage<s>.unit<m>.bn``: the batch norm closing the branch;
* ``features.post_activ.bn`` and ``output``: the head.

``is_imgclsmob`` tells such a state_dict from the authors' by its keys, and
``to_author_names`` renames it to the authors' PyTorch keys, which
``pytorch.load_state_dict`` then matches name by name and shape by shape.
Release files are named ``<model_name>-<error*100>-<sha1 prefix>.pth``
(e.g. ``pyramidnet272_a200_bn_cifar100-1619-98bc2f48.pth``);
``parse_release_name`` reads the architecture and dataset from that name.
"""

import dataclasses
import os
import re
from typing import Dict, Mapping, Optional

import numpy as np

_UNIT = re.compile(r"features\.stage(\d+)\.unit(\d+)\.(.+)$")
_BRANCH = re.compile(r"body\.conv(\d+)\.(bn|conv)\.(.+)$")
_NAME = re.compile(
    r"^pyramidnet(\d+)_a(\d+(?:\.\d+)?)(_bn)?(?:_(cifar10|cifar100|svhn))?"
    r"(?:-(\d{4})-([0-9a-f]{8}))?$")

# pytorchcv's release datasets -> the dataset our network is built for.
RELEASE_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100",
                    "svhn": "cifar10", "imagenet": "imagenet"}


@dataclasses.dataclass(frozen=True)
class ReleaseName:
  """What an imgclsmob release's file name says about its network.

  Attributes:
    model_name: pytorchcv's model name, e.g. "pyramidnet110_a48_svhn".
    depth: the depth in the name.
    alpha: the (additive) widening factor in the name.
    bottleneck: whether the name says "_bn" (bottleneck units); ImageNet
      names leave it to the depth.
    dataset: "cifar10", "cifar100", "svhn" or "imagenet" (no suffix).
    error: the published error in percent, from the file name, or None.
  """
  model_name: str
  depth: int
  alpha: float
  bottleneck: Optional[bool]
  dataset: str
  error: Optional[float]

  def model_kwargs(self) -> Dict[str, object]:
    """The ``PyramidNet`` arguments the name stands for.

    pytorchcv's PyramidNets are all additive with Python 3 rounding.
    """
    return {"dataset": RELEASE_DATASETS[self.dataset], "depth": self.depth,
            "alpha": self.alpha, "bottleneck": self.bottleneck,
            "mode": "add", "rounding": "py3"}


def parse_release_name(path: str) -> Optional[ReleaseName]:
  """The architecture an imgclsmob file name (or model name) stands for.

  Args:
    path: a file path such as ``.../pyramidnet110_a48_cifar10-0372-eb185645
      .pth`` or a bare model name; ``.pth``/``.pth.tar``/``.npz`` endings
      are ignored.

  Returns:
    The parsed name, or None if the base name is not an imgclsmob
    PyramidNet name.
  """
  name = os.path.basename(path)
  for suffix in (".tar", ".pth", ".npz", ".pt"):
    if name.endswith(suffix):
      name = name[:-len(suffix)]
  match = _NAME.match(name)
  if not match:
    return None
  depth, alpha, bn, dataset, error, _ = match.groups()
  dataset = dataset or "imagenet"
  if dataset == "imagenet":
    bottleneck = None  # the depth's table entry decides
  else:
    bottleneck = bn is not None
  model_name = name.split("-")[0]
  return ReleaseName(model_name=model_name, depth=int(depth),
                     alpha=float(alpha), bottleneck=bottleneck,
                     dataset=dataset,
                     error=int(error) / 100.0 if error else None)


def is_imgclsmob(state: Mapping[str, object]) -> bool:
  """Whether a state_dict uses pytorchcv's PyramidNet names.

  Args:
    state: an unwrapped state_dict (``pytorch.unwrap_state_dict``).
  """
  return ("features.init_block.conv.weight" in state and
          "output.weight" in state)


def _convs_per_unit(state: Mapping[str, object]) -> Dict[tuple, int]:
  counts: Dict[tuple, int] = {}
  for key in state:
    unit = _UNIT.match(key)
    if not unit:
      continue
    branch = _BRANCH.match(unit.group(3))
    if branch:
      where = (int(unit.group(1)), int(unit.group(2)))
      counts[where] = max(counts.get(where, 0), int(branch.group(1)))
  return counts


def to_author_names(state: Mapping[str, np.ndarray]
                    ) -> Dict[str, np.ndarray]:
  """The state_dict under the authors' PyTorch key names.

  ``stage<s>.unit<m>`` becomes ``layer<s>.<m-1>``; the k-th branch block's
  batch norm ``bn<k>`` and its convolution ``conv<k>``; the unit's closing
  batch norm ``bn<K+1>`` after its K convolutions; stem ``conv1``/``bn1``,
  head ``bn_final`` and ``fc``. Keys that fit none of these are kept as they
  are, so the name-by-name match reports them as unexpected.

  Args:
    state: an imgclsmob state_dict (``is_imgclsmob``), name -> array.

  Returns:
    A new dict with the same arrays under the authors' keys.
  """
  convs = _convs_per_unit(state)
  renamed: Dict[str, np.ndarray] = {}
  for key, value in state.items():
    new = key
    if key.startswith("features.init_block.conv."):
      new = "conv1." + key[len("features.init_block.conv."):]
    elif key.startswith("features.init_block.bn."):
      new = "bn1." + key[len("features.init_block.bn."):]
    elif key.startswith("features.post_activ.bn."):
      new = "bn_final." + key[len("features.post_activ.bn."):]
    elif key.startswith("output."):
      new = "fc." + key[len("output."):]
    else:
      unit = _UNIT.match(key)
      if unit:
        stage, index, rest = (int(unit.group(1)), int(unit.group(2)),
                              unit.group(3))
        prefix = f"layer{stage}.{index - 1}"
        branch = _BRANCH.match(rest)
        if branch:
          k, part, field = branch.groups()
          new = f"{prefix}.{part}{k}.{field}"
        elif rest.startswith("bn."):
          closing = convs.get((stage, index), 0) + 1
          new = f"{prefix}.bn{closing}.{rest[len('bn.'):]}"
    renamed[new] = value
  return renamed

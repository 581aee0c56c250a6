"""The input conventions the authors' released models were trained with.

Imported weights only give the published accuracy when the network is fed as
its authors fed it, and the three implementations differ (channel order,
pixel scale, mean and std). A convention is a dict: pixels p in 0..255, in
``color`` channel order, become ``(p * scale - mean[c]) / std[c]``. The
importer records the file's convention in the model directory's metadata
(``metadata.input_convention``), which evaluation, export and prediction
apply.
"""

from typing import Any, Dict

from pyramidnet_tf.data import augment

_CIFAR10_MEAN, _CIFAR10_STD = augment.CIFAR_STATS["cifar10"]

# The authors' PyTorch data loaders (dyhan0920/PyramidNet-PyTorch):
# RGB in [0, 1], then (x - mean) / std. Their CIFAR code uses CIFAR-10
# statistics for both CIFAR datasets.
TORCH_INPUT_CONVENTION = {
    "cifar10": {"color": "RGB", "scale": 1.0 / 255.0,
                "mean": [m / 255 for m in _CIFAR10_MEAN],
                "std": [s / 255 for s in _CIFAR10_STD]},
    "imagenet": {"color": "RGB", "scale": 1.0 / 255.0,
                 "mean": list(augment.IMAGENET_MEAN_UNIT),
                 "std": list(augment.IMAGENET_STD_UNIT)},
}
TORCH_INPUT_CONVENTION["cifar100"] = TORCH_INPUT_CONVENTION["cifar10"]

# Torch7 ImageNet models (fb.resnet.torch): RGB scaled to [0, 1],
# then (x - mean) / std.
TORCH7_INPUT_CONVENTION = {
    "color": "RGB", "scale": 1.0 / 255.0,
    "mean": list(augment.IMAGENET_MEAN_UNIT),
    "std": list(augment.IMAGENET_STD_UNIT),
}
# fb.resnet.torch's CIFAR statistics (0-255 units) for CIFAR .t7 models.
TORCH7_CIFAR_CONVENTION = {
    dataset: {"color": "RGB", "scale": 1.0, "mean": list(mean),
              "std": list(std)}
    for dataset, (mean, std) in augment.CIFAR_STATS.items()
}

# Caffe (jhkim89/PyramidNet-caffe): BGR pixels 0-255, minus (104, 117, 124),
# times 0.017352, i.e. std = 1 / 0.017352 in the common formula
# (pixel * scale - mean) / std.
CAFFE_SCALE = 0.017352
CAFFE_INPUT_CONVENTION = {
    "color": "BGR", "scale": 1.0,
    "mean": [104.0, 117.0, 124.0], "std": [1.0 / CAFFE_SCALE] * 3,
}


# imgclsmob / pytorchcv (osmr/imgclsmob's PyTorch datasets): RGB in [0, 1],
# then (x - mean) / std; one set of CIFAR-10 statistics for its CIFAR-10,
# CIFAR-100 and SVHN models (std as 0.2023, 0.1994, 0.2010), the usual ImageNet
# statistics for its ImageNet models.
IMGCLSMOB_INPUT_CONVENTION = {
    "cifar10": {"color": "RGB", "scale": 1.0 / 255.0,
                "mean": [0.4914, 0.4822, 0.4465],
                "std": [0.2023, 0.1994, 0.2010]},
    "imagenet": {"color": "RGB", "scale": 1.0 / 255.0,
                 "mean": list(augment.IMAGENET_MEAN_UNIT),
                 "std": list(augment.IMAGENET_STD_UNIT)},
}
IMGCLSMOB_INPUT_CONVENTION["cifar100"] = IMGCLSMOB_INPUT_CONVENTION["cifar10"]


def input_convention(file_format: str, dataset: str) -> Dict[str, Any]:
  """What the file's authors fed the network.

  Args:
    file_format: "pytorch", "npz", "torch7" or "caffe" (``importer.FORMATS``
      less "auto"), or "imgclsmob" for pytorchcv's releases; anything else
      means the authors' PyTorch code.
    dataset: "cifar10", "cifar100" or "imagenet".

  Returns:
    A new dict: pixels p in 0..255, in ``color`` channel order, become
    (p * scale - mean[c]) / std[c].
  """
  if file_format == "torch7":
    if dataset == "imagenet":
      return dict(TORCH7_INPUT_CONVENTION)
    return dict(TORCH7_CIFAR_CONVENTION[dataset])
  if file_format == "caffe":
    return dict(CAFFE_INPUT_CONVENTION)
  if file_format == "imgclsmob":
    return dict(IMGCLSMOB_INPUT_CONVENTION[dataset])
  return dict(TORCH_INPUT_CONVENTION[dataset])


def normalisation_of(preprocessing) -> Dict[str, Any]:
  """The input convention a ``Preprocessing`` applies, in this module's form.

  Args:
    preprocessing: a ``data.preprocessing.Preprocessing``.

  Returns:
    A new dict: pixels p in 0..255, in ``color`` channel order, become
    (p * scale - mean[c]) / std[c], with ``scale`` 1/255 (PyTorch's
    ``ToTensor``) and ``mean``/``std`` in those units.
  """
  if preprocessing.mean is not None:
    mean, std = preprocessing.mean, preprocessing.std
  elif preprocessing.kind == "cifar":
    mean, std = augment.cifar_stats(preprocessing.stats_dataset,
                                    preprocessing.convention)
  else:
    mean, std = augment.IMAGENET_MEAN, augment.IMAGENET_STD
  return {"color": preprocessing.color.upper(), "scale": 1.0 / 255.0,
          "mean": [float(m) / 255.0 for m in mean],
          "std": [float(s) / 255.0 for s in std]}


def _triple(values) -> str:
  return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def torchvision_recipe(preprocessing) -> str:
  """The torchvision transforms that feed a network as ``preprocessing``
  feeds it at evaluation, as one line for a PyTorch user.

  Args:
    preprocessing: a ``data.preprocessing.Preprocessing``.

  Returns:
    E.g. "CenterCrop(16) (pads smaller images with black), ToTensor(),
    Normalize(mean=[0.4914, 0.4824, 0.4467], std=[0.2471, 0.2435, 0.2616])".
  """
  size = preprocessing.image_size
  steps = []
  if preprocessing.kind == "cifar" and preprocessing.resize:
    steps.append(f"Resize(({size}, {size}), interpolation=BICUBIC, "
                 "antialias=True)")
  elif preprocessing.kind == "cifar":
    steps.append(f"CenterCrop({size}) (pads smaller images with black)")
  else:
    steps += [f"Resize({int(round(size * 256 / 224))}, "
              "interpolation=BICUBIC)", f"CenterCrop({size})"]
  steps.append("ToTensor()")
  convention = normalisation_of(preprocessing)
  if convention["color"] == "BGR":
    steps.append("x[[2, 1, 0]] (BGR channel order)")
  steps.append(f"Normalize(mean={_triple(convention['mean'])}, "
               f"std={_triple(convention['std'])})")
  return ", ".join(steps)

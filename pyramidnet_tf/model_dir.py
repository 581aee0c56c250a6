"""What evaluate/export need from a model directory besides the weights.

Why: directories come from the trainer (whose model_config.json metadata
records the preprocessing and class names) or from ``import_torch`` (which
records neither); for the latter the preprocessing follows the architecture
(CIFAR: 32x32, CIFAR-10 statistics as the authors' PyTorch code; ImageNet:
224 crop of a 256 short side, ImageNet statistics) and class names come from
a data directory's manifest when one is given.
"""

import dataclasses
from typing import List, Optional

from pyramidnet_tf import input_pipeline


def preprocessing_of(metadata: dict, model_config: dict, image_size: int = 0,
                     convention: str = "pt",
                     info: Optional[input_pipeline.DataInfo] = None
                     ) -> input_pipeline.Preprocessing:
  """The preprocessing a model directory's network expects.

  Trainer output records it (``metadata["preprocessing"]``). Imported
  checkpoints record their authors' input convention
  (``metadata["input_convention"]``: pixels p in 0..255, in ``color`` order,
  become ``(p * scale - mean) / std``), which replaces the default
  statistics, so that e.g. a Caffe model gets its BGR, mean-subtracted input.
  """
  if "preprocessing" in metadata:
    return input_pipeline.Preprocessing.from_json(metadata["preprocessing"])
  data_kind = info.kind if info is not None else model_config["dataset"]
  preprocessing = input_pipeline.preprocessing_for(
      data_kind, model_config["dataset"], image_size, convention)
  spec = metadata.get("input_convention")
  if spec:
    scale = float(spec["scale"])
    preprocessing = dataclasses.replace(
        preprocessing, color=str(spec.get("color", "RGB")).upper(),
        mean=tuple(float(m) / scale for m in spec["mean"]),
        std=tuple(float(s) / scale for s in spec["std"]))
  return preprocessing


def class_names_of(metadata: dict, num_classes: int,
                   info: Optional[input_pipeline.DataInfo] = None
                   ) -> List[str]:
  names = metadata.get("class_names")
  if names and len(names) == num_classes:
    return list(names)
  return input_pipeline.class_names_list(info, num_classes)

"""Fine-tuning's rules that need no network: the settings a run started from
another model directory takes, checked before TensorFlow starts.

Why apart from ``finetune``: the trainer's command line is checked without
TensorFlow (``cli/train_config``, ``describe``), and these rules (the
choices of ``--freeze``, which architecture and regularisers a run takes
from its source, whether the classifier is new) only read settings and
``model_config.json`` sections. ``finetune`` applies them to networks.
"""

from typing import Dict, List, Optional, Tuple

from pyramidnet_tf.training import config as config_lib

FREEZE_CHOICES = ("none", "stem", "stages:N", "backbone")
# Architecture settings (what decides the variables and their shapes).
ARCHITECTURE_FIELDS = ("dataset", "depth", "alpha", "bottleneck", "mode",
                       "rounding")
# The network's regularisers: no variables, so any value fits the weights,
# but they are part of the model (evaluation applies ShakeDrop's p_l).
REGULARISER_FIELDS = ("drop_rate", "shakedrop", "shakedrop_pl",
                      "shakedrop_level")
# Their values in model configs written before they existed: the defaults.
REGULARISER_DEFAULTS = {name: getattr(config_lib.ModelConfig(), name)
                        for name in REGULARISER_FIELDS}
CIFAR_FAMILY = ("cifar10", "cifar100")


class FinetuneError(ValueError):
  """A fine-tuning setting or source that cannot be used; one line."""


def parse_freeze(value: str) -> Tuple[str, int]:
  """``--freeze`` as (kind, stages).

  Args:
    value: ``none``, ``stem``, ``stages:N`` (N >= 1) or ``backbone``.

  Returns:
    (``"none"|"stem"|"stages"|"backbone"``, N for stages else 0).

  Raises:
    FinetuneError: any other value, naming the choices.
  """
  text = (value or "").strip()
  if text in ("none", "stem", "backbone"):
    return text, 0
  if text.startswith("stages:"):
    count = text[len("stages:"):]
    if count.isdigit() and int(count) >= 1:
      return "stages", int(count)
  raise FinetuneError(f"--freeze must be one of {', '.join(FREEZE_CHOICES)} "
                      f"(N >= 1); got {value!r}")


def num_stages(dataset: str) -> int:
  """Stages of the network family: 4 for ImageNet, 3 for CIFAR."""
  return 4 if dataset == "imagenet" else 3


def check_freeze_fits(freeze: str, dataset: str) -> None:
  """Raises FinetuneError if ``stages:N`` exceeds the network's stages.

  Args:
    freeze: the ``--freeze`` value.
    dataset: the architecture family.
  """
  kind, count = parse_freeze(freeze)
  if kind == "stages" and count > num_stages(dataset):
    raise FinetuneError(
        f"--freeze=stages:{count}: a {dataset} PyramidNet has "
        f"{num_stages(dataset)} stages; use stages:1..{num_stages(dataset)}, "
        "or backbone to train only the classifier")


def resolve_architecture(source_dir: str, source_model: Dict,
                         given: Dict) -> Dict:
  """The architecture settings of a run started from ``source_dir``.

  Args:
    source_dir: the ``--init_from`` directory (for messages).
    source_model: the "model" section of its ``model_config.json``.
    given: the architecture flags set on the command line (name -> value);
      those absent are taken from the source.

  Returns:
    name -> value for every name of ``ARCHITECTURE_FIELDS``.

  Raises:
    FinetuneError: a given flag disagrees with the source, naming both.
  """
  resolved = {name: source_model[name] for name in ARCHITECTURE_FIELDS}
  diffs = []
  for name, value in given.items():
    saved = source_model[name]
    if name == "dataset" and value in CIFAR_FAMILY and saved in CIFAR_FAMILY:
      resolved[name] = value   # one network; only the default class count
      continue
    if name == "alpha":
      same = float(value) == float(saved)
    else:
      same = value == saved
    if not same:
      diffs.append(f"--{name}={value} but {source_dir} holds {name} {saved!r}")
    resolved[name] = value
  if diffs:
    raise FinetuneError(
        "--init_from: the model flags differ from the source's "
        f"model_config.json ({'; '.join(diffs)}); drop these flags to take "
        "the source's architecture")
  return resolved


def resolve_regularisers(source_model: Dict, given: Dict) -> Dict:
  """The dropout and ShakeDrop settings of a run started from a source.

  Args:
    source_model: the "model" section of the source's ``model_config.json``
      (configs without a field get its default, ``REGULARISER_DEFAULTS``).
    given: the regulariser flags set on the command line (name -> value):
      the fine-tune's own choice, kept as given.

  Returns:
    name -> value for every name of ``REGULARISER_FIELDS``.
  """
  resolved = {name: source_model.get(name, REGULARISER_DEFAULTS[name])
              for name in REGULARISER_FIELDS}
  resolved.update({name: value for name, value in given.items()
                   if name in REGULARISER_FIELDS})
  return resolved


def regularisers_text(values: Dict, source_model: Optional[Dict] = None
                      ) -> str:
  """``dropout 0.5, ShakeDrop p_L 0.5 (batch)`` for log lines; with
  ``source_model``, each value that differs from the source's says so.

  Args:
    values: name -> value for the names of ``REGULARISER_FIELDS``.
    source_model: the source's "model" section, or None.
  """
  def differs(*names):
    return source_model is not None and any(
        values[n] != source_model.get(n, REGULARISER_DEFAULTS[n])
        for n in names)
  def source(name):
    return source_model.get(name, REGULARISER_DEFAULTS[name])
  def source_model_shakedrop(model):
    return values["shakedrop"] if model is None else source("shakedrop")
  dropout = f"dropout {values['drop_rate']:g}"
  if differs("drop_rate"):
    dropout += f" (the source: {source('drop_rate'):g})"
  if values["shakedrop"]:
    shakedrop = (f"ShakeDrop p_L {values['shakedrop_pl']:g} "
                 f"({values['shakedrop_level']})")
  else:
    shakedrop = "no ShakeDrop"
  if values["shakedrop"] != source_model_shakedrop(source_model) or (
      values["shakedrop"] and differs("shakedrop_pl", "shakedrop_level")):
    shakedrop += " (the source: " + (
        f"ShakeDrop p_L {source('shakedrop_pl'):g} "
        f"({source('shakedrop_level')})" if source("shakedrop")
        else "no ShakeDrop") + ")"
  return f"{dropout}, {shakedrop}"


def needs_new_head(source_classes: int, source_names: Optional[List[str]],
                   classes: int, names: Optional[List[str]]) -> bool:
  """Whether the classifier must be replaced.

  Args:
    source_classes: the source's ``num_classes``.
    source_names: the class names the source recorded, or None.
    classes: the run's class count.
    names: the run's class names (from its manifest), or None.
  """
  if source_classes != classes:
    return True
  return bool(source_names and names and list(source_names) != list(names))

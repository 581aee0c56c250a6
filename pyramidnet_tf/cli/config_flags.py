"""Flags and the typed config, tied together in one place.

Why: every flag that configures a run is a field of a section of
``training.config`` (``--lr`` is ``ScheduleConfig.lr``). The flag modules
take each such flag's default from its field (``default``), so a default is
written once, and the tools turn parsed flags back into sections
(``section``) instead of reading flags below ``pyramidnet_tf/cli/``. A
tool's own settings are fields of its config dataclass
(``export_config.ExportConfig.top_k``), and their flags take their defaults
from there too (``field_default``). No TensorFlow import: flags are defined
and checked before it loads.
"""

import dataclasses
from typing import Any, Dict, FrozenSet, Iterable, List, Type, TypeVar

from pyramidnet_tf.training import config as config_lib

# Settings whose flag is a comma-separated list (parsed by
# ``train_config``), and for those that can be off, the setting that an
# empty list means.
LIST_SETTINGS = ("lr_decay_epochs", "profile_steps", "randaugment")
LIST_OFF = {"profile_steps": (0, 0), "randaugment": None}

_FIELDS: Dict[str, dataclasses.Field] = {
    f.name: f for _, section in config_lib.SECTIONS
    for f in dataclasses.fields(section)}

Section = TypeVar("Section")


def default(name: str) -> Any:
  """The default of flag ``--name``: its setting's dataclass default, in the
  flag's form (a list setting as a list of strings, empty when off).

  Args:
    name: a setting of ``config_lib.field_names()``.

  Raises:
    KeyError: ``name`` is not a setting.
  """
  value = _FIELDS[name].default
  if name in LIST_SETTINGS:
    if name in LIST_OFF and value == LIST_OFF[name]:
      return []
    return [str(v) for v in value]
  return value


def field_default(config_class: Type, name: str) -> Any:
  """The default of field ``name`` of a tool's own config dataclass (e.g.
  ``ExportConfig.top_k``), for the flag of that field: as with
  ``default``, the value is written once, in the dataclass.

  Args:
    config_class: a dataclass.
    name: one of its fields, which has a default.

  Raises:
    KeyError: ``config_class`` has no field ``name`` with a default.
  """
  for f in dataclasses.fields(config_class):
    if f.name == name and f.default is not dataclasses.MISSING:
      return f.default
  raise KeyError(f"{config_class.__name__} has no field {name!r} with a "
                 "default")


def given(names: Iterable[str], flag_values) -> FrozenSet[str]:
  """The flags of ``names`` set on the command line (or in a flagfile).

  Args:
    names: flag names the program defines.
    flag_values: parsed absl flag values.
  """
  return frozenset(name for name in names if flag_values[name].present)


def section(section_class: Type[Section], flag_values,
            **values: Any) -> Section:
  """A config section from the flags the program defines.

  Fields without a flag in ``flag_values`` keep their defaults; list
  settings are never read here (``train_config`` parses them).

  Args:
    section_class: one of the classes of ``config_lib.SECTIONS``.
    flag_values: parsed absl flag values.
    **values: settings that replace the flags' values.
  """
  read: Dict[str, Any] = {}
  for f in dataclasses.fields(section_class):
    if f.name in values:
      read[f.name] = values[f.name]
    elif f.name in flag_values and f.name not in LIST_SETTINGS:
      read[f.name] = flag_values[f.name].value
  return section_class(**read)


def model_flag_names() -> List[str]:
  """The model flags (``ModelConfig``'s fields), in their order."""
  return [f.name for f in dataclasses.fields(config_lib.ModelConfig)]

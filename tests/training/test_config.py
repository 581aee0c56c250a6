"""TrainConfig: every trainer flag is a setting, its flag default is the
setting's default, round trips."""

import dataclasses

from absl import flags
import pytest

from pyramidnet_tf import train  # pylint: disable=unused-import  (defines the trainer's flags) # noqa: F401
from pyramidnet_tf.cli import train_config
from pyramidnet_tf.training import config as config_lib

FLAGS = flags.FLAGS

# Modules whose flags configure a training run.
_TRAINER_FLAG_MODULES = (
    "pyramidnet_tf.cli.train_flags", "pyramidnet_tf.cli.common_flags",
    "pyramidnet_tf.cli.model_flags", "pyramidnet_tf.cli.compile_cache_flags")


def _trainer_flag_names():
  names = set()
  for module in _TRAINER_FLAG_MODULES:
    names.update(f.name for f in FLAGS.get_flags_for_module(module))
  return names


def test_every_trainer_flag_is_a_setting_and_every_setting_a_flag():
  names = _trainer_flag_names()
  assert len(names) > 60   # the modules really define the trainer's flags
  assert set(config_lib.field_names()) == names
  assert len(config_lib.field_names()) == len(names)   # no name twice


def _parsed_default(name):
  default = FLAGS[name].default
  if name in ("lr_decay_epochs",):
    return tuple(int(v) for v in default)
  if name == "profile_steps":
    return tuple(int(v) for v in default) or (0, 0)
  if name == "randaugment":
    return None if not default else tuple(int(v) for v in default)
  return default


def test_parsed_flag_defaults_are_the_dataclass_defaults():
  """The flags take their defaults from the fields (cli/config_flags);
  parsed back, the flag forms (lists of strings, empty = off) give the
  fields' values."""
  defaults = config_lib.TrainConfig().flat()
  for name in config_lib.field_names():
    expected = _parsed_default(name)
    expected = list(expected) if isinstance(expected, tuple) else expected
    assert defaults[name] == expected, name


def test_from_flags_parses_lists_and_keeps_every_value():
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(["train", "--model_dir=/nonexistent/m", "--data_dir=/nonexistent/d",
           "--lr=0.25", "--lr_decay_epochs=3,7", "--profile_steps=2,4",
           "--randaugment=2,9", "--depth=20", "--nobottleneck",
           "--jit_scope=unit", "--keep_checkpoints=2"])
    config = train_config.from_flags(check_model_dir=False)
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])
  assert config.schedule.lr == 0.25
  assert config.schedule.lr_decay_epochs == (3, 7)
  assert config.output.profile_steps == (2, 4)
  assert config.data.randaugment == (2, 9)
  assert config.model.depth == 20 and config.model.bottleneck is False
  assert config.runtime.jit_scope == "unit" and not config.jit_units
  assert config.output.keep_checkpoints == 2
  assert config.output.model_dir == "/nonexistent/m"
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.schedule.lr = 1.0  # pylint: disable=assigning-non-slot


def test_a_bad_value_is_one_error_naming_the_flag():
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(["train", "--model_dir=/nonexistent/m", "--data_dir=/nonexistent/d",
           "--lr_decay_epochs=3,x"])
    with pytest.raises(train_config.ConfigError, match="--lr_decay_epochs"):
      train_config.from_flags(check_model_dir=False)
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])


def test_write_and_read_round_trip(tmp_path):
  config = config_lib.TrainConfig.from_values(
      {"depth": 164, "lr_decay_epochs": (1, 2), "model_dir": str(tmp_path),
       "randaugment": (2, 9), "profile_steps": (3, 5)})
  path = config_lib.write(str(tmp_path), config)
  assert path.endswith(config_lib.CONFIG_FILE)
  assert config_lib.read(str(tmp_path)) == config
  assert config.to_json()["model"]["depth"] == 164
  assert config.flat()["lr_decay_epochs"] == [1, 2]


def test_unknown_settings_are_refused():
  with pytest.raises(KeyError, match="not training settings: bogus"):
    config_lib.TrainConfig.from_values({"bogus": 1})


def test_derived_settings():
  synthetic = config_lib.TrainConfig.from_values(
      {"dataset": "synthetic", "synthetic_like": "imagenet", "batch_size": 64,
       "jit_compile": True})
  assert synthetic.synthetic and synthetic.model_dataset == "imagenet"
  assert synthetic.eval_batch == 64 and synthetic.jit_step
  assert not synthetic.jit_units

"""One source for every setting: flag defaults, the model's field list and
the tools' configs all come from the dataclasses of training.config."""

import ast
import dataclasses
import importlib.util
import os

from absl import flags

from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.cli import train_flags  # pylint: disable=unused-import  (defines the trainer's flags) # noqa: F401
from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import finetune_rules

FLAGS = flags.FLAGS
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _code_metrics():
  spec = importlib.util.spec_from_file_location(
      "code_metrics", os.path.join(REPO, "scripts", "code_metrics.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_flag_form_of_the_dataclass_defaults():
  assert config_flags.default("lr") == config_lib.ScheduleConfig().lr
  assert config_flags.default("lr_decay_epochs") == ["150", "225"]
  assert config_flags.default("profile_steps") == []     # (0, 0): off
  assert config_flags.default("randaugment") == []       # None: off
  assert config_flags.default("bottleneck") is None
  assert FLAGS["lr_decay_epochs"].default == ["150", "225"]
  assert FLAGS["k8s_port"].default == config_lib.RuntimeConfig().k8s_port


def test_no_setting_default_is_written_in_the_flag_modules():
  """Every flag of a setting takes its default from the dataclass field
  (the check of scripts/code_metrics.py, which also finds literals)."""
  metrics = _code_metrics()
  settings = metrics.config_settings()
  assert set(config_lib.field_names()) == settings
  literal = ast.parse('flags.DEFINE_float("lr", 0.1, "x")').body[0].value
  derived = ast.parse('flags.DEFINE_float("lr", _default("lr"), "x")'
                      ).body[0].value
  other = ast.parse('flags.DEFINE_integer("top_k", 5, "x")').body[0].value
  assert metrics.duplicated_default(literal, settings) == "lr"
  assert metrics.duplicated_default(derived, settings) is None
  assert metrics.duplicated_default(other, settings) is None
  by_file = metrics.measure()["duplicated_defaults_by_file"]
  assert not [path for path in by_file
              if path.startswith(os.path.join("pyramidnet_tf", "cli"))]


def test_the_model_field_list_is_the_model_config():
  fields = [f.name for f in dataclasses.fields(config_lib.ModelConfig)]
  assert list(model_flags.MODEL_FLAG_NAMES) == fields
  assert set(model_flags.model_kwargs()) == set(fields)
  parts = (finetune_rules.ARCHITECTURE_FIELDS +
           finetune_rules.REGULARISER_FIELDS + ("num_classes",))
  assert sorted(parts) == sorted(fields)
  defaults = config_lib.ModelConfig()
  assert finetune_rules.REGULARISER_DEFAULTS == {
      name: getattr(defaults, name)
      for name in finetune_rules.REGULARISER_FIELDS}


def test_a_section_reads_the_flags_the_program_defines():
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(["describe", "--depth=20", "--dtype=bfloat16",
           "--lr_decay_epochs=3"])
    model = config_flags.section(config_lib.ModelConfig, FLAGS)
    runtime = config_flags.section(config_lib.RuntimeConfig, FLAGS,
                                   seed=7)
    schedule = config_flags.section(config_lib.ScheduleConfig, FLAGS)
    given = config_flags.given(config_lib.field_names(), FLAGS)
  finally:
    FLAGS.unparse_flags()
    FLAGS(["describe", *[l for l in saved.splitlines() if l]])
  assert model == config_lib.ModelConfig(depth=20)
  assert runtime == config_lib.RuntimeConfig(dtype="bfloat16", seed=7)
  # List settings are parsed by train_config only, never half-read here.
  assert schedule.lr_decay_epochs == config_lib.ScheduleConfig().lr_decay_epochs
  assert given == {"depth", "dtype", "lr_decay_epochs"}

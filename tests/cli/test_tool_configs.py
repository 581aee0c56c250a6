"""export, export_torch, import_torch and predict read their command line in
one builder each (``cli/<tool>_config.from_flags``): the flags become the
fields of a frozen config, a flag left out takes the config's default, and
a bad value is a ``FlagError`` naming the flag.

Each test parses a command line into fresh ``FlagValues`` holding only the
tool's flags (the tools define flags of the same names, with other help
texts, so they cannot share the program's ``FLAGS``).
"""

import copy
import dataclasses
import json

from absl import flags
import pytest

from pyramidnet_tf.cli import errors
from pyramidnet_tf.cli import export_config
from pyramidnet_tf.cli import export_torch_config
from pyramidnet_tf.cli import import_torch_config
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.cli import predict_config
from pyramidnet_tf.training import config as config_lib


def _parsed(define_flags, argv, with_model_flags=False):
  """Fresh flag values holding the tool's flags, parsed from ``argv``.

  Args:
    define_flags: the tool's ``define_flags``.
    argv: the command line after the program name.
    with_model_flags: also hold the model flags (``model_flags`` defines
      them once, in the program's ``FLAGS``: copies with their defaults).
  """
  values = flags.FlagValues()
  define_flags(values)
  if with_model_flags:
    for name in model_flags.MODEL_FLAG_NAMES:
      flag = copy.deepcopy(flags.FLAGS[name])
      flag.unparse()
      values[name] = flag
  values(["prog"] + list(argv))
  return values


def _model_dir(tmp_path):
  """A directory the pre-TensorFlow checks accept as a model directory."""
  model_dir = tmp_path / "model"
  model_dir.mkdir()
  (model_dir / "model_config.json").write_text(json.dumps({"model": {}}))
  (model_dir / "ckpt-3.index").write_bytes(b"")
  return str(model_dir)


def _refused(build, flag):
  with pytest.raises(errors.FlagError) as raised:
    build()
  assert f"--{flag}" in str(raised.value)
  return str(raised.value)


# export


def test_export_flags_become_the_config(tmp_path):
  model_dir, export_dir = _model_dir(tmp_path), str(tmp_path / "export")
  data_dir = tmp_path / "data"
  data_dir.mkdir()
  (data_dir / "manifest.json").write_text("{}")
  config = export_config.from_flags(_parsed(export_config.define_flags, [
      f"--model_dir={model_dir}", f"--export_dir={export_dir}",
      f"--data_dir={data_dir}", f"--checkpoint={model_dir}/ckpt-3",
      "--image_size=64",
      "--cifar_convention=fb", "--top_k=3", "--use_ema=no"]))
  assert config == export_config.ExportConfig(
      model_dir=model_dir, export_dir=export_dir,
      data=config_lib.DataConfig(data_dir=str(data_dir), image_size=64,
                                 cifar_convention="fb"),
      checkpoint=f"{model_dir}/ckpt-3", top_k=3, use_ema="no")


def test_export_defaults_are_the_config_defaults(tmp_path):
  model_dir, export_dir = _model_dir(tmp_path), str(tmp_path / "export")
  config = export_config.from_flags(_parsed(export_config.define_flags, [
      f"--model_dir={model_dir}", f"--export_dir={export_dir}"]))
  assert config == export_config.ExportConfig(
      model_dir=model_dir, export_dir=export_dir,
      data=config_lib.DataConfig())
  assert (config.top_k, config.use_ema, config.checkpoint) == (5, "auto",
                                                               None)
  assert (config.data.data_dir, config.data.image_size,
          config.data.cifar_convention) == (None, 0, "pt")


def test_export_bad_values_are_flag_errors_naming_the_flag(tmp_path):
  model_dir, export_dir = _model_dir(tmp_path), str(tmp_path / "export")

  def build(*argv):
    return lambda: export_config.from_flags(
        _parsed(export_config.define_flags, argv))

  text = _refused(build(f"--model_dir={model_dir}",
                        f"--export_dir={export_dir}", "--top_k=0"), "top_k")
  assert "got 0" in text
  _refused(build(f"--model_dir={model_dir}", f"--export_dir={export_dir}",
                 "--image_size=-1"), "image_size")
  _refused(build(f"--model_dir={model_dir}"), "export_dir")
  _refused(build(f"--model_dir={tmp_path / 'absent'}",
                 f"--export_dir={export_dir}"), "model_dir")
  _refused(build(f"--model_dir={model_dir}", f"--export_dir={export_dir}",
                 f"--data_dir={tmp_path / 'no_data'}"), "data_dir")
  _refused(build(f"--model_dir={model_dir}", f"--export_dir={export_dir}",
                 "--checkpoint=best"), "checkpoint")


# export_torch


def test_export_torch_flags_become_the_config(tmp_path):
  model_dir, output = _model_dir(tmp_path), str(tmp_path / "model.pth")
  config = export_torch_config.from_flags(_parsed(
      export_torch_config.define_flags, [
          f"--model_dir={model_dir}", f"--output={output}",
          f"--checkpoint={model_dir}/ckpt-3", "--use_ema=yes",
          "--overwrite"]))
  assert config == export_torch_config.ExportTorchConfig(
      model_dir=model_dir, output=output, checkpoint=f"{model_dir}/ckpt-3",
      use_ema="yes", overwrite=True)
  defaults = export_torch_config.from_flags(_parsed(
      export_torch_config.define_flags,
      [f"--model_dir={model_dir}", f"--output={output}"]))
  assert defaults == export_torch_config.ExportTorchConfig(
      model_dir=model_dir, output=output)
  assert (defaults.checkpoint, defaults.use_ema, defaults.overwrite) == (
      None, "auto", False)


def test_export_torch_bad_values_are_flag_errors_naming_the_flag(tmp_path):
  model_dir, output = _model_dir(tmp_path), tmp_path / "model.pth"

  def build(*argv):
    return lambda: export_torch_config.from_flags(
        _parsed(export_torch_config.define_flags, argv))

  assert _refused(build(f"--model_dir={model_dir}"), "output") == (
      "--output required")
  _refused(build(f"--model_dir={tmp_path / 'absent'}", f"--output={output}"),
           "model_dir")
  _refused(build(f"--model_dir={model_dir}", f"--output={output}",
                 "--checkpoint=best"), "checkpoint")
  output.write_bytes(b"an earlier export")
  assert "--overwrite" in _refused(
      build(f"--model_dir={model_dir}", f"--output={output}"), "output")
  _refused(build(f"--model_dir={model_dir}",
                 f"--output={tmp_path / 'no_dir' / 'model.pth'}"), "output")


# import_torch


def test_import_torch_flags_become_the_config(tmp_path):
  checkpoint, output_dir = str(tmp_path / "w.npz"), str(tmp_path / "out")
  config = import_torch_config.from_flags(_parsed(
      import_torch_config.define_flags, [
          f"--checkpoint={checkpoint}", f"--output_dir={output_dir}",
          "--format=npz", "--overwrite", "--trust_checkpoint", "--depth=8",
          "--alpha=4"], with_model_flags=True))
  assert (config.checkpoint, config.output_dir, config.format,
          config.overwrite, config.trust_checkpoint) == (
              checkpoint, output_dir, "npz", True, True)
  assert config.model == dataclasses.replace(config_lib.ModelConfig(),
                                             depth=8, alpha=4.0)
  assert config.given == {"depth", "alpha"}
  # Only the given model flags reach the import; the file supplies the rest.
  assert config.model_overrides == {"depth": 8, "alpha": 4.0}


def test_import_torch_defaults_are_the_config_defaults(tmp_path):
  config = import_torch_config.from_flags(_parsed(
      import_torch_config.define_flags, [
          f"--checkpoint={tmp_path / 'w.pth'}",
          f"--output_dir={tmp_path / 'out'}"], with_model_flags=True))
  assert (config.format, config.overwrite, config.trust_checkpoint) == (
      "auto", False, False)
  assert config.given == frozenset() and config.model_overrides == {}


def test_import_torch_bad_values_are_flag_errors_naming_the_flag(tmp_path):
  def build(*argv):
    return lambda: import_torch_config.from_flags(_parsed(
        import_torch_config.define_flags, argv, with_model_flags=True))

  checkpoint = f"--checkpoint={tmp_path / 'w.pth'}"
  output_dir = f"--output_dir={tmp_path / 'out'}"
  assert _refused(build(checkpoint), "output_dir") == (
      "--output_dir is required")
  _refused(build(output_dir), "checkpoint")
  with pytest.raises(errors.FlagError,
                     match="^invalid model flags: depth must be 6n"):
    build(checkpoint, output_dir, "--dataset=cifar10", "--depth=7",
          "--alpha=4")()
  # Without all three of --dataset, --depth and --alpha the file decides
  # the architecture, so a lone depth is checked against it later.
  assert import_torch_config.from_flags(_parsed(
      import_torch_config.define_flags, [checkpoint, output_dir, "--depth=7"],
      with_model_flags=True)).model_overrides == {"depth": 7}


# predict


def _export_dir(tmp_path):
  export_dir = tmp_path / "export"
  export_dir.mkdir()
  (export_dir / "saved_model.pb").write_bytes(b"")
  return str(export_dir)


def test_predict_flags_and_files_become_the_config(tmp_path):
  saved_model = _export_dir(tmp_path)
  image = tmp_path / "a.png"
  image.write_bytes(b"not checked here")
  missing = str(tmp_path / "b.png")
  config = predict_config.from_flags(
      [str(image), missing],
      _parsed(predict_config.define_flags,
              [f"--saved_model={saved_model}", "--json"]))
  # A missing file among existing ones is the run's to report (after the
  # others are classified).
  assert config == predict_config.PredictConfig(
      saved_model=saved_model, paths=(str(image), missing), json=True)
  defaults = predict_config.from_flags(
      [str(image)], _parsed(predict_config.define_flags,
                            [f"--saved_model={saved_model}"]))
  assert defaults.json is False


def test_predict_bad_values_are_flag_errors_naming_the_flag(tmp_path):
  saved_model = _export_dir(tmp_path)
  image = tmp_path / "a.png"
  image.write_bytes(b"")

  def build(paths, *argv):
    return lambda: predict_config.from_flags(
        paths, _parsed(predict_config.define_flags, argv))

  _refused(build([str(image)]), "saved_model")
  _refused(build([str(image)], f"--saved_model={tmp_path / 'absent'}"),
           "saved_model")
  with pytest.raises(errors.FlagError, match="image files"):
    build([], f"--saved_model={saved_model}")()
  with pytest.raises(errors.FlagError, match="b.png: does not exist"):
    build([str(tmp_path / "b.png")], f"--saved_model={saved_model}")()


def test_the_tools_own_flag_defaults_are_their_configs_defaults():
  """A default is written once: in the config's field."""
  cases = [(export_config.define_flags, export_config.ExportConfig,
            ("checkpoint", "top_k", "use_ema")),
           (export_torch_config.define_flags,
            export_torch_config.ExportTorchConfig,
            ("checkpoint", "use_ema", "overwrite")),
           (import_torch_config.define_flags,
            import_torch_config.ImportTorchConfig,
            ("format", "overwrite", "trust_checkpoint")),
           (predict_config.define_flags, predict_config.PredictConfig,
            ("json",))]
  for define_flags, config_class, names in cases:
    values = flags.FlagValues()
    define_flags(values)
    defaults = {f.name: f.default for f in dataclasses.fields(config_class)}
    for name in names:
      assert values[name].default == defaults[name], (config_class, name)

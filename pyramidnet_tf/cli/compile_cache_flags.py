"""--compile_cache_dir, applied while flags are parsed.

Why at parse time: TensorFlow reads TF_XLA_FLAGS once, when it first lists
its devices, and importing TensorFlow registers an absl after-init callback
that does so before ``main`` runs (see ``runtime.compile_cache``). A CLI
that offers the cache passes ``parse_flags_and_configure`` to ``app.run``.
"""

from typing import Optional

from absl import app
from absl import flags
from absl import logging

from pyramidnet_tf.cli import config_flags
from pyramidnet_tf.runtime import compile_cache

# Each default is its setting's dataclass default (training.config).
_default = config_flags.default

flags.DEFINE_string(
    "compile_cache_dir", _default("compile_cache_dir"),
    "Persistent XLA compilation + GPU autotune cache directory (a restart "
    "with the same config skips XLA compilation). Default: "
    "<model_dir>/xla_cache when --jit_compile, else off; '' or 'none' "
    "disables it. Values already in TF_XLA_FLAGS / XLA_FLAGS win.")


def configure_from_flags(flag_values=flags.FLAGS) -> Optional[dict]:
  """``compile_cache.configure`` from --compile_cache_dir.

  Args:
    flag_values: parsed flags; --model_dir and --jit_compile are used where
      the program defines them (the default cache lives in the model dir and
      is on only with XLA).

  Returns:
    ``compile_cache.configure``'s result, or None when the cache is off.
  """
  def value(name, default=None):
    return flag_values[name].value if name in flag_values else default
  cache_dir = compile_cache.resolve_cache_dir(
      value("compile_cache_dir"), value("model_dir"),
      bool(value("jit_compile", False)))
  return compile_cache.configure(cache_dir)


def configure_after_parse() -> None:
  """Sets up the caches from the parsed flags (``console.run``'s
  ``after_parse``): before the after-init callbacks through which
  TensorFlow lists its devices (and so reads TF_XLA_FLAGS)."""
  result = configure_from_flags()
  if result is not None:
    # absl drops INFO lines logged while it parses flags: say it again once
    # main's logging is set up.
    app.call_after_init(lambda: logging.info(
        "compile cache: TF_XLA_FLAGS=%r XLA_FLAGS=%r", result["TF_XLA_FLAGS"],
        result["XLA_FLAGS"]))


def parse_flags_and_configure(argv):
  """absl flags parser that also configures the caches; returns the args.

  Use as ``app.run(main, flags_parser=parse_flags_and_configure)``: absl
  calls it before the after-init callbacks through which TensorFlow lists
  its devices (and so reads TF_XLA_FLAGS).

  Args:
    argv: the program's command line.
  """
  args = app.parse_flags_with_usage(argv)
  configure_after_parse()
  return args

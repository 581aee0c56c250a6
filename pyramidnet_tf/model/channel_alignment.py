"""Zero-padding PyramidNet's channel counts up to an aligned multiple.

Why: PyramidNet widens every unit by alpha / N channels, so nearly every
tensor has an odd channel count (c110 a=48: 16, 17, 18, ... 64). oneDNN, the
CPU backend of TF's convolutions and fused batch norm, has fast kernels only
for channel counts that fill its vector blocks; for the others its batch norm
backward is several times slower. Carrying every tensor at
``align(channels, multiple)`` channels, the extra channels all zero, makes
the CPU train step markedly faster: multiple 8 in float32, 16 in bfloat16
(AMX works on 16-channel blocks). ``bench/train_bench.py
--channel_multiples=1,8,16`` measures it; README's speed section has the
figures.

The padding never changes what the network computes on its real channels
(``layers`` keeps every padded channel exactly zero, forward and backward),
its variables (they keep their logical shapes) or its checkpoints. It is a
runtime choice, like the compute dtype: ``model.set_channel_multiple(m)``.

GPU: off by default (multiple 1). cuDNN's tensor cores also want multiples of
8, so 8 may pay there too (``--channel_multiple=8`` tries it;
``bench/gpu_suite.py`` measures it).
"""

AUTO = 0


def align(channels: int, multiple: int) -> int:
  """``channels`` rounded up to a multiple of ``multiple``.

  Args:
    channels: a logical channel count (>= 0).
    multiple: the alignment, >= 1 (1 returns ``channels``).

  Raises:
    ValueError: if ``multiple < 1``.
  """
  if multiple < 1:
    raise ValueError(f"channel multiple must be >= 1; got {multiple}")
  return -(-channels // multiple) * multiple


def auto_multiple(dtype: str, device_type: str) -> int:
  """The measured best multiple for a compute dtype on "CPU" or "GPU".

  Args:
    dtype: the compute dtype's name: "float32", or "bfloat16" / "float16".
    device_type: "CPU" or "GPU" (any case); anything but CPU gets 1.

  Returns:
    8 for float32 and 16 for other dtypes on CPU; 1 (no padding) elsewhere.
  """
  if device_type.upper() != "CPU":
    return 1
  return 8 if dtype == "float32" else 16


def local_device_type() -> str:
  """"GPU" when this process sees a GPU (the strategy's devices), else "CPU"."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def resolve(flag_value: int, dtype: str, device_type: str) -> int:
  """--channel_multiple: 0 = ``auto_multiple``, else the value (>= 1).

  Args:
    flag_value: the flag's value: ``AUTO`` (0) or a multiple >= 1.
    dtype: the compute dtype's name, for ``auto_multiple``.
    device_type: "CPU" or "GPU", for ``auto_multiple``.

  Raises:
    ValueError: if ``flag_value`` is negative.
  """
  if flag_value == AUTO:
    return auto_multiple(dtype, device_type)
  if flag_value < 1:
    raise ValueError(f"--channel_multiple must be 0 (auto) or a positive "
                     f"integer; got {flag_value}")
  return flag_value

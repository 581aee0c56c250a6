"""Zero-padding PyramidNet's channel counts up to an aligned multiple.

Why: PyramidNet widens every unit by alpha / N channels, so nearly every
tensor has an odd channel count (c110 a=48: 16, 17, 18, ... 64). oneDNN, the
CPU backend of TF's convolutions and fused batch norm, has fast kernels only
for channel counts that fill its vector blocks; for the others its batch norm
backward is about 7x slower (C=25 vs C=24: 15.9 vs 2.1 ms at 128x32x32). With
every tensor carried at ``align(channels, multiple)`` channels, the extra
channels all zero, a PyramidNet-110 train step (batch 128) on 2 CPU cores
went from 46 to 74 img/s in float32 (multiple 8) and from 30 to 145 img/s in
bfloat16 (multiple 16; AMX wants 16-channel blocks): bench/train_bench.py.

The padding never changes what the network computes on its real channels
(``layers`` keeps every padded channel exactly zero, forward and backward),
its variables (they keep their logical shapes) or its checkpoints. It is a
runtime choice, like the compute dtype: ``model.set_channel_multiple(m)``.

GPU: off by default (multiple 1). cuDNN's tensor cores also want multiples of
8, so 8 may pay there too, but that is unmeasured (``--channel_multiple=8``
tries it).
"""

AUTO = 0


def align(channels: int, multiple: int) -> int:
  """``channels`` rounded up to a multiple of ``multiple``."""
  if multiple < 1:
    raise ValueError(f"channel multiple must be >= 1; got {multiple}")
  return -(-channels // multiple) * multiple


def auto_multiple(dtype: str, device_type: str) -> int:
  """The measured best multiple for a compute dtype on "CPU" or "GPU"."""
  if device_type.upper() != "CPU":
    return 1
  return 8 if dtype == "float32" else 16


def local_device_type() -> str:
  """"GPU" when this process sees a GPU (the strategy's devices), else "CPU"."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def resolve(flag_value: int, dtype: str, device_type: str) -> int:
  """--channel_multiple: 0 = ``auto_multiple``, else the value (>= 1)."""
  if flag_value == AUTO:
    return auto_multiple(dtype, device_type)
  if flag_value < 1:
    raise ValueError(f"--channel_multiple must be 0 (auto) or a positive "
                     f"integer; got {flag_value}")
  return flag_value

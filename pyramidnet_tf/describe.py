r"""Prints a PyramidNet's widths, parameters, output dimension and FLOPs.

    python -m pyramidnet_tf.describe --dataset=cifar100 --depth=164 \
        --alpha=48 --bottleneck
    python -m pyramidnet_tf.describe --flagfile=flags/cifar10/pyramidnet164_a48_bottleneck.flags

Takes the same model flags as the trainer and accepts the trainer's
flagfiles (the trainer's other flags are defined and ignored here). Works from
shapes only (no variables are created), so it is instant for any size.
"""

import json
from typing import Optional

from absl import flags

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.cli import usage
from pyramidnet_tf.model import complexity
from pyramidnet_tf.model import memory
from pyramidnet_tf.model import paper_rows
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.cli import train_flags
from pyramidnet_tf.model import widths as widths_lib

# --image_size (input resolution for FLOPs and feature-map sizes; 0 = 32 for
# CIFAR, 224 for ImageNet) is the trainer's flag, from common_flags.
flags.DEFINE_bool("json", False, "Print one JSON object instead of a table.")
flags.DEFINE_integer("replicas", 1,
                     "Replicas the trainer's global --batch_size is split "
                     "over, for the memory per replica (>= 1).")
flags.DEFINE_enum("device", "gpu", ["gpu", "cpu"],
                  "Device the memory is estimated for: its --channel_multiple "
                  "default (auto = 1 on GPU; 8 for float32 and 16 for "
                  "bfloat16/float16 on CPU) sets the padded widths.")
flags.DEFINE_bool("show_widths", True,
                  "List every unit's planes under the table.")

FLAGS = flags.FLAGS
PROG = "pyramidnet_tf.describe"


def _format_planes(planes):
  return ",".join(str(p) for p in planes)


def describe(arch: widths_lib.Architecture, num_classes: int,
             image_size: int, show_widths: bool = True) -> str:
  """The human-readable report.

  Args:
    arch: the network's shape (``widths.architecture``).
    num_classes: classifier outputs.
    image_size: input side in pixels, for feature-map sizes and MACs.
    show_widths: append every unit's planes, stage by stage.

  Returns:
    The report as one string (a header, the per-part table, totals).
  """
  parts = complexity.report(arch, num_classes, image_size)
  total = complexity.total_params(parts)
  macs = complexity.total_macs(parts)
  kind = "bottleneck" if arch.bottleneck else "basic"
  lines = [
      f"PyramidNet-{arch.depth} ({arch.mode} alpha={arch.alpha:g}, {kind} "
      f"units, {arch.dataset}, {num_classes} classes, {image_size}x"
      f"{image_size} input, rounding={arch.rounding})",
      "",
      f"{'part':<8} {'units':>5} {'stride':>6} {'planes':>11} "
      f"{'out ch':>7} {'out size':>8} {'params':>13} {'MACs':>16}",
  ]
  for p in parts:
    planes = f"{p.planes[0]}..{p.planes[-1]}" if p.planes else "-"
    size = f"{p.output_size}x{p.output_size}" if p.name != "head" else "-"
    units = str(p.units) if p.units else "-"
    lines.append(f"{p.name:<8} {units:>5} {p.stride:>6} {planes:>11} "
                 f"{p.out_channels:>7} {size:>8} {p.params:>13,} "
                 f"{p.macs:>16,}")
  lines += [
      "",
      f"total parameters:          {total:,}",
      f"  without BN (conv + fc):  "
      f"{total - complexity.total_bn_params(parts):,}",
      f"output feature dimension:  {arch.num_features}",
      f"forward MACs per image:    {macs:,} ({macs / 1e9:.3f} G)",
      f"forward FLOPs per image:   {2 * macs:,} ({2 * macs / 1e9:.3f} G; "
      "2 x MACs, conv + fc)",
  ]
  if show_widths:
    lines.append("")
    lines.append("planes per unit:")
    for p in parts:
      if p.planes:
        lines.append(f"  {p.name}: {_format_planes(p.planes)}")
  return "\n".join(lines)


def as_json(arch: widths_lib.Architecture, num_classes: int,
            image_size: int) -> dict:
  """The report as a JSON-serialisable dict (what ``--json`` prints).

  Args:
    arch: the network's shape (``widths.architecture``).
    num_classes: classifier outputs.
    image_size: input side in pixels, for feature-map sizes and MACs.

  Returns:
    The configuration, totals (parameters, MACs, FLOPs = 2 x MACs) and one
    entry per part under "stages" (stem, stages and head).
  """
  parts = complexity.report(arch, num_classes, image_size)
  return {
      "dataset": arch.dataset, "depth": arch.depth, "alpha": arch.alpha,
      "mode": arch.mode, "bottleneck": arch.bottleneck,
      "rounding": arch.rounding, "num_classes": num_classes,
      "image_size": image_size,
      "parameters": complexity.total_params(parts),
      "parameters_without_bn": complexity.total_params(parts) -
                               complexity.total_bn_params(parts),
      "num_features": arch.num_features,
      "macs": complexity.total_macs(parts),
      "flops": 2 * complexity.total_macs(parts),
      "stages": [{"name": p.name, "units": p.units, "stride": p.stride,
                  "in_channels": p.in_channels,
                  "out_channels": p.out_channels, "planes": p.planes,
                  "output_size": p.output_size, "params": p.params,
                  "macs": p.macs} for p in parts],
  }


def _memory_settings(arch) -> dict:
  """Batch per replica, dtype, recompute and channel multiple from flags.

  Raises:
    cli.UserError: for a --batch_size or --replicas that cannot be split.
  """
  if FLAGS.replicas < 1:
    raise cli.UserError(f"--replicas must be >= 1; got {FLAGS.replicas}")
  if FLAGS.batch_size < 1 or FLAGS.batch_size % FLAGS.replicas:
    raise cli.UserError(f"--batch_size must be a positive multiple of "
                        f"--replicas={FLAGS.replicas}; got {FLAGS.batch_size}")
  try:
    multiple = channel_alignment.resolve(FLAGS.channel_multiple, FLAGS.dtype,
                                         FLAGS.device.upper())
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  del arch
  return {"batch_per_replica": FLAGS.batch_size // FLAGS.replicas,
          "dtype": FLAGS.dtype, "recompute": FLAGS.recompute,
          "device": FLAGS.device, "channel_multiple": multiple}


def memory_report(arch, num_classes: int, image_size: int,
                  settings: dict) -> dict:
  """Training memory per replica for ``settings`` and without/with
  recompute, in bytes (``memory.estimate``).

  Args:
    arch: the network's shape.
    num_classes: classifier outputs.
    image_size: input side in pixels.
    settings: what ``_memory_settings`` returns.

  Returns:
    ``settings`` plus "estimate" (the parts and total for the chosen
    --recompute) and "total_by_recompute" (total for each choice).
  """
  def total(recompute):
    return memory.estimate(arch, num_classes, image_size,
                           settings["batch_per_replica"], settings["dtype"],
                           recompute, settings["channel_multiple"])
  return dict(settings,
              estimate=total(settings["recompute"]).as_dict(),
              total_by_recompute={r: total(r).total
                                  for r in memory.RECOMPUTE})


def _format_memory(report: dict) -> str:
  gib = 2 ** 30
  est = report["estimate"]
  lines = [
      f"training memory per replica (batch {report['batch_per_replica']}, "
      f"{report['dtype']}, --recompute={report['recompute']}, "
      f"{report['device']}, channel multiple {report['channel_multiple']}; "
      "framework not included):",
      f"  weights {est['weights'] / gib:.2f} GiB + gradients "
      f"{est['gradients'] / gib:.2f} + optimiser {est['optimizer'] / gib:.2f}"
      f" + activations {est['activations'] / gib:.2f} + backward "
      f"workspace {est['workspace'] / gib:.2f} = {est['total'] / gib:.2f} GiB",
      "  by --recompute: " + ", ".join(
          f"{r} {t / gib:.2f} GiB"
          for r, t in report["total_by_recompute"].items()),
  ]
  return "\n".join(lines)


def _published(arch, shakedrop_on: bool) -> Optional[dict]:
  """The paper row's cited error (None when not a paper row)."""
  row = None if shakedrop_on else paper_rows.find(arch)
  if row is None:
    return None
  text = row.published if "top-1" in row.published else (
      row.published + " top-1")
  return {"error": text, "flagfile": row.path}


def main(argv):
  """Prints the report for the model flags.

  Args:
    argv: absl's remaining arguments; only the program name is allowed.

  Raises:
    cli.UserError: for extra arguments or invalid model flags.
  """
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {' '.join(argv[1:])}")
  dataset = None
  if FLAGS.dataset == "synthetic":  # e.g. flags/smoke.flags
    dataset = FLAGS.synthetic_like
  problems = train_flags.number_problems(train_flags.MODEL_NUMBER_FLAGS)
  if problems:
    raise cli.FlagError(cli.problems_text(problems))
  arch = model_flags.architecture(dataset=dataset)
  num_classes = FLAGS.num_classes or widths_lib.NUM_CLASSES[arch.dataset]
  cli.check_image_size("image_size", FLAGS.image_size, arch.dataset,
                       "32 for CIFAR, 224 for ImageNet")
  image_size = FLAGS.image_size or (224 if arch.dataset == "imagenet" else 32)
  # ShakeDrop has no parameters or MACs; report the setting when it is on.
  num_units = len(arch.flat_planes)
  shakedrop = {"p_L": FLAGS.shakedrop_pl, "level": FLAGS.shakedrop_level,
               "p_first": 1.0 - (1.0 - FLAGS.shakedrop_pl) / num_units}
  mem = memory_report(arch, num_classes, image_size, _memory_settings(arch))
  published = _published(arch, FLAGS.shakedrop)
  if FLAGS.json:
    payload = as_json(arch, num_classes, image_size)
    if FLAGS.shakedrop:
      payload["shakedrop"] = shakedrop
    payload["memory"] = mem
    payload["published"] = published
    print(json.dumps(payload, indent=2))
  else:
    text = describe(arch, num_classes, image_size, FLAGS.show_widths)
    if FLAGS.shakedrop:
      text += (f"\n\nShakeDrop: level={shakedrop['level']}, keep "
               f"probability {shakedrop['p_first']:.4f} (unit 1) -> "
               f"{shakedrop['p_L']:g} (unit {num_units}); no parameters")
    text += "\n\n" + _format_memory(mem)
    if published is not None:
      text += (f"\npublished error: {published['error']} (the paper row of "
               f"{published['flagfile']})")
    print(text)


def run():
  """The console entry point: parses flags and runs ``main`` guarded."""
  console.run(PROG, main, doc=__doc__, groups=usage.DESCRIBE_GROUPS,
              knobs=usage.DESCRIBE_KNOBS)


if __name__ == "__main__":
  run()

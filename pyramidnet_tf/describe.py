r"""Prints a PyramidNet's widths, parameters, output dimension and FLOPs.

    python -m pyramidnet_tf.describe --dataset=cifar100 --depth=164 \
        --alpha=48 --bottleneck
    python -m pyramidnet_tf.describe --flagfile=flags/cifar10/pyramidnet164_a48_bottleneck.flags

Takes the same model flags as the trainer and accepts the trainer's
flagfiles. Like the trainer, it describes the run's real network: the one
saved in --model_dir when that directory holds one (a resume), else the
--init_from source's architecture and regularisers (a fine-tune), with the
class count of --data_dir's manifest when --data_dir is given; model flags
given besides must agree, as the trainer requires. The memory estimate
follows --batch_size, --dtype and --recompute, the training compute
--batch_size, --epochs and --train_steps (on the dataset's training split:
50,000 CIFAR or 1,281,167 ImageNet images); the trainer's other flags are
defined and ignored here. Works from shapes only (no variables are
created), so it is instant for any size (reading --model_dir, --init_from
or --data_dir loads TensorFlow's file system layer first).
"""

import dataclasses
import json
import os
from typing import List, Optional, Tuple

from pyramidnet_tf.cli import console
from pyramidnet_tf.cli import describe_config
from pyramidnet_tf.cli import errors as cli
from pyramidnet_tf.model import channel_alignment
from pyramidnet_tf.cli import usage
from pyramidnet_tf.model import complexity
from pyramidnet_tf.model import memory
from pyramidnet_tf import recipe_book as paper_rows
from pyramidnet_tf.training import finetune_rules
from pyramidnet_tf.cli import model_flags
from pyramidnet_tf.model import widths as widths_lib

DescribeConfig = describe_config.DescribeConfig
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


def _memory_settings(config: DescribeConfig, batch_size: int) -> dict:
  """Batch per replica, dtype, recompute and channel multiple.

  Args:
    config: the flags' settings (--replicas, --dtype, --device, ...).
    batch_size: the run's global batch (--batch_size, or the batch of the
      run in --model_dir, which a resume cannot change).

  Raises:
    cli.UserError: for a --batch_size or --replicas that cannot be split.
  """
  replicas, runtime = config.replicas, config.runtime
  if replicas < 1:
    raise cli.UserError(f"--replicas must be >= 1; got {replicas}")
  if batch_size < 1 or batch_size % replicas:
    raise cli.UserError(f"--batch_size must be a positive multiple of "
                        f"--replicas={replicas}; got {batch_size}")
  try:
    multiple = channel_alignment.resolve(runtime.channel_multiple,
                                         runtime.dtype, config.device.upper())
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  return {"batch_per_replica": batch_size // replicas,
          "dtype": runtime.dtype, "recompute": runtime.recompute,
          "device": config.device, "channel_multiple": multiple}


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


def format_flops(flops: float) -> str:
  """``flops`` in PFLOP, TFLOP or GFLOP, three significant digits (whole
  numbers from 100 up), e.g. "425 PFLOP", "12,741 PFLOP", "36.3 PFLOP"."""
  for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9)):
    if flops >= scale or unit == "GFLOP":
      value = flops / scale
      return (f"{round(value):,} {unit}" if value >= 100 else
              f"{value:.3g} {unit}")
  raise AssertionError("unreachable")


def training_report(dataset: str, macs: int, batch_size: int,
                    epochs: float, train_steps: int) -> Optional[dict]:
  """The schedule's steps, images and FLOPs on ``dataset``'s training set
  (``complexity.training_compute``), from --epochs and --train_steps; None
  for a dataset of unknown size.

  Args:
    dataset: the paper dataset whose training split is counted
      (``complexity.TRAIN_IMAGES``).
    macs: forward multiply-accumulates per image.
    batch_size: the run's global batch (--batch_size, or a resumed run's).
    epochs: --epochs.
    train_steps: --train_steps (0: the length comes from ``epochs``).
  """
  images = complexity.TRAIN_IMAGES.get(dataset)
  if images is None or batch_size > images:
    return None
  compute = complexity.training_compute(macs, images, batch_size,
                                        epochs, train_steps)
  return {"dataset": dataset, "train_images": compute.train_images,
          "batch_size": batch_size,
          "epochs": None if train_steps else epochs,
          "steps": compute.steps, "images_seen": compute.images_seen,
          "flops": compute.flops}


def _format_training(report: dict) -> str:
  if report["epochs"] is None:
    length = "--train_steps"
  else:
    length = (f"{report['epochs']:g} epochs of the "
              f"{report['train_images']:,} {report['dataset']} training "
              "images")
  return (f"training compute:          {format_flops(report['flops'])} "
          f"({report['steps']:,} steps x batch {report['batch_size']}: "
          f"{length}; 3 x FLOPs per image, forward + backward)")


def _published(arch, shakedrop_on: bool) -> Optional[dict]:
  """The paper row's cited error (None when not a paper row)."""
  row = None if shakedrop_on else paper_rows.find(arch)
  if row is None:
    return None
  text = row.published if "top-1" in row.published else (
      row.published + " top-1")
  return {"error": text, "flagfile": row.path}


def _read_model_config(directory: str, flag: str) -> dict:
  """The "model" section of ``directory``'s model_config.json.

  Raises:
    cli.UserError: naming ``flag`` when the file is missing or not JSON.
  """
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top
  try:
    return store.read_config(directory).get("model", {})
  except FileNotFoundError as e:
    raise cli.UserError(f"--{flag}={directory}: {e}") from None
  except ValueError as e:
    raise cli.UserError(f"--{flag}={directory}: model_config.json is not "
                        f"valid JSON ({e})") from None


def _has_model_config(directory: Optional[str]) -> bool:
  if not directory:
    return False
  from pyramidnet_tf.model_dir import store  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.exists(os.path.join(directory, store.CONFIG_FILE))


def _manifest_classes(data_dir: str) -> int:
  """The class count of ``data_dir``'s manifest (its new classifier).

  Raises:
    cli.UserError: the manifest cannot be read, in the data layer's words.
  """
  from pyramidnet_tf.data import manifest as manifest_lib  # pylint: disable=g-import-not-at-top
  try:
    return manifest_lib.read_manifest(data_dir).num_classes
  except manifest_lib.DataError as e:
    raise cli.UserError(f"{e} (drop --data_dir to describe the "
                        "--dataset's default classes)") from None


def _run_settings(config: DescribeConfig, notes: List[str]) -> dict:
  """--image_size and --batch_size of the run in --model_dir (its
  train_config.json; a resume cannot change them) where the flags leave
  them unset; {} for a directory without one (e.g. import_torch's)."""
  from pyramidnet_tf.training import config as config_lib  # pylint: disable=g-import-not-at-top
  try:
    saved = config_lib.read(config.model_dir)
  except (FileNotFoundError, ValueError, KeyError):
    return {}
  settings = {}
  for name, value in (("image_size", saved.data.image_size),
                      ("batch_size", saved.schedule.batch_size)):
    if name not in config.given:
      settings[name] = value
  if settings:
    notes.append("the run's " + ", ".join(
        f"--{name}={value}" for name, value in settings.items()) +
                 f" (its {config_lib.CONFIG_FILE})")
  return settings


def run_model(config: DescribeConfig) -> Tuple[dict, int, List[str], dict]:
  """The network the trainer would build for the flags.

  In the trainer's order: the network saved in --model_dir (a resume; model
  flags given must agree with it), else the --init_from source's
  architecture and regularisers (those given win for the regularisers and
  must agree for the architecture), else the model flags; the classes are
  --data_dir's manifest's when given (a fine-tune's new classifier;
  otherwise they must agree, as the trainer checks).

  Args:
    config: the flags' settings.

  Returns:
    (``PyramidNet`` keyword arguments, classes, lines saying where they
    came from, the run's --image_size and --batch_size where --model_dir's
    train_config.json sets them and the flags do not).

  Raises:
    cli.UserError: one line naming the flag that disagrees or the
      directory that cannot be read.
  """
  kwargs = dataclasses.asdict(config.model)
  if kwargs["dataset"] == "synthetic":   # e.g. flags/smoke.flags
    kwargs["dataset"] = config.data.synthetic_like
  notes = []
  given = {name: getattr(config.model, name)
           for name in model_flags.MODEL_FLAG_NAMES if name in config.given}
  model_dir, init_from = config.model_dir, config.init_from
  data_dir, num_classes = config.data.data_dir, config.model.num_classes
  resumed = _has_model_config(model_dir)
  settings = {}
  classes = num_classes
  if resumed:
    saved = _read_model_config(model_dir, "model_dir")
    diffs = [f"--{name}={value} but {model_dir} holds {name} "
             f"{saved.get(name)!r}" for name, value in given.items()
             if name in saved and not _same(value, saved[name])]
    if diffs:
      raise cli.UserError(
          f"--model_dir={model_dir} holds a network already (a rerun "
          f"resumes it): {'; '.join(diffs)}; drop these flags to describe "
          "it, or pass a new --model_dir")
    kwargs.update({name: saved[name] for name in kwargs if name in saved})
    kwargs.update({name: saved.get(name, default) for name, default
                   in finetune_rules.REGULARISER_DEFAULTS.items()})
    classes = saved.get("num_classes")
    notes.append(f"the network of --model_dir={model_dir} (a rerun "
                 "resumes it)")
    settings = _run_settings(config, notes)
  elif init_from:
    source = _read_model_config(init_from, "init_from")
    try:
      kwargs.update(finetune_rules.resolve_architecture(
          init_from, source,
          {n: v for n, v in given.items()
           if n in finetune_rules.ARCHITECTURE_FIELDS}))
      kwargs.update(finetune_rules.resolve_regularisers(source, given))
    except KeyError as e:
      raise cli.UserError(f"--init_from={init_from}: model_config.json "
                          f"has no {e} in its model section") from None
    except finetune_rules.FinetuneError as e:
      raise cli.UserError(str(e)) from None
    classes = num_classes or source.get("num_classes")
    notes.append(f"the architecture of --init_from={init_from}; "
                 f"{finetune_rules.regularisers_text(kwargs, source)}")
  if data_dir and config.model.dataset != "synthetic":
    manifest = _manifest_classes(data_dir)
    fixed = classes if resumed else num_classes
    if fixed and fixed != manifest:
      raise cli.UserError(
          f"{data_dir}/manifest.json lists {manifest} classes but the "
          f"run's network has {fixed} (the trainer refuses this too); drop "
          "--num_classes, or pass the data the network was trained on")
    if init_from and not resumed and classes != manifest:
      notes.append(f"{manifest} classes of --data_dir={data_dir}: a "
                   f"new classifier (the source has {classes})")
    else:
      notes.append(f"{manifest} classes of --data_dir={data_dir}")
    classes = manifest
  kwargs["num_classes"] = classes
  return kwargs, classes, notes, settings


def _same(value, saved) -> bool:
  if isinstance(saved, (int, float)) and not isinstance(saved, bool):
    try:
      return float(value) == float(saved)
    except (TypeError, ValueError):
      return False
  return value == saved


def main(argv):
  """Prints the report for the run the flags describe
  (``describe_config.from_flags``).

  Args:
    argv: absl's remaining arguments; only the program name is allowed.

  Raises:
    cli.UserError: for invalid model flags, or model flags that disagree
      with --model_dir's or --init_from's network.
  """
  del argv  # console_base.run refuses positional arguments
  config = describe_config.from_flags()
  kwargs, num_classes, notes, settings = run_model(config)
  try:
    arch = widths_lib.architecture(kwargs["dataset"], kwargs["depth"],
                                   kwargs["alpha"], kwargs["bottleneck"],
                                   kwargs["mode"], kwargs["rounding"])
  except ValueError as e:
    raise cli.FlagError(f"invalid model flags: {e}") from None
  num_classes = num_classes or widths_lib.NUM_CLASSES[arch.dataset]
  image_size = settings.get("image_size", config.data.image_size)
  cli.check_image_size("image_size", image_size, arch.dataset,
                       "32 for CIFAR, 224 for ImageNet")
  image_size = image_size or (224 if arch.dataset == "imagenet" else 32)
  # ShakeDrop has no parameters or MACs; report the setting when it is on.
  num_units = len(arch.flat_planes)
  shakedrop_on = bool(kwargs["shakedrop"])
  shakedrop = {"p_L": kwargs["shakedrop_pl"],
               "level": kwargs["shakedrop_level"],
               "p_first": 1.0 - (1.0 - kwargs["shakedrop_pl"]) / num_units}
  mem = memory_report(arch, num_classes, image_size, _memory_settings(
      config, settings.get("batch_size", config.batch_size)))
  published = _published(arch, shakedrop_on)
  training = training_report(
      arch.dataset,
      complexity.total_macs(complexity.report(arch, num_classes, image_size)),
      settings.get("batch_size", config.batch_size), config.epochs,
      config.train_steps)
  if config.json:
    payload = as_json(arch, num_classes, image_size)
    payload["drop_rate"] = kwargs["drop_rate"]
    if shakedrop_on:
      payload["shakedrop"] = shakedrop
    payload["memory"] = mem
    payload["training"] = training
    payload["published"] = published
    payload["from"] = notes
    print(json.dumps(payload, indent=2))
  else:
    text = describe(arch, num_classes, image_size, config.show_widths)
    if notes:
      text = "\n".join(notes) + "\n" + text
    if kwargs["drop_rate"]:
      text += f"\n\ndropout {kwargs['drop_rate']:g} before the classifier"
    if shakedrop_on:
      text += (f"\n\nShakeDrop: level={shakedrop['level']}, keep "
               f"probability {shakedrop['p_first']:.4f} (unit 1) -> "
               f"{shakedrop['p_L']:g} (unit {num_units}); no parameters")
    text += "\n\n" + _format_memory(mem)
    if training is not None:
      text += "\n" + _format_training(training)
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

"""Distinct convolution shapes of the train step, per channel multiple.

    python bench/conv_shapes.py                  # c110, c272, i200 x 1/8/16/32
    python bench/conv_shapes.py --configs=c8 --multiples=1,8

Why: every distinct convolution (kernel, stride, input and output channels,
input size) is a problem of its own for cuDNN, which TF autotunes on first
use and XLA at compile time, forward and both backward passes. PyramidNet
widens every unit, so at the logical widths nearly every unit brings new
shapes; padding the channels to a multiple (``channel_alignment``) merges
neighbouring widths, at the price of arithmetic on zeros. Needs no GPU: the
shapes are those of the traced graph.

For each config and multiple this traces the trainer's step
(``TrainStep.loop``, built as the benchmarks build it) and counts, over the
graph and every function inside it, the Conv2D, Conv2DBackpropInput and
Conv2DBackpropFilter ops and their distinct signatures (op, kernel, stride,
channels in/out, input height/width, padding). "from widths" counts the
forward shapes again from ``widths.architecture`` and
``channel_alignment.align`` alone, as a cross-check of the graph walk.
"MACs" is the forward convolutions' multiply-adds relative to the logical
widths (multiple 1).
"""

import os
import sys

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

from bench.bench_common import CONFIGS  # pylint: disable=g-import-not-at-top,wrong-import-position
from bench import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_list("configs", ["c110", "c272", "i200"],
                  f"Subset of {list(CONFIGS)}.")
flags.DEFINE_list("multiples", ["1", "8", "16", "32"], "Channel multiples.")
FLAGS = flags.FLAGS

CONV_OPS = ("Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter")
_FUNCTION_ATTRS = ("f", "body", "cond", "then_branch", "else_branch",
                   "branches")


def graph_ops(graph, seen=None):
  """Every op of ``graph`` and of the functions its ops call, recursively
  (while bodies, conditionals, nested tf.functions such as XLA's)."""
  seen = set() if seen is None else seen
  for op in graph.get_operations():
    yield op
    for attr in _FUNCTION_ATTRS:
      try:
        value = op.get_attr(attr)
      except ValueError:
        continue
      for fn in value if isinstance(value, list) else [value]:
        name = getattr(fn, "name", None)
        if not name or name in seen:
          continue
        seen.add(name)
        function = graph._get_function(name)  # pylint: disable=protected-access
        if function is not None and getattr(function, "graph", None):
          yield from graph_ops(function.graph, seen)


def conv_signature(op) -> tuple:
  """(op type, kh, kw, stride, in, out, H, W, padding) of a conv op: the
  activations' and the filter's shapes from whichever tensors carry them."""
  if op.type == "Conv2D":
    x, w = op.inputs[0].shape, op.inputs[1].shape
  elif op.type == "Conv2DBackpropInput":
    x, w = op.outputs[0].shape, op.inputs[1].shape
  else:
    x, w = op.inputs[0].shape, op.outputs[0].shape
  strides = op.get_attr("strides")
  padding = op.get_attr("padding").decode()
  return (op.type, int(w[0]), int(w[1]), int(strides[1]), int(w[2]),
          int(w[3]), int(x[1]), int(x[2]), padding)


def count_graph(tf, name: str, multiple: int) -> dict:
  """Conv counts of the traced train step of config ``name``."""
  from pyramidnet_tf.runtime import distribute  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.training import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = CONFIGS[name]
  strategy = distribute.create_strategy(
      config_lib.RuntimeConfig(distribution="one_device"))
  train_step, model = bench_common.build_tf_train_step(
      tf, strategy, cfg, "float32", False, multiple, cfg["batch"])
  iterator = bench_common.synthetic_iterator(tf, strategy, cfg["size"],
                                             model.num_classes, cfg["batch"])
  concrete = train_step.loop.get_concrete_function(iterator, tf.constant(1))
  ops = [op for op in graph_ops(concrete.graph) if op.type in CONV_OPS]
  signatures = {conv_signature(op) for op in ops}
  macs = 0
  for op in ops:
    if op.type == "Conv2D":
      out = op.outputs[0].shape
      w = op.inputs[1].shape
      macs += out[0] * out[1] * out[2] * w[0] * w[1] * w[2] * w[3]
  forward = {s[1:] for s in signatures if s[0] == "Conv2D"}
  return {"ops": len(ops), "forward_shapes": len(forward),
          "by_type": {t: sum(1 for s in signatures if s[0] == t)
                      for t in CONV_OPS},
          "signatures": len(signatures), "macs": macs,
          "forward_convs": sum(1 for op in ops if op.type == "Conv2D")}


def count_from_widths(name: str, multiple: int) -> int:
  """Distinct forward (kernel, stride, in, out, input size) from the width
  schedule alone, with the channel padding the model applies."""
  from pyramidnet_tf.model import channel_alignment  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.model import widths
  cfg = CONFIGS[name]
  arch = widths.architecture(cfg["dataset"], cfg["depth"], cfg["alpha"],
                             cfg["bottleneck"])

  def pad(channels):
    return channel_alignment.align(channels, multiple)

  def out_size(size, kernel, stride, padding):
    return (size + 2 * padding - kernel) // stride + 1

  size = cfg["size"]
  stem = arch.stem_width
  if cfg["dataset"] == "imagenet":
    shapes = {(7, 2, 3, pad(stem), size)}
    size = out_size(out_size(size, 7, 2, 3), 3, 2, 1)  # conv, max pool
  else:
    shapes = {(3, 1, 3, pad(stem), size)}
  channels = stem
  for planes, stride in zip(arch.planes, widths.stage_strides(arch)):
    for position, unit_planes in enumerate(planes):
      s = stride if position == 0 else 1
      after = out_size(size, 3, s, 1)
      if arch.bottleneck:
        shapes.add((1, 1, pad(channels), pad(unit_planes), size))
        shapes.add((3, s, pad(unit_planes), pad(unit_planes), size))
        shapes.add((1, 1, pad(unit_planes), pad(4 * unit_planes), after))
      else:
        shapes.add((3, s, pad(channels), pad(unit_planes), size))
        shapes.add((3, 1, pad(unit_planes), pad(unit_planes), after))
      size = after
      channels = unit_planes * arch.expansion
  return len(shapes)


def main(argv):
  del argv
  bench_common.check_choices("configs", FLAGS.configs, list(CONFIGS))
  multiples = [int(m) for m in FLAGS.multiples]
  import pyramidnet_tf  # pylint: disable=g-import-not-at-top,unused-import  (hides Keras) # noqa: F401
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  print("| config | multiple | conv ops in the step | convs (forward) | "
        "distinct forward shapes | distinct Conv2D / BackpropInput / "
        "BackpropFilter | distinct conv signatures | forward MACs vs "
        "logical | from widths |")
  print("|---|---|---|---|---|---|---|---|---|")
  for name in FLAGS.configs:
    results = {m: count_graph(tf, name, m) for m in sorted({1, *multiples})}
    logical = results[1]["macs"]
    for multiple in multiples:
      counts = results[multiple]
      by_type = " / ".join(str(counts["by_type"][t]) for t in CONV_OPS)
      structure = count_from_widths(name, multiple)
      check = "" if structure == counts["forward_shapes"] else " (differs)"
      print(f"| {name} | {multiple} | {counts['ops']} | "
            f"{counts['forward_convs']} | {counts['forward_shapes']} | "
            f"{by_type} | {counts['signatures']} | "
            f"{counts['macs'] / logical:.3f} | {structure}{check} |",
            flush=True)


if __name__ == "__main__":
  app.run(main)

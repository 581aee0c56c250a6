"""memory.estimate: exact variable bytes, activations within 25 % of the
peak RSS a real training step adds on CPU, and the recompute saving."""

import numpy as np
import pytest

from bench import memory_bench
from pyramidnet_tf.model import memory
from pyramidnet_tf.model import network as model_lib
from pyramidnet_tf.model import widths


@pytest.mark.parametrize("depth,bottleneck", [(8, False), (11, True)])
def test_variable_bytes_are_the_models(depth, bottleneck):
  model = model_lib.PyramidNet("cifar10", depth, 6, bottleneck)
  est = memory.estimate(model.arch, 10, 32, 4)
  trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
  everything = sum(int(np.prod(v.shape)) for v in model.variables)
  assert est.weights == 4 * everything
  assert est.gradients == est.optimizer == 4 * trainable


def test_activations_scale_with_batch_and_drop_with_recompute():
  arch = widths.architecture("cifar100", 272, 200, True)
  one = memory.estimate(arch, 100, 32, 1)
  many = memory.estimate(arch, 100, 32, 128)
  assert many.activations == 128 * one.activations
  assert many.weights == one.weights
  kept = memory.estimate(arch, 100, 32, 128, recompute="unit")
  assert kept.activations < many.activations / 3
  half = memory.estimate(arch, 100, 32, 128, dtype="bfloat16")
  assert half.activations * 2 == many.activations
  with pytest.raises(ValueError, match="recompute must be one of none, unit"):
    memory.estimate(arch, 100, 32, 1, recompute="all")
  with pytest.raises(ValueError, match="dtype must be one of"):
    memory.estimate(arch, 100, 32, 1, dtype="float64")


def test_estimate_within_25_percent_of_measured_peak_rss():
  # Small enough for CI, large enough (batch 256) that activations, not the
  # runtime's own allocations, decide the step's peak.
  row = dict(dataset="cifar10", depth=8, alpha=24, bottleneck=False,
             image_size=32, batch=256)
  measured = {}
  for recompute in ("none", "unit"):
    result = memory_bench.run_isolated(row, recompute, steps=0,
                                       timeout_s=600)
    assert "error" not in result, result
    assert abs(result["estimate_mb"] - result["step_mb"]) <= (
        0.25 * result["step_mb"]), result
    measured[recompute] = result
  # Recomputation really keeps less: at least half the predicted saving.
  saving = measured["none"]["estimate_mb"] - measured["unit"]["estimate_mb"]
  assert saving > 30
  assert (measured["none"]["step_mb"] - measured["unit"]["step_mb"]) > (
      saving / 2), measured

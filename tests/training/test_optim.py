"""NesterovSGD must match torch.optim.SGD step for step (spec 4.3, pitfall 6)."""

import numpy as np
import pytest
import tensorflow as tf

from pyramidnet_tf.training import optim

torch = pytest.importorskip("torch")


def _run_both(nesterov, weight_decay, momentum=0.9, steps=4, decay_all=True):
  rng = np.random.default_rng(0)
  w0 = rng.normal(size=(3, 4)).astype(np.float32)
  b0 = rng.normal(size=(4,)).astype(np.float32)
  grads = [(rng.normal(size=(3, 4)).astype(np.float32),
            rng.normal(size=(4,)).astype(np.float32)) for _ in range(steps)]
  lrs = [0.1, 0.1, 0.05, 0.01][:steps]

  tw = torch.nn.Parameter(torch.tensor(w0))
  tb = torch.nn.Parameter(torch.tensor(b0))
  groups = [{"params": [tw], "weight_decay": weight_decay},
            {"params": [tb], "weight_decay": weight_decay if decay_all
             else 0.0}]
  topt = torch.optim.SGD(groups, lr=0.1, momentum=momentum,
                         nesterov=nesterov)
  w = tf.Variable(w0, name="kernel")
  b = tf.Variable(b0, name="bias")
  opt = optim.NesterovSGD(
      [w, b], momentum, nesterov, weight_decay,
      optim.default_decay_filter if decay_all else
      optim.no_bn_no_bias_filter)
  for (gw, gb), lr in zip(grads, lrs):
    for group in topt.param_groups:
      group["lr"] = lr
    tw.grad = torch.tensor(gw)
    tb.grad = torch.tensor(gb)
    topt.step()
    opt.apply([tf.constant(gw), tf.constant(gb)], tf.constant(lr))
  return (w.numpy(), b.numpy()), (tw.detach().numpy(), tb.detach().numpy())


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-1])
def test_matches_torch_sgd(nesterov, weight_decay):
  ours, theirs = _run_both(nesterov, weight_decay)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_excluding_bias_from_decay_matches_torch_param_groups():
  ours, theirs = _run_both(True, 0.5, decay_all=False)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # and differs from decaying everything
  all_decay, _ = _run_both(True, 0.5, decay_all=True)
  assert not np.allclose(all_decay[1], ours[1])


def test_filter_names():
  bn_gamma = tf.Variable(1.0, name="bn1/gamma")
  kernel = tf.Variable(1.0, name="conv1/kernel")
  bias = tf.Variable(1.0, name="fc/bias")
  assert optim.no_bn_no_bias_filter(kernel)
  assert not optim.no_bn_no_bias_filter(bn_gamma)
  assert not optim.no_bn_no_bias_filter(bias)


def test_mask_skips_the_update():
  v = tf.Variable([1.0, 2.0])
  opt = optim.NesterovSGD([v], 0.9, True, 1e-4)
  opt.apply([tf.constant([1.0, 1.0])], tf.constant(0.1),
            apply_mask=tf.constant(False))
  np.testing.assert_array_equal(v.numpy(), [1.0, 2.0])
  np.testing.assert_array_equal(opt.slots[0].numpy(), [0.0, 0.0])


def test_bad_arguments_are_named():
  v = tf.Variable(1.0)
  with pytest.raises(ValueError, match="momentum"):
    optim.NesterovSGD([v], momentum=1.5)
  with pytest.raises(ValueError, match="Nesterov"):
    optim.NesterovSGD([v], momentum=0.0, nesterov=True)
  with pytest.raises(ValueError, match="weight_decay"):
    optim.NesterovSGD([v], weight_decay=-1.0)

"""LR schedules: the PyTorch per-epoch step rule, warmup and cosine."""

import math

import pytest

from pyramidnet_tf.training import schedules


def _pytorch_cifar_lr(lr, epoch, epochs=300):
  # dyhan0920/PyramidNet-PyTorch train.py adjust_learning_rate (CIFAR).
  return lr * (0.1 ** (epoch // (epochs * 0.5))) * (
      0.1 ** (epoch // (epochs * 0.75)))


def test_step_schedule_equals_the_authors_pytorch_rule():
  s = schedules.Schedule("step", 0.5, steps_per_epoch=10, total_steps=3000,
                         decay_epochs=(150, 225), decay_factor=0.1)
  for epoch in (0, 1, 149, 150, 151, 224, 225, 299):
    for step in (epoch * 10, epoch * 10 + 9):
      assert s.value(step) == pytest.approx(_pytorch_cifar_lr(0.5, epoch),
                                            rel=1e-6), (epoch, step)


def test_warmup_is_linear_then_joins_the_schedule():
  s = schedules.Schedule("step", 1.0, steps_per_epoch=10, total_steps=100,
                         decay_epochs=(5,), warmup_epochs=2)
  assert s.warmup_steps == 20
  assert s.value(0) == pytest.approx(1 / 20)
  assert s.value(9) == pytest.approx(10 / 20)
  assert s.value(19) == pytest.approx(1.0)
  assert s.value(20) == pytest.approx(1.0)
  assert s.value(50) == pytest.approx(0.1)


def test_cosine():
  s = schedules.Schedule("cosine", 0.2, steps_per_epoch=10, total_steps=100)
  assert s.value(0) == pytest.approx(0.2)
  assert s.value(50) == pytest.approx(0.1, rel=1e-5)
  assert s.value(25) == pytest.approx(0.1 * (1 + math.cos(math.pi / 4)),
                                      rel=1e-5)
  assert s.value(100) == pytest.approx(0.0, abs=1e-7)


def test_errors_name_the_flag():
  with pytest.raises(ValueError, match="--lr_schedule must be one of step, "
                     "cosine"):
    schedules.Schedule("linear", 0.1, 10, 100)
  with pytest.raises(ValueError, match="--lr must be > 0"):
    schedules.Schedule("step", 0.0, 10, 100)
  with pytest.raises(ValueError, match="--lr_decay_epochs must be increasing"):
    schedules.Schedule("step", 0.1, 10, 100, decay_epochs=(225, 150))
  with pytest.raises(ValueError, match="--warmup_epochs"):
    schedules.Schedule("step", 0.1, 10, 100, warmup_epochs=-1)

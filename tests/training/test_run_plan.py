"""The run plan's arithmetic: batches, steps, epochs and a re-based resume."""

import pytest

from pyramidnet_tf.training import run_plan


def test_fresh_plan_from_epochs_and_from_train_steps():
  plan = run_plan.RunPlan.create(train_examples=50000, global_batch=128,
                                 replicas=4, epochs=300)
  assert plan.per_replica_batch == 32
  assert plan.steps_per_epoch == 390              # 50000 // 128
  assert plan.schedule_steps == plan.total_steps == 117000
  assert plan.epochs == 300
  assert (plan.start_step, plan.step_offset, plan.start_examples) == (0, 0, 0)
  assert not plan.finished_before
  steps = run_plan.RunPlan.create(train_examples=50000, global_batch=128,
                                  replicas=1, epochs=300, train_steps=1000)
  assert steps.total_steps == 1000
  assert steps.epochs == pytest.approx(1000 / 390)
  # A fraction of an epoch rounds to the nearest step, at least one.
  tiny = run_plan.RunPlan.create(train_examples=1000, global_batch=100,
                                 replicas=1, epochs=0.01)
  assert tiny.total_steps == 1


def test_resumed_plan_starts_at_the_restored_step():
  plan = run_plan.RunPlan.create(train_examples=1000, global_batch=100,
                                 replicas=2, epochs=3).resumed(12)
  assert plan.start_step == 12 and plan.start_examples == 1200
  assert plan.total_steps == 30 and plan.step_offset == 0
  assert plan.epoch(15) == 1.5
  assert plan.resumed(30).finished_before


def test_rebased_resume_ends_where_the_schedule_ends():
  # 20 steps of batch 50 were run (1000 examples); the rerun uses batch
  # 100, so it is at schedule step 10 with counter 20: offset -10.
  plan = run_plan.RunPlan.create(train_examples=2000, global_batch=100,
                                 replicas=1, epochs=2)
  rebased = plan.resumed(20, step_offset=-10, start_examples=1000)
  assert rebased.schedule_steps == 40
  assert rebased.total_steps == 50                 # counter at the end
  assert rebased.schedule_step(20) == 10
  assert rebased.epoch(20) == 0.5 and rebased.epoch(50) == 2
  assert rebased.epochs == 2
  assert rebased.start_examples == 1000
  assert not rebased.finished_before
  # Re-based the other way (a smaller batch now): the counter ends earlier.
  ahead = plan.resumed(10, step_offset=15, start_examples=2500)
  assert ahead.total_steps == 25 and ahead.schedule_step(10) == 25


@pytest.mark.parametrize("kwargs, message", [
    (dict(train_examples=1000, global_batch=100, replicas=3, epochs=1),
     r"--batch_size=100 must be a multiple of the 3 replicas"),
    (dict(train_examples=50, global_batch=64, replicas=1, epochs=1),
     r"the train split has 50 examples, fewer than one --batch_size=64"),
])
def test_impossible_plans_are_refused_naming_the_flag(kwargs, message):
  with pytest.raises(ValueError, match=message):
    run_plan.RunPlan.create(**kwargs)

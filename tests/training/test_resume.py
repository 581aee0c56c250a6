"""The resume policy: which changed settings a rerun applies, refuses or
re-bases on the examples seen, and the launches it records."""

import json

import pytest

from pyramidnet_tf.training import config as config_lib
from pyramidnet_tf.training import resume

DATA = resume.data_identity("cifar10", 160, 10, [("train-0", 80),
                                                 ("train-1", 80)])


def _settings(**changes):
  values = dict(config_lib.TrainConfig().flat(), model_dir="runs/m",
                data_dir="data/c10", batch_size=16, epochs=1.0)
  values.update(changes)
  return json.loads(json.dumps(values))


def _plan(launches, step, rebase=False, data=DATA, **changes):
  return resume.plan(launches, step, _settings(**changes), data,
                     model_dir="runs/m", rebase=rebase)


def _first():
  return _plan([], 0).launch


def test_a_fresh_run_starts_at_zero_and_records_its_settings():
  result = _plan([], 0)
  assert (result.start_examples, result.step_offset) == (0, 0)
  launch = result.launch
  assert (launch.start_step, launch.start_examples, launch.step_offset,
          launch.rebased, launch.changed) == (0, 0, 0, False, {})
  assert launch.settings["batch_size"] == 16 and launch.data == DATA
  assert resume.Launch.from_json(json.loads(json.dumps(
      launch.to_json()))) == launch


def test_allowed_changes_are_applied_and_listed():
  result = _plan([_first()], 10, epochs=2.0, lr=0.05, dtype="bfloat16",
                 eval_every_epochs=0.5, data_dir="/elsewhere/c10",
                 init_from="other", rebase_resume=True)
  assert result.changed == (
      "--data_dir data/c10 -> /elsewhere/c10 (the same data)",
      "--epochs 1.0 -> 2.0", "--lr 0.1 -> 0.05",
      "--dtype float32 -> bfloat16", "--eval_every_epochs 1.0 -> 0.5")
  assert (result.start_examples, result.step_offset) == (160, 0)
  assert result.rebase_text == ""
  assert result.launch.changed["epochs"] == [1.0, 2.0]
  assert "init_from" not in result.launch.changed   # not applied on resume


@pytest.mark.parametrize("changes,listed", [
    (dict(batch_size=32), "--batch_size 16 -> 32"),
    (dict(seed=1), "--seed 0 -> 1"),
    (dict(randaugment=[2, 9]), "--randaugment unset -> 2,9"),
    (dict(cutmix_prob=0.5, label_smoothing=0.1),
     "--label_smoothing 0.0 -> 0.1, --cutmix_prob 0.0 -> 0.5"),
    (dict(image_size=24, augment="imagenet"),
     "--image_size 0 -> 24, --augment auto -> imagenet"),
    (dict(freeze="backbone"), "--freeze none -> backbone"),
])
def test_what_changes_a_step_is_refused_in_one_line(changes, listed):
  with pytest.raises(resume.ResumeRefused) as error:
    _plan([_first()], 10, **changes)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(
      f"--model_dir=runs/m was trained with other settings that change what "
      f"a step means: {listed} (step 10, 160 examples seen); ")
  for way in ("a new --model_dir", "--init_from=runs/m --model_dir=NEW",
              "--rebase_resume"):
    assert way in message


def test_other_data_is_refused_the_same_data_elsewhere_is_not():
  bigger = resume.data_identity("cifar10", 320, 10, [("train-0", 320)])
  with pytest.raises(resume.ResumeRefused,
                     match=r"the data \(train split 160 -> 320 examples\)"):
    _plan([_first()], 10, data=bigger)
  folder = resume.data_identity("images", 160, 3, [("train-0", 160)])
  with pytest.raises(resume.ResumeRefused,
                     match=r"the data \(kind cifar10 -> images, classes 10 "
                     r"-> 3\)"):
    _plan([_first()], 10, data=folder)
  reshuffled = resume.data_identity("cifar10", 160, 10, [("a", 80),
                                                         ("b", 80)])
  with pytest.raises(resume.ResumeRefused, match="other train shards"):
    _plan([_first()], 10, data=reshuffled)


@pytest.mark.parametrize("batch,offset,schedule_step", [
    (32, -5, 5),    # 160 examples = 5 steps of 32: the run ends sooner
    (8, 10, 20),    # = 20 steps of 8: no example seen twice
    (48, -7, 3),    # 160 = 3 steps of 48 and 16 examples
])
def test_rebase_continues_from_the_examples_seen(batch, offset,
                                                 schedule_step):
  result = _plan([_first()], 10, rebase=True, batch_size=batch)
  assert result.start_examples == 160
  assert result.step_offset == offset
  assert result.schedule_step(10) == schedule_step
  launch = result.launch
  assert launch.rebased and launch.changed == {"batch_size": [16, batch]}
  assert (launch.start_step, launch.start_examples) == (10, 160)
  assert result.rebase_text.startswith(
      f"--rebase_resume: --batch_size 16 -> {batch}; the 160 examples seen "
      f"by step 10 continue with batch {batch}: the input resumes at example "
      f"160, the schedule at step {schedule_step}")
  # The launch after it goes on at the new batch, without re-basing again.
  later = _plan([_first(), launch], 13, batch_size=batch)
  assert later.start_examples == 160 + 3 * batch
  assert later.step_offset == offset and not later.launch.rebased


def test_the_launch_that_trained_the_restored_step_is_the_reference():
  rebased = _plan([_first()], 10, rebase=True, batch_size=32).launch
  launches = [_first(), rebased]
  # A rerun that falls back to ckpt-8 (written at batch 16) compares with
  # the first launch: batch 32 is a change there.
  with pytest.raises(resume.ResumeRefused, match="--batch_size 16 -> 32"):
    _plan(launches, 8, batch_size=32)
  fallback = _plan(launches, 8)
  assert (fallback.start_examples, fallback.step_offset) == (128, 0)
  # Then that launch is the reference for the steps after 8.
  launches.append(fallback.launch)
  assert resume.segment(launches, 12) is fallback.launch
  assert resume.segment(launches, 9) is fallback.launch
  assert resume.segment(launches, 5) is launches[0]


def test_a_train_config_without_launches_is_one_launch_from_step_zero(
    tmp_path):
  config = config_lib.TrainConfig.from_values(
      {"batch_size": 16, "model_dir": str(tmp_path)})
  config_lib.write(str(tmp_path), config)
  saved = config_lib.read_json(str(tmp_path))
  assert "launches" not in saved
  launches = resume.launches_of(saved)
  assert len(launches) == 1 and launches[0].batch_size == 16
  assert resume.launches_of(None) == []
  result = resume.plan(launches, 10, config.flat(), DATA,
                       model_dir=str(tmp_path), rebase=False)
  assert result.start_examples == 160 and result.changed == ()


def test_train_config_keeps_every_launch(tmp_path):
  first = _first()
  second = _plan([first], 10, epochs=2.0).launch
  config = config_lib.TrainConfig.from_values(
      {"batch_size": 16, "epochs": 2.0, "model_dir": str(tmp_path)})
  config_lib.write(str(tmp_path), config, [first.to_json(),
                                           second.to_json()])
  assert config_lib.read(str(tmp_path)) == config   # the latest settings
  launches = resume.launches_of(config_lib.read_json(str(tmp_path)))
  assert launches == [first, second]
  assert launches[0].settings["epochs"] == 1.0
  (tmp_path / config_lib.CONFIG_FILE).write_text("{not json")
  with pytest.raises(config_lib.ConfigError, match="is not valid JSON"):
    config_lib.read_json(str(tmp_path))

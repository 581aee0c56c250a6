"""Strategy choice, chief rules and per-worker directories."""

import json

import pytest
import tensorflow as tf

from pyramidnet_tf.runtime import cluster_env
from pyramidnet_tf.runtime import distribute
from pyramidnet_tf.training import config as config_lib


def test_errors_name_the_flag_and_choices():
  with pytest.raises(ValueError, match="--distribution must be one of auto, "
                     "one_device, mirrored, multi_worker"):
    distribute.create_strategy(config_lib.RuntimeConfig(distribution="tpu"))
  with pytest.raises(ValueError, match="--cpu_devices must be >= 1"):
    distribute.create_strategy(config_lib.RuntimeConfig(cpu_devices=0))


def test_multi_worker_without_tf_config_says_what_to_set(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="TF_CONFIG"):
    distribute.create_strategy(
        config_lib.RuntimeConfig(distribution="multi_worker"))


def test_tf_config_parsing(monkeypatch):
  monkeypatch.setenv("TF_CONFIG", json.dumps(
      {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]},
       "task": {"type": "worker", "index": 0}}))
  assert cluster_env.cluster_size() == 3
  monkeypatch.setenv("TF_CONFIG", "{not json")
  with pytest.raises(ValueError, match="TF_CONFIG is not valid JSON"):
    cluster_env.tf_config()


def test_single_host_strategies(monkeypatch):
  monkeypatch.delenv("TF_CONFIG", raising=False)
  one = distribute.create_strategy(
      config_lib.RuntimeConfig(distribution="one_device"))
  assert isinstance(one, tf.distribute.OneDeviceStrategy)
  assert distribute.is_chief(one)
  assert distribute.num_workers(one) == 1
  assert distribute.write_dir("/m", one) == "/m"


def test_temp_dir_removal_never_touches_the_model_dir(tmp_path):
  model_dir = tmp_path / "m"
  temp = model_dir / "workertemp_worker_1"
  temp.mkdir(parents=True)
  distribute.remove_temp_dir(str(model_dir), str(model_dir))
  assert model_dir.exists()
  distribute.remove_temp_dir(str(temp), str(model_dir))
  assert not temp.exists() and model_dir.exists()


class _ClusterStrategy:
  """Stands in for a strategy whose cluster resolver names ``spec``."""

  def __init__(self, spec):
    self.cluster_resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec))


def test_num_workers_counts_the_cluster_spec():
  assert distribute.num_workers(_ClusterStrategy(
      {"worker": ["127.0.0.1:1", "127.0.0.1:2"]})) == 2
  assert distribute.num_workers(_ClusterStrategy(
      {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"]})) == 2
  assert distribute.num_workers(_ClusterStrategy({})) == 1
  # A single-host strategy: no resolver, or one with an empty spec.
  assert distribute.num_workers(
      tf.distribute.MirroredStrategy(["/cpu:0"])) == 1

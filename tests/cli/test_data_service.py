"""Flags of ``--data_service`` (trainer) and of ``python -m
pyramidnet_tf.data_service``: a bad value or combination is one line naming
the flag. Servers and training through the service: tests/runtime/
test_data_service.py."""

from absl import flags
import pytest

from pyramidnet_tf import train  # pylint: disable=unused-import  (defines the trainer's flags) # noqa: F401
from pyramidnet_tf.cli import train_config
from pyramidnet_tf.training import data_plan
from tests import train_fixtures as fx

FLAGS = flags.FLAGS
_BASE = ["train", "--model_dir=/nonexistent/m", "--data_dir=/nonexistent/d"]


def _config(*args):
  saved = FLAGS.flags_into_string()
  try:
    FLAGS.unparse_flags()
    FLAGS(_BASE + list(args))
    return train_config.from_flags(check_model_dir=False)
  finally:
    FLAGS.unparse_flags()
    FLAGS(["train", *[l for l in saved.splitlines() if l]])


def test_the_service_settings_reach_the_config_and_name_the_job():
  config = _config("--data_service=grpc://dispatcher-0.svc:5050",
                   "--data_service_mode=parallel_epochs")
  assert config.data.data_service == "grpc://dispatcher-0.svc:5050"
  assert config.data.data_service_mode == "parallel_epochs"
  name = data_plan.service_job_name(config, 120)
  assert name.startswith("pyramidnet-") and name.endswith("-from-step-120")
  assert name == data_plan.service_job_name(config, 120)   # every worker
  assert name != data_plan.service_job_name(config, 0)     # a resume: new job
  named = _config("--data_service=10.0.0.7:5050",
                  "--data_service_job_name=run-7")
  assert data_plan.service_job_name(named, 0) == "run-7-from-step-0"
  assert _config().data.data_service == ""


@pytest.mark.parametrize("args, needle", [
    (["--data_service=dispatcher"], "--data_service must be HOST:PORT"),
    (["--data_service=grpc://host:0"], "port in 1..65535"),
    (["--data_service=http://host:5050"], "grpc://HOST:PORT"),
    (["--data_service_mode=parallel_epochs"],
     "--data_service_mode needs --data_service"),
    (["--data_service_job_name=x"], "--data_service_job_name needs"),
    (["--data_service=h:1", "--data_service_job_name=a b"],
     "--data_service_job_name takes letters"),
    (["--data_service=h:1", "--deterministic"], "--deterministic"),
    (["--data_service=h:1", "--cache_data"], "--cache_data"),
    (["--data_service=h:1", "--dataset=synthetic"], "--dataset=synthetic"),
])
def test_bad_service_flags_are_one_error_naming_the_flag(args, needle):
  with pytest.raises(train_config.ConfigError, match=needle.replace(
      ".", r"\.")):
    _config(*args)


def test_an_unknown_mode_is_refused_listing_the_modes():
  with pytest.raises(flags.IllegalFlagValueError,
                     match="distributed_epoch|parallel_epochs"):
    _config("--data_service=h:1", "--data_service_mode=off")


@pytest.mark.parametrize("args, needle", [
    ([], "--role is required: one of dispatcher, worker"),
    (["--role=dispatcher", "--work_dir=/tmp/x"], "--port is required"),
    (["--role=dispatcher", "--port=5050"], "--work_dir is required"),
    (["--role=worker"], "--dispatcher is required"),
    (["--role=worker", "--dispatcher=host"], "--dispatcher must be HOST:PORT"),
    (["--role=worker", "--dispatcher=h:1", "--work_dir=/tmp/x"],
     "--work_dir does not apply to --role=worker"),
    (["--role=worker", "--dispatcher=h:1", "--worker_address=h:2"],
     "--worker_address must be a host name"),
    (["--role=dispatcher", "--port=70000", "--work_dir=/tmp/x"],
     "--port must be an integer in 0..65535"),
])
def test_bad_server_flags_are_one_line(args, needle):
  proc = fx.run_cli("pyramidnet_tf.data_service", args, timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  lines = [l for l in proc.stderr.splitlines()
           if l.startswith(("pyramidnet_tf.data_service: error:",
                            "FATAL Flags parsing error"))]
  assert len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]

"""Fault injection: the environment, damaged records, and files removed while
a tool runs.

* A malformed TF_CONFIG or JOB_COMPLETION_INDEX: the trainer and evaluate
  stop with one line naming the variable and what it must be, while flags
  are checked (before TensorFlow is imported).
* Well-framed TFRecords whose content is wrong (an image that does not
  decode, a short RAW image, a record that is not an Example, a label
  outside the manifest's classes, a manifest whose num_classes or
  label_base lies): train and evaluate stop with one line naming the shard
  and the record.
* An evaluation shard deleted during training: one line naming it, after
  the run's state is checkpointed; a rerun with the shard back resumes.
* The model directory, or its model_config.json, deleted during training:
  the run never ends "done" without a model_config.json (the file is
  written again; a deleted directory stops the run with one line).
* A data_prep conversion into a folder holding another data_prep dataset:
  refused without --overwrite, naming what would be replaced; with it, the
  replaced dataset is named.
"""

import json
import os
import subprocess
import sys

import pytest

from tests import train_fixtures as fx



def _one_line_error(proc, prog, *needles):
  """The single '<prog>: error: ...' line a user-fixable failure ends with."""
  assert proc.returncode == 1, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  lines = [line for line in proc.stderr.splitlines()
           if line.startswith(f"{prog}: error:")]
  assert len(lines) == 1, proc.stderr[-3000:]
  for needle in needles:
    assert needle in lines[0], lines[0]
  return lines[0]


# ---------------------------------------------------------------------------
# The cluster environment.


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory):
  """A PYTHONPATH entry whose ``tensorflow`` fails to import: a tool that
  reaches any TensorFlow import ends with that error instead."""
  root = tmp_path_factory.mktemp("no_tf")
  (root / "tensorflow").mkdir()
  (root / "tensorflow" / "__init__.py").write_text(
      "raise ImportError('TensorFlow was imported')\n")
  return str(root)


def _run_without_tensorflow(no_tensorflow, module, args, **env):
  full = fx.cli_env(**env)
  full["PYTHONPATH"] = os.pathsep.join([no_tensorflow, fx.REPO])
  return subprocess.run([sys.executable, "-m", module, *args], cwd=fx.REPO,
                        env=full, capture_output=True, text=True,
                        timeout=120, check=False)


_WORKERS = ["localhost:2222", "localhost:2223"]
_BAD_TF_CONFIGS = [
    ("not JSON", "{cluster: workers}", ["not valid JSON", "expected an object"]),
    ("a list", json.dumps(_WORKERS), ["must be a JSON object", "got a list"]),
    ("a number as worker address",
     json.dumps({"cluster": {"worker": [2222, "localhost:2223"]},
                 "task": {"type": "worker", "index": 0}}),
     ["cluster['worker'][0]", '"host:port"', "got the number 2222"]),
    ("an address without port",
     json.dumps({"cluster": {"worker": ["localhost", "localhost:2223"]},
                 "task": {"type": "worker", "index": 0}}),
     ["cluster['worker'][0]", '"host:port"', "'localhost'"]),
    ("task index out of range",
     json.dumps({"cluster": {"worker": _WORKERS},
                 "task": {"type": "worker", "index": 2}}),
     ["task index", "2 'worker' task(s)", "0..1", "got the number 2"]),
    ("task index a string",
     json.dumps({"cluster": {"worker": _WORKERS},
                 "task": {"type": "worker", "index": "1"}}),
     ["task index", "0..1", "got the string '1'"]),
    ("no task", json.dumps({"cluster": {"worker": _WORKERS}}),
     ['no "task"', '"type": "worker", "index": I']),
    ("task type not in the cluster",
     json.dumps({"cluster": {"worker": _WORKERS},
                 "task": {"type": "chief", "index": 0}}),
     ["task type", "'worker'", "got the string 'chief'"]),
    ("a parameter-server job",
     json.dumps({"cluster": {"worker": _WORKERS, "ps": ["localhost:2224"]},
                 "task": {"type": "worker", "index": 0}}),
     ["job 'ps'", '"chief"', '"worker"']),
]


@pytest.mark.parametrize("case,value,needles", _BAD_TF_CONFIGS,
                         ids=[c[0] for c in _BAD_TF_CONFIGS])
def test_malformed_tf_config_is_one_line_before_tensorflow(
    faults, no_tensorflow, tmp_path, case, value, needles):
  model_dir = tmp_path / "model"
  with faults.inject(f"TF_CONFIG {case}: train"):
    proc = _run_without_tensorflow(
        no_tensorflow, "pyramidnet_tf.train",
        ["--dataset=synthetic", f"--model_dir={model_dir}"], TF_CONFIG=value)
    line = _one_line_error(proc, "pyramidnet_tf.train", "TF_CONFIG",
                           *needles)
    assert not model_dir.exists(), line
  with faults.inject(f"TF_CONFIG {case}: evaluate"):
    proc = _run_without_tensorflow(
        no_tensorflow, "pyramidnet_tf.evaluate",
        [f"--model_dir={model_dir}", f"--data_dir={tmp_path}"],
        TF_CONFIG=value)
    _one_line_error(proc, "pyramidnet_tf.evaluate", "TF_CONFIG", *needles)


@pytest.mark.parametrize("index", ["\u0661", "\u00b2", "1x", "-1"],
                         ids=["arabic-indic one", "superscript two",
                              "trailing letter", "negative"])
def test_invalid_job_completion_index_is_one_line_before_tensorflow(
    faults, no_tensorflow, tmp_path, index):
  """'١' (an Arabic-Indic one) passes str.isdigit() and int() reads it as 1,
  '²' passes isdigit() but int() refuses it: neither is a Kubernetes
  completion index."""
  from pyramidnet_tf.runtime import cluster_env  # pylint: disable=g-import-not-at-top
  with faults.inject(f"JOB_COMPLETION_INDEX={index!r}: train"):
    with pytest.raises(ValueError, match="JOB_COMPLETION_INDEX must be a "
                       "completion index"):
      cluster_env.k8s_indexed_tf_config(
          2, 2222, "workers", "job", environ={"JOB_COMPLETION_INDEX": index},
          hostname="job-1")
    proc = _run_without_tensorflow(
        no_tensorflow, "pyramidnet_tf.train",
        ["--dataset=synthetic", "--cluster_resolver=k8s_indexed",
         "--k8s_num_workers=2", "--k8s_service=workers",
         "--k8s_job_name=job", f"--model_dir={tmp_path / 'model'}"],
        JOB_COMPLETION_INDEX=index)
    _one_line_error(proc, "pyramidnet_tf.train",
                    "JOB_COMPLETION_INDEX must be a completion index",
                    "ASCII digits", repr(index))

"""``python -m pyramidnet_tf.train --recompute=unit`` through the smoke flagfile."""

import json
import os

from tests import train_fixtures as fx

TRAIN = "pyramidnet_tf.train"
# After the flagfile: fewer steps than its 20, same network and data.
_SHORT = ["--flagfile=flags/smoke.flags", "--train_steps=4",
          "--steps_per_loop=2", "--log_every_steps=2", "--noeval_at_end"]


def test_recompute_unit_trains_like_none(tmp_path):
  results = {}
  for recompute in ("none", "unit"):
    model_dir = str(tmp_path / recompute)
    proc = fx.run_cli(TRAIN, _SHORT + [f"--model_dir={model_dir}",
                                       f"--recompute={recompute}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results[recompute] = fx.train_result(proc.stderr)
    with open(os.path.join(model_dir, "train_config.json")) as f:
      assert json.load(f)["runtime"]["recompute"] == recompute
  none, unit = results["none"], results["unit"]
  assert unit["step"] == none["step"] == 4
  # Same data, seed and kernels: the trained losses agree to round-off.
  assert abs(unit["train"]["loss"] - none["train"]["loss"]) <= (
      1e-4 * abs(none["train"]["loss"])), (none, unit)


def test_recompute_bad_choice_is_one_line_error(tmp_path):
  proc = fx.run_cli(TRAIN, _SHORT + [f"--model_dir={tmp_path}",
                                     "--recompute=all"])
  assert proc.returncode != 0
  assert "Traceback" not in proc.stderr
  assert "--recompute" in proc.stderr and "none" in proc.stderr and (
      "unit" in proc.stderr), proc.stderr[-2000:]

"""pyramidnet_tf.evaluate prints exact JSON metrics for any model dir."""

import json


from pyramidnet_tf.data import manifest as manifest_lib
from pyramidnet_tf.model_dir import store as model_io
from tests import eval_reference
from tests import train_fixtures as fx


def _reference(model, info):
  """Top-1 error computed by hand over every test record, and their count."""
  rows = eval_reference.logits_by_hand(model, info, "test", 16, 32)
  return eval_reference.top1_error(rows), len(rows)


def test_evaluate_an_imported_style_model_dir(tiny_pyramidnet, tmp_path):
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=10,
                              train_per_class=1, eval_per_class=7, size=16,
                              shards=2)
  model = tiny_pyramidnet(seed=4)
  model_dir = str(tmp_path / "model")
  model_io.save_model(model, model_dir, {"source": "torch"}, step=7)
  # The model records no image size, so 32 (its default) is only applied
  # when asked for: the 16x16 images are padded to 32x32.
  proc = fx.run_cli("pyramidnet_tf.evaluate", [
      f"--model_dir={model_dir}", f"--data_dir={data_dir}"])
  assert proc.returncode == 2 and "--image_size=16" in proc.stderr, (
      proc.stderr[-3000:])
  for extra in ([], ["--cpu_devices=2", "--eval_batch_size=16"]):
    proc = fx.run_cli("pyramidnet_tf.evaluate", [
        f"--model_dir={model_dir}", f"--data_dir={data_dir}",
        "--image_size=32"] + extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    expected_error, total = _reference(model, manifest_lib.read_manifest(
        data_dir))
    assert result["examples"] == total == 70
    assert abs(result["top1_error"] - expected_error) < 1e-6, extra
    assert result["split"] == "test"
    assert result["checkpoint"].endswith("ckpt-7")


def test_class_count_mismatch_is_an_error(tiny_pyramidnet, tmp_path):
  data_dir = fx.write_dataset(str(tmp_path / "data"), num_classes=3,
                              train_per_class=1, eval_per_class=1, size=16)
  model_dir = str(tmp_path / "model")
  model_io.save_model(tiny_pyramidnet(), model_dir)
  proc = fx.run_cli("pyramidnet_tf.evaluate", [f"--model_dir={model_dir}",
                                               f"--data_dir={data_dir}"])
  assert proc.returncode != 0
  assert "has 10 classes" in proc.stderr and "lists 3" in proc.stderr

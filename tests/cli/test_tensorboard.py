"""TensorBoard shows a real run: HTTP API values and a headless-browser screenshot.

Trains a tiny model (with evaluation), starts TensorBoard on 127.0.0.1 over its
model_dir, and checks through TensorBoard's own HTTP API that our scalar tags
hold exactly the values the run wrote (read independently from the event
files). Then headless Chromium (Debian's `chromium`, installed by .ci/run)
screenshots the scalars dashboard; that part skips with a message only where
no Chromium can be found.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

from tests import train_fixtures as fx

TAGS = ("train/loss", "eval/top1_error", "train/learning_rate",
        "train/examples_per_sec")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(url: str, timeout: float = 10.0):
  with urllib.request.urlopen(url, timeout=timeout) as response:
    return json.loads(response.read().decode())


def _event_scalars(model_dir: str) -> dict:
  """{tag: {step: value}} read straight from the chief's event files."""
  values = {}
  for path in glob.glob(os.path.join(model_dir, "**", "events.out.tfevents.*"),
                        recursive=True):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag in TAGS:
          number = float(tf.make_ndarray(value.tensor)) if value.HasField(
              "tensor") else value.simple_value
          values.setdefault(value.tag, {})[event.step] = number
  return values


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("tb")
  data = fx.write_dataset(str(root / "data"), num_classes=4,
                          train_per_class=16, eval_per_class=4, size=16)
  model_dir = str(root / "model")
  result = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
      f"--data_dir={data}", f"--model_dir={model_dir}", "--nobottleneck",
      "--batch_size=16", "--epochs=2", "--steps_per_loop=2",
      "--log_every_steps=2", "--eval_every_epochs=1", "--lr=0.05"])
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


@pytest.fixture(scope="module")
def tensorboard(run_dir):
  port = _free_port()
  log = open(os.path.join(os.path.dirname(run_dir), "tensorboard.log"), "w")
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={run_dir}",
       "--host=127.0.0.1", f"--port={port}", "--load_fast=false",
       "--reload_interval=1"],
      stdout=log, stderr=subprocess.STDOUT, env=fx.cli_env())
  base = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 90
    while True:
      try:
        tags = _get(f"{base}/data/plugin/scalars/tags")
        if any(set(TAGS) <= set(run_tags) for run_tags in tags.values()):
          break
      except OSError:
        pass
      if process.poll() is not None or time.time() > deadline:
        log.flush()
        with open(log.name) as f:
          raise AssertionError("TensorBoard did not serve the run's scalars:\n"
                               + f.read()[-3000:])
      time.sleep(1)
    yield base, tags
  finally:
    process.terminate()
    try:
      process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      process.kill()
    log.close()


def test_scalars_api_holds_the_runs_values(run_dir, tensorboard):
  base, tags = tensorboard
  written = _event_scalars(run_dir)
  runs = [run for run, run_tags in tags.items() if set(TAGS) <= set(run_tags)]
  assert len(runs) == 1, tags  # one run: the chief's summaries
  for tag in TAGS:
    query = urllib.parse.urlencode({"run": runs[0], "tag": tag})
    points = _get(f"{base}/data/plugin/scalars/scalars?{query}")
    served = {int(step): value for _, step, value in points}
    assert served, tag
    assert sorted(served) == sorted(written[tag]), tag
    for step, value in served.items():
      np.testing.assert_allclose(value, written[tag][step], rtol=1e-6,
                                 err_msg=tag)
  # Values that mean something: a positive loss and LR, a rate, an error in %.
  losses = _get(f"{base}/data/plugin/scalars/scalars?" + urllib.parse.urlencode(
      {"run": runs[0], "tag": "train/loss"}))
  assert all(v > 0 for _, _, v in losses)
  errors = written["eval/top1_error"].values()
  assert all(0.0 <= e <= 100.0 for e in errors)
  assert all(v > 0 for v in written["train/examples_per_sec"].values())
  assert max(written["train/learning_rate"].values()) == pytest.approx(0.05)


def _chromium():
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


def test_scalars_dashboard_screenshot(run_dir, tensorboard, tmp_path):
  browser = _chromium()
  if browser is None:
    pytest.skip("no Chromium on this machine (.ci/run installs Debian's "
                "chromium; `apt-get install chromium` here)")
  base, _ = tensorboard
  shot = tmp_path / "scalars.png"
  # Chromium puts a Unix socket in TMPDIR; sandboxed test dirs (Bazel) can
  # exceed the 107-byte socket path limit, so give it a short one.
  try:
    short = tempfile.mkdtemp(prefix="chr", dir="/tmp")
  except OSError:
    short = str(tmp_path)
  env = dict(os.environ, TMPDIR=short)
  result = subprocess.run(
      [browser, "--headless", "--no-sandbox", "--disable-gpu",
       "--disable-background-networking", "--disable-component-update",
       "--no-first-run", "--disable-sync", "--hide-scrollbars",
       f"--user-data-dir={os.path.join(short, 'profile')}",
       "--window-size=1280,900",
       "--virtual-time-budget=15000", f"--screenshot={shot}",
       f"{base}/?runFilter=&tagFilter=train#scalars"],
      capture_output=True, text=True, timeout=120, check=False, env=env)
  shutil.rmtree(short, ignore_errors=True)
  assert result.returncode == 0 and shot.exists(), result.stderr[-3000:]
  image = tf.io.decode_png(shot.read_bytes(), channels=3).numpy()
  assert image.shape[0] >= 800 and image.shape[1] >= 1200
  # A rendered dashboard, not a blank or error page: many distinct colours
  # (charts, text, the orange TensorBoard header).
  colours = np.unique(image.reshape(-1, 3)[::7], axis=0)
  assert len(colours) > 50, len(colours)
  header = image[:40].reshape(-1, 3).mean(axis=0)
  assert header[0] > 200 and header[2] < 120, header  # orange-ish bar
  saved = os.environ.get("PYRAMIDNET_SCREENSHOT_DIR")
  if saved:
    os.makedirs(saved, exist_ok=True)
    shutil.copy(shot, os.path.join(saved, "tensorboard_scalars.png"))

"""TensorBoard shows a real run: HTTP API values and headless-browser screenshots.

Trains a tiny model (with evaluation and histograms), starts TensorBoard on
127.0.0.1 over its model_dir, and checks through TensorBoard's own HTTP API
that our scalar tags hold exactly the values the run wrote (read
independently from the event files), that the hparams dashboard has the
experiment's settings with metric values (with the model dir and with a
parent of it as --logdir), and that the graph, images, text and histograms
dashboards have data. Then headless Chromium (Debian's `chromium`, installed
by .ci/run) screenshots every one of those dashboards; that part skips with a
message only where no Chromium can be found.
"""
import contextlib

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
      "--log_every_steps=2", "--eval_every_epochs=1", "--lr=0.05",
      "--histogram_every_steps=4"])
  assert result.returncode == 0, result.stderr[-3000:]
  return model_dir


@contextlib.contextmanager
def _serve(logdir: str):
  """TensorBoard over ``logdir`` on a free port; yields (base URL, tags)."""
  port = _free_port()
  log = open(os.path.join(os.path.dirname(logdir.rstrip("/")),
                          f"tensorboard_{port}.log"), "w")
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}",
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


@pytest.fixture(scope="module")
def tensorboard(run_dir):
  with _serve(run_dir) as served:
    yield served


def _post(url: str, body: dict):
  request = urllib.request.Request(
      url, data=json.dumps(body).encode(),
      headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
  with urllib.request.urlopen(request, timeout=30) as response:
    return json.loads(response.read().decode())


def _hparams(base: str):
  experiment = _post(f"{base}/data/plugin/hparams/experiment",
                     {"experimentName": ""})
  groups = _post(f"{base}/data/plugin/hparams/session_groups", {
      "experimentName": "", "startIndex": 0, "sliceSize": 10,
      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                          "STATUS_FAILURE", "STATUS_RUNNING"],
      "colParams": []})
  return experiment, groups.get("sessionGroups", [])


def test_hparams_show_the_experiments_settings_and_metric_values_with_either_logdir(
    run_dir, tensorboard):
  written = _event_scalars(run_dir)
  last_error = written["eval/top1_error"][max(written["eval/top1_error"])]
  with _serve(os.path.dirname(run_dir)) as parent:
    for base in (tensorboard[0], parent[0]):
      experiment, groups = _hparams(base)
      names = {info["name"] for info in experiment["hparamInfos"]}
      assert {"depth", "alpha", "lr", "batch_size", "weight_decay",
              "dtype"} <= names
      assert not names & {"model_dir", "data_dir", "slurm_port_base",
                          "cpu_devices", "log_every_steps", "steps_per_loop"}
      metrics = {m["name"]["tag"]: m for m in experiment["metricInfos"]}
      assert "eval/top1_error" in metrics
      assert metrics["eval/top1_error"]["displayName"] == (
          "eval top-1 error (%)")
      assert len(groups) == 1, groups
      values = {m["name"]["tag"]: m["value"] for m in groups[0]["metricValues"]}
      assert values.get("eval/top1_error") == pytest.approx(last_error), (
          base, groups[0])
      assert "train/loss" in values


def test_graph_images_text_and_histograms_dashboards_have_data(tensorboard):
  base, _ = tensorboard
  listing = _get(f"{base}/data/plugins_listing")
  for plugin in ("scalars", "images", "histograms", "text", "hparams",
                 "graphs", "timeseries"):
    assert listing[plugin]["enabled"], (plugin, listing[plugin])
  runs = _get(f"{base}/data/plugin/graphs/info")
  (run,) = [name for name, info in runs.items()
            if info.get("tags", {}).get("train_step", {}).get("op_graph")]
  with urllib.request.urlopen(f"{base}/data/plugin/graphs/graph?" +
                              urllib.parse.urlencode({
                                  "run": run, "tag": "train_step",
                                  "conceptual": "false"}),
                              timeout=30) as response:
    graph = response.read().decode()
  assert graph.count("node {") > 50  # the train step's ops
  assert "Conv2D" in graph
  text_tags = _get(f"{base}/data/plugin/text/tags")
  assert any("flags" in tags for tags in text_tags.values())
  image_tags = _get(f"{base}/data/plugin/images/tags")
  assert any("train/augmented_images" in tags for tags in image_tags.values())
  histogram_tags = _get(f"{base}/data/plugin/histograms/tags")
  flat = [t for tags in histogram_tags.values() for t in tags]
  assert any(t.startswith("weights/") for t in flat)
  assert any(t.startswith("batch_norm/") for t in flat)


def test_time_series_opens_on_scalars_not_histograms(run_dir):
  """Histograms are opt-in: without the flag a run writes none."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  model_dir = os.path.join(os.path.dirname(run_dir), "no_histograms")
  data = os.path.join(os.path.dirname(run_dir), "data")
  result = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
      f"--data_dir={data}", f"--model_dir={model_dir}", "--nobottleneck",
      "--batch_size=16", "--train_steps=2", "--log_every_steps=1"])
  assert result.returncode == 0, result.stderr[-3000:]
  acc = event_accumulator.EventAccumulator(os.path.join(model_dir,
                                                        "tensorboard"))
  acc.Reload()
  tensors = acc.Tags()["tensors"]
  assert "train/loss" in tensors
  assert not [t for t in tensors if t.startswith(("weights/", "batch_norm/"))]


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


DASHBOARDS = ("timeseries", "scalars", "images", "histograms", "text",
              "hparams", "graphs")


@pytest.mark.parametrize("dashboard", DASHBOARDS)
def test_dashboard_screenshot(run_dir, tensorboard, tmp_path, dashboard):
  browser = _chromium()
  if browser is None:
    pytest.skip("no Chromium on this machine (.ci/run installs Debian's "
                "chromium; `apt-get install chromium` here)")
  base, _ = tensorboard
  shot = tmp_path / f"{dashboard}.png"
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
       f"{base}/#{dashboard}"],
      capture_output=True, text=True, timeout=180, check=False, env=env)
  shutil.rmtree(short, ignore_errors=True)
  assert result.returncode == 0 and shot.exists(), result.stderr[-3000:]
  image = tf.io.decode_png(shot.read_bytes(), channels=3).numpy()
  assert image.shape[0] >= 800 and image.shape[1] >= 1200
  # A rendered dashboard, not a blank or error page: many distinct colours
  # (charts, text, the orange TensorBoard header).
  colours = np.unique(image.reshape(-1, 3)[::7], axis=0)
  assert len(colours) > 50, (dashboard, len(colours))
  header = image[:40].reshape(-1, 3).mean(axis=0)
  assert header[0] > 200 and header[2] < 120, header  # orange-ish bar
  saved = os.environ.get("PYRAMIDNET_SCREENSHOT_DIR")
  if saved:
    os.makedirs(saved, exist_ok=True)
    shutil.copy(shot, os.path.join(saved, f"tensorboard_{dashboard}.png"))

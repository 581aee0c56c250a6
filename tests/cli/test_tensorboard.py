"""TensorBoard shows real runs: HTTP API values and headless-browser screenshots.

Trains two tiny experiments once per module under one parent directory: the
default output with evaluation and a profiler trace, and a shorter one with
another alpha and histograms. TensorBoard on 127.0.0.1, over one model dir and
over the parent, is checked through its own HTTP API: train and eval are two
runs with the same scalar tags (their curves overlay) holding exactly the
values in the event files (read independently), every scalar has a
description with its unit, Time Series opens on the loss and error curves,
the hparams dashboard has every experiment's settings with metric values
(architecture columns shown by default) with either logdir, the graph,
images, text and histograms dashboards have data, and the profile plugin
(the ``profile`` extra) lists the trace's tools and serves its data. Then
headless Chromium (Debian's ``chromium``, installed by .ci/run) screenshots
every dashboard; that part skips with a message only where no Chromium can
be found.
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

# The documented contract (pyramidnet_tf/training/summaries.py, README).
SHARED_TAGS = ("metrics/loss", "metrics/top1_error", "metrics/top5_error")
TRAIN_TAGS = SHARED_TAGS + (
    "schedule/learning_rate", "speed/step_time", "speed/examples_per_sec",
    "speed/examples_per_sec_per_worker")
EVAL_TAGS = SHARED_TAGS
# A word of each description that names the unit.
UNITS = {"metrics/loss": "nats", "metrics/top1_error": "%",
         "metrics/top5_error": "%", "schedule/learning_rate": "no unit",
         "speed/step_time": "Seconds per training step",
         "speed/examples_per_sec": "images per second",
         "speed/examples_per_sec_per_worker": "images per second per worker"}
MAIN, SECOND = "a4", "a6_histograms"   # model dirs under runs/


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(url: str, timeout: float = 30.0):
  with urllib.request.urlopen(url, timeout=timeout) as response:
    return json.loads(response.read().decode())


def _event_scalars(run_dir: str) -> dict:
  """{tag: {step: value}} read straight from one run directory's events."""
  values = {}
  for path in glob.glob(os.path.join(run_dir, "events.out.tfevents.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          values.setdefault(value.tag, {})[event.step] = float(
              tf.make_ndarray(value.tensor))
  return values


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The parent of two model dirs: MAIN (eval every epoch, a profiler trace
  of steps [2, 4), no histograms: the defaults) and SECOND (alpha 6, two
  steps, histograms, eval at the end)."""
  root = tmp_path_factory.mktemp("tb")
  data = fx.write_dataset(str(root / "data"), num_classes=4,
                          train_per_class=16, eval_per_class=4, size=16)
  parent = root / "runs"
  main = fx.run_cli("pyramidnet_tf.train", fx.TINY_MODEL + [
      f"--data_dir={data}", f"--model_dir={parent / MAIN}", "--nobottleneck",
      "--batch_size=16", "--epochs=2", "--steps_per_loop=2",
      "--log_every_steps=2", "--eval_every_epochs=1", "--lr=0.05",
      "--profile_steps=2,4"], timeout=900)
  assert main.returncode == 0, main.stderr[-3000:]
  args = [a for a in fx.TINY_MODEL if not a.startswith("--alpha")]
  second = fx.run_cli("pyramidnet_tf.train", args + [
      "--alpha=6", f"--data_dir={data}", f"--model_dir={parent / SECOND}",
      "--nobottleneck", "--batch_size=16", "--train_steps=2",
      "--log_every_steps=1", "--histogram_every_steps=2"], timeout=900)
  assert second.returncode == 0, second.stderr[-3000:]
  return str(parent)


def _has_runs(prefixes):
  def ready(tags: dict) -> bool:
    return all(set(TRAIN_TAGS) <= set(tags.get(f"{p}tensorboard/train", ()))
               and set(EVAL_TAGS) <= set(tags.get(f"{p}tensorboard/eval", ()))
               for p in prefixes)
  return ready


@contextlib.contextmanager
def _serve(logdir: str, ready):
  """TensorBoard over ``logdir`` on a free port once ``ready(scalar tags)``;
  yields its base URL."""
  port = _free_port()
  log = open(os.path.join(tempfile.gettempdir(), f"tensorboard_{port}.log"),
             "w")
  process = subprocess.Popen(
      [sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}",
       "--host=127.0.0.1", f"--port={port}", "--load_fast=false",
       "--reload_interval=1"],
      stdout=log, stderr=subprocess.STDOUT, env=fx.cli_env())
  base = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 900  # a hang guard, not a speed check
    while True:
      try:
        if ready(_get(f"{base}/data/plugin/scalars/tags")):
          break
      except OSError:
        pass
      if process.poll() is not None or time.time() > deadline:
        log.flush()
        with open(log.name) as f:
          raise AssertionError("TensorBoard did not serve the runs' scalars:\n"
                               + f.read()[-3000:])
      time.sleep(1)
    yield base
  finally:
    process.terminate()
    try:
      process.wait(timeout=20)
    except subprocess.TimeoutExpired:
      process.kill()
    log.close()
    os.remove(log.name)


@pytest.fixture(scope="module")
def tensorboard(runs):
  """TensorBoard with --logdir=<model_dir> (MAIN)."""
  with _serve(os.path.join(runs, MAIN), _has_runs([""])) as base:
    yield base


@pytest.fixture(scope="module")
def parent_tensorboard(runs):
  """TensorBoard with --logdir=<the parent of both model dirs>."""
  with _serve(runs, _has_runs([f"{MAIN}/", f"{SECOND}/"])) as base:
    yield base


def test_train_and_eval_are_two_runs_with_the_same_tags(tensorboard):
  assert set(_get(f"{tensorboard}/data/runs")) == {
      "tensorboard", "tensorboard/train", "tensorboard/eval"}
  tags = _get(f"{tensorboard}/data/plugin/scalars/tags")
  assert set(tags) == {"tensorboard/train", "tensorboard/eval"}, tags
  assert set(tags["tensorboard/train"]) == set(TRAIN_TAGS)
  assert set(tags["tensorboard/eval"]) == set(EVAL_TAGS)
  # One chart per shared tag with a line per run: Time Series' tag list
  # names both runs under each shared tag.
  series = _get(f"{tensorboard}/data/plugin/timeseries/tags")["scalars"]
  for tag in SHARED_TAGS:
    assert set(series["runTagInfo"]["tensorboard/train"]) >= {tag}
    assert set(series["runTagInfo"]["tensorboard/eval"]) >= {tag}


def test_every_scalar_has_a_description_with_its_unit(tensorboard):
  tags = _get(f"{tensorboard}/data/plugin/scalars/tags")
  for run, run_tags in tags.items():
    for tag, info in run_tags.items():
      assert UNITS[tag] in info["description"], (run, tag, info)
  eval_error = tags["tensorboard/eval"]["metrics/top1_error"]["description"]
  assert "eval split" in eval_error and "% of images" in eval_error


def test_scalars_api_holds_the_runs_values(runs, tensorboard):
  for run, run_tags in (("train", TRAIN_TAGS), ("eval", EVAL_TAGS)):
    written = _event_scalars(os.path.join(runs, MAIN, "tensorboard", run))
    assert set(written) == set(run_tags), (run, written)
    for tag in run_tags:
      query = urllib.parse.urlencode({"run": f"tensorboard/{run}", "tag": tag})
      points = _get(f"{tensorboard}/data/plugin/scalars/scalars?{query}")
      served = {int(step): value for _, step, value in points}
      assert served and sorted(served) == sorted(written[tag]), (run, tag)
      for step, value in served.items():
        np.testing.assert_allclose(value, written[tag][step], rtol=1e-6,
                                   err_msg=f"{run} {tag}")
  # Values that mean something: eval at both epochs, positive losses and
  # LR, rates, errors in %.
  train = _event_scalars(os.path.join(runs, MAIN, "tensorboard", "train"))
  evaluation = _event_scalars(os.path.join(runs, MAIN, "tensorboard", "eval"))
  assert sorted(evaluation["metrics/top1_error"]) == [4, 8]
  assert all(v > 0 for v in train["metrics/loss"].values())
  assert all(0.0 <= e <= 100.0 for e in evaluation["metrics/top1_error"]
             .values())
  assert all(v > 0 for v in train["speed/examples_per_sec"].values())
  assert all(v > 0 for v in train["speed/step_time"].values())
  assert max(train["schedule/learning_rate"].values()) == pytest.approx(0.05)


def _post(url: str, body: dict):
  request = urllib.request.Request(
      url, data=json.dumps(body).encode(),
      headers={"Content-Type": "application/json", "X-XSRF-Protected": "1"})
  with urllib.request.urlopen(request, timeout=30) as response:
    return json.loads(response.read().decode())


def _hparams(base: str):
  # The request the HParams dashboard sends (hparamsLimit 1000).
  experiment = _post(f"{base}/data/plugin/hparams/experiment",
                     {"experimentName": "", "hparamsLimit": 1000})
  groups = _post(f"{base}/data/plugin/hparams/session_groups", {
      "experimentName": "", "startIndex": 0, "sliceSize": 10,
      "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS",
                          "STATUS_FAILURE", "STATUS_RUNNING"],
      "colParams": []})
  return experiment, groups.get("sessionGroups", [])


def _last(values: dict) -> float:
  return values[max(values)]


def test_hparams_show_every_experiments_settings_and_metric_values_with_either_logdir(
    runs, tensorboard, parent_tensorboard):
  expected = {}   # alpha -> {(group, tag): last value}
  for name, alpha in ((MAIN, 4.0), (SECOND, 6.0)):
    expected[alpha] = {}
    for run in ("train", "eval"):
      for tag, values in _event_scalars(
          os.path.join(runs, name, "tensorboard", run)).items():
        expected[alpha][(run, tag)] = _last(values)
  for base, alphas in ((tensorboard, [4.0]), (parent_tensorboard, [4.0, 6.0])):
    experiment, groups = _hparams(base)
    infos = experiment["hparamInfos"]
    # The dashboard shows the first five hparams by default (those that
    # differ first, then in the server's order), by display name.
    default = sorted(infos, key=lambda i: not i.get("differs", False))[:5]
    assert [i.get("displayName") or i["name"] for i in default] == [
        "alpha", "bottleneck", "dataset", "depth", "mode"]
    shown = {i["displayName"]: i["name"] for i in infos}
    assert {"depth", "alpha", "lr", "batch_size", "weight_decay",
            "dtype"} <= set(shown)
    assert shown["depth"] == "arch/depth" and shown["lr"] == "optim/lr"
    assert not set(shown) & {"model_dir", "data_dir", "slurm_port_base",
                             "cpu_devices", "log_every_steps",
                             "steps_per_loop"}
    metrics = {(m["name"]["group"], m["name"]["tag"]): m["displayName"]
               for m in experiment["metricInfos"]}
    assert metrics[("eval", "metrics/top1_error")] == "eval top-1 error (%)"
    assert metrics[("train", "metrics/loss")] == "train loss"
    assert sorted(g["hparams"]["arch/alpha"] for g in groups) == alphas, (
        base, groups)
    for group in groups:
      values = {(m["name"]["group"], m["name"]["tag"]): m["value"]
                for m in group["metricValues"]}
      want = expected[group["hparams"]["arch/alpha"]]
      assert set(values) == set(metrics), (base, group)
      for key, value in values.items():
        assert value == pytest.approx(want[key], rel=1e-6), (base, key)


def test_time_series_opens_on_the_loss_and_error_curves(tensorboard):
  """Time Series groups cards by the tag's first component, in order, and
  opens the first two groups: metrics and schedule (images after them,
  histograms opt-in)."""
  listing = _get(f"{tensorboard}/data/plugin/timeseries/tags")
  tags = set(listing["images"]["tagRunSampledInfo"])
  for kind in ("scalars", "histograms"):
    for run_tags in listing[kind]["runTagInfo"].values():
      tags |= set(run_tags)
  groups = sorted({tag.split("/", 1)[0] for tag in tags})
  assert groups[:2] == ["metrics", "schedule"], groups
  assert "training_images/augmented" in tags
  assert not listing["histograms"]["runTagInfo"]  # opt-in


def test_graph_images_text_and_histograms_dashboards_have_data(
    tensorboard, parent_tensorboard):
  listing = _get(f"{tensorboard}/data/plugins_listing")
  for plugin in ("scalars", "images", "text", "hparams", "graphs",
                 "timeseries"):
    assert listing[plugin]["enabled"], (plugin, listing[plugin])
  info = _get(f"{tensorboard}/data/plugin/graphs/info")
  assert info["tensorboard/train"]["tags"]["train_step"]["op_graph"]
  with urllib.request.urlopen(f"{tensorboard}/data/plugin/graphs/graph?" +
                              urllib.parse.urlencode({
                                  "run": "tensorboard/train",
                                  "tag": "train_step",
                                  "conceptual": "false"}),
                              timeout=30) as response:
    graph = response.read().decode()
  assert graph.count("node {") > 50  # the train step's ops
  assert "Conv2D" in graph
  assert _get(f"{tensorboard}/data/plugin/text/tags") == {
      "tensorboard": ["flags"]}
  images = _get(f"{tensorboard}/data/plugin/images/tags")
  assert images["tensorboard/train"]["training_images/augmented"][
      "samples"] == 16
  histograms = _get(f"{parent_tensorboard}/data/plugin/histograms/tags")
  assert set(histograms) == {f"{SECOND}/tensorboard/train"}, histograms
  flat = list(histograms[f"{SECOND}/tensorboard/train"])
  assert any(t.startswith("weights/") for t in flat)
  assert any(t.startswith("batch_norm/") for t in flat)


def _gzip_json(url: str):
  """The profile plugin answers gzip-compressed JSON."""
  import gzip  # pylint: disable=g-import-not-at-top
  request = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
  with urllib.request.urlopen(request, timeout=120) as response:
    body = response.read()
    if response.headers.get("Content-Encoding") == "gzip":
      body = gzip.decompress(body)
  return json.loads(body.decode())


def test_profile_plugin_lists_the_trace_and_serves_its_tools(
    runs, tensorboard, parent_tensorboard):
  listing = _get(f"{tensorboard}/data/plugins_listing")
  assert listing.get("profile", {}).get("enabled"), (
      "no Profile tab: install the profile extra "
      "(pip install -e '.[cpu,profile]'; the test extra includes it)", listing)
  traces = glob.glob(os.path.join(runs, MAIN, "tensorboard", "train",
                                  "plugins", "profile", "*", "*.xplane.pb"))
  assert len(traces) == 1, traces
  session = os.path.basename(os.path.dirname(traces[0]))
  host = os.path.basename(traces[0])[:-len(".xplane.pb")]
  profile = f"{tensorboard}/data/plugin/profile"
  run = f"tensorboard/train/{session}"
  assert _gzip_json(f"{profile}/runs") == [run]
  assert _gzip_json(f"{parent_tensorboard}/data/plugin/profile/runs") == [
      f"{MAIN}/{run}"]
  tools = _gzip_json(f"{profile}/run_tools?" +
                     urllib.parse.urlencode({"run": run}))
  assert {"overview_page", "framework_op_stats"} <= set(tools), tools
  trace_viewer = [t for t in tools if t.startswith("trace_viewer")]
  assert trace_viewer, tools
  hosts = _gzip_json(f"{profile}/hosts?" + urllib.parse.urlencode(
      {"run": run, "tag": "framework_op_stats"}))
  assert hosts == [{"hostname": host}]
  stats = json.dumps(_gzip_json(f"{profile}/data?" + urllib.parse.urlencode(
      {"run": run, "tag": "framework_op_stats", "host": host})))
  assert "Conv2DBackpropFilter" in stats  # the train step's ops
  events = _gzip_json(f"{profile}/data?" + urllib.parse.urlencode(
      {"run": run, "tag": trace_viewer[0], "host": host}))["traceEvents"]
  # The step marker: one host call of two steps, the one starting at step 2.
  markers = [e for e in events if e.get("name") == "train"]
  assert len(markers) == 1, markers


def _chromium():
  for name in ("chromium", "chromium-browser", "google-chrome"):
    path = shutil.which(name)
    if path:
      return path
  return None


# (dashboard, which TensorBoard): histograms are opt-in, so the parent's
# TensorBoard (with the second experiment) shows them.
DASHBOARDS = (("timeseries", "model_dir"), ("scalars", "model_dir"),
              ("images", "model_dir"), ("text", "model_dir"),
              ("hparams", "model_dir"), ("graphs", "model_dir"),
              ("profile", "model_dir"), ("histograms", "parent"))


@pytest.mark.parametrize("dashboard,logdir", DASHBOARDS)
def test_dashboard_screenshot(tensorboard, parent_tensorboard, tmp_path,
                              dashboard, logdir):
  browser = _chromium()
  if browser is None:
    pytest.skip("no Chromium on this machine (.ci/run installs Debian's "
                "chromium; `apt-get install chromium` here)")
  base = tensorboard if logdir == "model_dir" else parent_tensorboard
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

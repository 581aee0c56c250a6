"""The describe CLI: widths, parameters, output dim and FLOPs from flags."""

import json
import os
import subprocess
import sys

import pytest

from tests import REPO_ROOT
from pyramidnet_tf.model import complexity
from pyramidnet_tf.model import widths

REPO = REPO_ROOT


def _describe(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, "-m", "pyramidnet_tf.describe",
                         *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=120, check=False)


def test_table_for_the_issue_example():
  result = _describe("--depth=164", "--alpha=48", "--bottleneck",
                     "--dataset=cifar100")
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert "total parameters:          1,738,572" in out
  assert "without BN (conv + fc):  1,694,828" in out
  assert "output feature dimension:  256" in out
  assert "stage1: 17,18,19,20,20,21" in out
  assert "stage3      18      2      49..64     256      8x8" in out
  assert "forward FLOPs per image:" in out


def test_json_and_flagfile(tmp_path):
  flagfile = tmp_path / "row.flags"
  flagfile.write_text("# ImageNet PyramidNet-200 alpha=300\n"
                      "--dataset=imagenet\n--depth=200\n--alpha=300\n")
  result = _describe(f"--flagfile={flagfile}", "--json")
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  assert report["parameters"] == 62_368_168
  assert report["parameters_without_bn"] == 62_082_432
  assert report["num_features"] == 1456
  assert [s["units"] for s in report["stages"][1:-1]] == [3, 24, 36, 3]
  assert report["stages"][-2]["output_size"] == 7
  assert report["flops"] == 2 * report["macs"]


@pytest.mark.parametrize("flagfile,params", [
    ("flags/cifar100/pyramidnet164_a48_bottleneck.flags", "1,738,572"),
    ("flags/imagenet/pyramidnet200_a450.flags", "116,775,213"),
    ("flags/smoke.flags", "84,765"),  # --dataset=synthetic: its shape
])
def test_trainer_flagfiles_describe_their_network(flagfile, params):
  result = _describe(f"--flagfile={flagfile}", "--noshow_widths")
  assert result.returncode == 0, result.stderr
  assert f"total parameters:          {params}" in result.stdout


def test_bad_flags_name_the_flag_and_the_choices():
  result = _describe("--depth=111", "--nobottleneck")
  assert result.returncode != 0
  assert ("depth must be 6n+2 for basic units; nearest valid: 110, 116"
          in result.stderr)
  result = _describe("--mode=sub")
  assert result.returncode != 0
  assert "flag --mode=sub: value should be one of <add|mul>" in result.stderr


def test_macs_of_a_basic_cifar_net_by_hand():
  # PyramidNet-20 alpha=12 basic at 32x32: count every conv by hand.
  arch = widths.architecture("cifar10", 20, 12, False)
  parts = complexity.report(arch, 10, 32)
  p = arch.flat_planes
  expected = 3 * 16 * 9 * 32 * 32  # stem
  cin, size = 16, 32
  for i, planes in enumerate(p):
    if i in (3, 6):
      size //= 2
    expected += (cin * planes + planes * planes) * 9 * size * size
    cin = planes
  expected += cin * 10
  assert complexity.total_macs(parts) == expected


@pytest.mark.parametrize("size,out", [(32, 8), (64, 16), (33, 9)])
def test_feature_map_sizes_follow_pytorch(size, out):
  arch = widths.architecture("cifar10", 20, 12, False)
  assert complexity.report(arch, 10, size)[-2].output_size == out


def test_memory_per_replica_and_published_error_of_a_paper_row():
  result = _describe("--flagfile=flags/cifar100/pyramidnet272_a200_bottleneck.flags",
                     "--json", "--replicas=4", "--recompute=unit")
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout)
  memory = report["memory"]
  assert memory["batch_per_replica"] == 32   # the flagfile's 128 over 4
  assert memory["recompute"] == "unit" and memory["channel_multiple"] == 1
  by = memory["total_by_recompute"]
  assert memory["estimate"]["total"] == by["unit"] < by["none"]
  assert report["published"] == {
      "error": "16.35 % top-1",
      "flagfile": "flags/cifar100/pyramidnet272_a200_bottleneck.flags"}
  text = _describe("--flagfile=flags/imagenet/pyramidnet200_a450.flags",
                   "--batch_size=64", "--noshow_widths").stdout
  assert "training memory per replica (batch 64, float32" in text
  assert ("published error: 20.11 % top-1 / 5.43 % top-5 (the paper row of "
          "flags/imagenet/pyramidnet200_a450.flags)") in text


def test_no_published_error_off_the_paper_rows_and_bad_replicas():
  result = _describe("--depth=20", "--alpha=12", "--nobottleneck", "--json")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["published"] is None
  bad = _describe("--depth=20", "--alpha=12", "--nobottleneck",
                  "--replicas=3")
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert "--batch_size must be a positive multiple of --replicas=3" in (
      bad.stderr)

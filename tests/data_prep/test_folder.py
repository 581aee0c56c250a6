"""data_prep.folder: users' own class folders."""

import collections
import json
import os
import re

import pytest

from data_prep import DataPrepError
from data_prep import folder
from pyramidnet_tf import images
from tests import data_prep_fixtures as fx


def _source(root):
  files = {}
  for c, name in enumerate(["zebra", "apple", "moth"]):
    for i in range(10):
      files[f"{name}/{i:02d}.jpg"] = fx.jpeg(20 + i, 24 + c, seed=10 * c + i)
  files["apple/more/deep.png"] = fx.png()
  files["moth/x.bmp"] = fx.encode(fx.pixels(9, 9, 1), "BMP")
  files["moth/x.gif"] = fx.encode(fx.pixels(9, 9, 2), "GIF")
  files["moth/x.webp"] = fx.encode(fx.pixels(9, 9, 3), "WEBP")
  files["zebra/notes.txt"] = b"this is not an image"
  files["zebra/.DS_Store"] = b"\0\0\0\1Bud1"
  return fx.write_tree(str(root), files)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  return _source(tmp_path_factory.mktemp("pets"))


def test_converts_every_format_and_rejects_non_images(source, tmp_path):
  summary = folder.convert(source, str(tmp_path), val_fraction=0.2, max_rejected=1,
                           train_shards=2, val_shards=1, dataset_name="pets")
  assert summary.exit_code == 0
  total = sum(s.seen for s in summary.splits.values())
  assert total == 35  # 30 JPEGs + png, bmp, gif, webp + notes.txt; .DS_Store is skipped
  assert sum(s.repaired for s in summary.splits.values()) == 4
  assert sum(s.rejected for s in summary.splits.values()) == 1
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["dataset"] == "pets" and manifest["class_names"] == ["apple", "moth", "zebra"]
  assert [r["image"] for r in manifest["rejected"]] == ["zebra/notes.txt"]
  assert manifest["rejected"][0]["reason"].startswith("not a recognised image")
  written = collections.Counter()
  for split, entry in manifest["splits"].items():
    for shard in entry["shards"]:
      for record in fx.read_records(str(tmp_path / shard["file"])):
        name = record["image/filename"].decode()
        assert record["image/class/label"] == manifest["class_names"].index(name.split("/")[0])
        assert images.jpeg_is_clean(record["image/encoded"]) is None
        written[split, name] += 1
  # round(0.2 * n) inputs of each class (apple 11, moth 13, zebra 11) went to validation.
  _, splits = folder.plan(source, 0.2)
  planned = collections.Counter((split, i.key.split("/")[0]) for split, items in splits.items()
                                for i in items)
  assert planned == {("validation", "apple"): 2, ("train", "apple"): 9,
                     ("validation", "moth"): 3, ("train", "moth"): 10,
                     ("validation", "zebra"): 2, ("train", "zebra"): 9}
  expected = {(split, i.key) for split, items in splits.items() for i in items
              if i.key != "zebra/notes.txt"}
  assert set(written) == expected and set(written.values()) == {1}


def test_rejection_fails_the_run_by_default(source, tmp_path):
  summary = folder.convert(source, str(tmp_path))
  assert summary.exit_code == 1
  assert not (tmp_path / "manifest.json").exists()


def test_deterministic_and_seeded_split(source, tmp_path):
  a = folder.convert(source, str(tmp_path / "a"), max_rejected=1)
  b = folder.convert(source, str(tmp_path / "b"), max_rejected=1)
  assert a.exit_code == b.exit_code == 0
  assert fx.dir_bytes(str(tmp_path / "a")) == fx.dir_bytes(str(tmp_path / "b"))
  _, one = folder.plan(source, 0.3, seed=0)
  _, two = folder.plan(source, 0.3, seed=1)
  assert {i.key for i in one["validation"]} != {i.key for i in two["validation"]}


def test_no_validation_split(source):
  _, splits = folder.plan(source, 0.0)
  assert list(splits) == ["train"] and len(splits["train"]) == 35


@pytest.mark.parametrize("layout,message", [
    ({"a.jpg": b"x", "cls/b.jpg": b"x"}, "found files at the top level: a.jpg"),
    ({".hidden": b"x"}, "no class subfolders"),
    ({"cls/.hidden": b"x"}, r"class folder cls/ holds no files"),
])
def test_layout_errors(layout, message, tmp_path):
  fx.write_tree(str(tmp_path), layout)
  with pytest.raises(DataPrepError, match=message):
    folder.plan(str(tmp_path))


def test_bad_val_fraction(source):
  with pytest.raises(DataPrepError, match=r"--val_fraction=1.0: must be at least 0 and below 1"):
    folder.plan(source, 1.0)
  with pytest.raises(DataPrepError, match=r"--val_fraction=0.01 rounds to no validation"):
    folder.plan(source, 0.01)


def test_cli(source, tmp_path):
  proc = fx.run_cli("folder", f"--source={source}", f"--output_dir={tmp_path}",
                    "--val_fraction=0.2", "--max_rejected=1", "--workers=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "total     : seen 35 = written 30 + repaired 4 + rejected 1" in proc.stdout
  assert re.search(r"^rejected: (train|validation) zebra/notes.txt: not a recognised image",
                   proc.stdout, re.M)
  assert "ignoring 1 hidden files or folders" in proc.stderr
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["dataset"] == os.path.basename(source)

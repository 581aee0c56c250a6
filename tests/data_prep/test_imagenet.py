"""data_prep.imagenet and imagenet_labels: tars read in place, repairs, every label format."""

import json
import os

import pytest

from data_prep import DataPrepError
from data_prep import imagenet
from data_prep import imagenet_labels
from pyramidnet_tf import images
from data_prep import planning
from data_prep import writer
from tests import data_prep_fixtures as fx

SYNSETS = fx.SYNSETS


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("ilsvrc")
  train = fx.ilsvrc_train()
  val_files, val_labels = fx.ilsvrc_val(12)
  names = sorted(val_files)
  gt, meta = fx.write_devkit(str(root / "devkit"), val_labels)
  paths = {
      "train_tar": fx.write_train_tar(str(root / "ILSVRC2012_img_train.tar"), train),
      "train_dir": fx.write_train_folder(str(root / "train"), train),
      "val_tar": fx.write_val_tar(str(root / "ILSVRC2012_img_val.tar"), val_files),
      "val_dir": fx.write_tree(str(root / "val"), val_files),
      "val_synset_dir": fx.write_tree(str(root / "val_by_synset"), {
          f"{s}/{n}": val_files[n] for n, s in zip(names, val_labels)}),
      "tfds": fx.write_tfds_labels(str(root / "validation_labels.txt"), val_labels),
      "kaggle": fx.write_kaggle_csv(str(root / "LOC_val_solution.csv"), names, val_labels),
      "devkit_gt": gt,
      "devkit_meta": meta,
      "devkit_dir": str(root / "devkit"),
      "devkit_tgz": fx.write_tar(str(root / "ILSVRC2012_devkit_t12.tar.gz"), {
          "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt":
              open(gt, "rb").read(),
          "ILSVRC2012_devkit_t12/data/meta.mat": open(meta, "rb").read()}, "w:gz"),
  }
  return {"paths": paths, "train": train, "val_files": val_files, "val_labels": val_labels,
          "root": root}


def _convert(out, **kw):
  kw.setdefault("train_shards", 3)
  kw.setdefault("val_shards", 2)
  kw.setdefault("max_rejected", 1)
  return imagenet.convert(str(out), **kw)


def _records(out, split):
  manifest = json.loads((out / "manifest.json").read_text())
  records = []
  for shard in manifest["splits"][split]["shards"]:
    records.extend(fx.read_records(str(out / shard["file"])))
  return {r["image/filename"].decode(): r for r in records}


@pytest.fixture(scope="module")
def converted(inputs, tmp_path_factory):
  out = tmp_path_factory.mktemp("converted")
  p = inputs["paths"]
  summary = _convert(out, train=p["train_tar"], val=p["val_tar"], val_labels=p["tfds"])
  return out, summary


def test_train_tar_counts_repairs_and_rejections(converted):
  out, summary = converted
  train = summary.splits["train"]
  assert (train.seen, train.written, train.repaired, train.rejected) == (24, 20, 3, 1)
  assert train.seen == train.written + train.repaired + train.rejected
  manifest = json.loads((out / "manifest.json").read_text())
  repaired = {r["image"]: r["reason"] for r in manifest["repaired"]}
  assert repaired == {
      "n01440764_cmyk.JPEG": "CMYK JPEG re-encoded as RGB JPEG",
      "n01440764_png.JPEG": "PNG data re-encoded as RGB JPEG",
      "n01440764_gray.JPEG": "grayscale JPEG re-encoded as RGB JPEG"}
  [rejected] = manifest["rejected"]
  assert rejected["image"] == "n01440764_trunc.JPEG" and rejected["split"] == "train"
  assert rejected["reason"].startswith("truncated JPEG")
  assert manifest["splits"]["train"]["num_examples"] == 23


def test_records_are_clean_jpegs_with_sorted_synset_labels(converted, inputs):
  out, _ = converted
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["synsets"] == manifest["class_names"] == SYNSETS
  assert manifest["label_base"] == 0 and manifest["image"]["encoding"] == "jpeg"
  train = _records(out, "train")
  assert len(train) == 23
  for name, record in train.items():
    synset = name.split("_")[0]
    assert record["image/class/synset"].decode() == synset
    assert record["image/class/label"] == SYNSETS.index(synset)
    assert record["image/format"] == b"JPEG"
    assert images.jpeg_is_clean(record["image/encoded"]) is None
    header = images.jpeg_header(record["image/encoded"])
    assert (header.height, header.width) == (record["image/height"], record["image/width"])
    original = inputs["train"][synset][name]
    if images.jpeg_is_clean(original) is None:
      assert record["image/encoded"] == original  # clean JPEGs pass through untouched
  val = _records(out, "validation")
  for name, synset in zip(sorted(inputs["val_files"]), inputs["val_labels"]):
    assert val[name]["image/class/synset"].decode() == synset
    assert val[name]["image/class/label"] == SYNSETS.index(synset)
    assert val[name]["image/encoded"] == inputs["val_files"][name]


@pytest.mark.parametrize("labels", ["kaggle", "devkit_gt", "devkit_dir", "devkit_tgz"])
def test_every_label_format_gives_the_same_shards(labels, converted, inputs, tmp_path):
  out, _ = converted
  p = inputs["paths"]
  _convert(tmp_path, train=p["train_tar"], val=p["val_tar"], val_labels=p[labels])
  reference, got = fx.dir_bytes(str(out)), fx.dir_bytes(str(tmp_path))
  assert [n for n in reference if reference[n] != got[n]] == ["manifest.json"]
  manifest = json.loads(got["manifest.json"])
  if labels.startswith("devkit"):
    assert manifest["class_descriptions"] == [f"words of {s}" for s in SYNSETS]


def test_devkit_ids_are_mapped_through_meta_mat(inputs):
  p = inputs["paths"]
  labels = imagenet_labels.read(p["devkit_gt"])
  assert labels.kind == "devkit"
  assert labels.classes == SYNSETS  # the leaves only, sorted
  # The fixture's ID order is reversed: ID 1 is the last synset alphabetically. Using the IDs
  # as class indices would have scrambled every label.
  first_id = int(open(p["devkit_gt"]).readline())
  assert labels.by_name["ILSVRC2012_val_00000001"] == fx.devkit_order(SYNSETS)[first_id - 1]
  assert labels.by_name["ILSVRC2012_val_00000001"] != SYNSETS[first_id - 1]
  names = sorted(inputs["val_files"])
  assert imagenet_labels.assign(labels, names) == inputs["val_labels"]


def test_folders_and_tars_give_the_same_shards(converted, inputs, tmp_path):
  out, _ = converted
  p = inputs["paths"]
  _convert(tmp_path / "a", train=p["train_dir"], val=p["val_dir"], val_labels=p["tfds"])
  _convert(tmp_path / "b", train=p["train_dir"], val=p["val_synset_dir"])
  reference = fx.dir_bytes(str(out))
  for sub in ("a", "b"):
    got = fx.dir_bytes(str(tmp_path / sub))
    assert [n for n in reference if reference[n] != got[n]] == ["manifest.json"], sub


def test_folder_of_per_synset_tars(inputs, converted, tmp_path):
  out, _ = converted
  source = tmp_path / "tars"
  source.mkdir()
  for synset, files in inputs["train"].items():
    (source / f"{synset}.tar").write_bytes(fx.tar_bytes(files))
  _convert(tmp_path / "out", train=str(source))
  reference = fx.dir_bytes(str(out))
  got = fx.dir_bytes(str(tmp_path / "out"))
  assert all(got[n] == reference[n] for n in got if n.startswith("train"))


def test_label_offset_one_is_slim_style(inputs, tmp_path):
  p = inputs["paths"]
  _convert(tmp_path, train=p["train_tar"], val=p["val_tar"], val_labels=p["kaggle"],
           label_offset=1)
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert manifest["label_base"] == 1
  for split in ("train", "validation"):
    for name, record in _records(tmp_path, split).items():
      synset = record["image/class/synset"].decode()
      assert record["image/class/label"] == SYNSETS.index(synset) + 1


def test_val_only_with_devkit_uses_its_classes(inputs, tmp_path):
  p = inputs["paths"]
  _convert(tmp_path, val=p["val_tar"], val_labels=p["devkit_tgz"])
  manifest = json.loads((tmp_path / "manifest.json").read_text())
  assert list(manifest["splits"]) == ["validation"]
  assert manifest["class_names"] == SYNSETS


# ---------------------------------------------------------------------------------------
# Label problems: errors before anything is written.


def _untouched_after(error_match, tmp_path, **kw):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("previous content")
  with pytest.raises(DataPrepError, match=error_match):
    _convert(out, **kw)
  assert os.listdir(out) == ["keep.txt"]


def test_label_count_mismatch(inputs, tmp_path):
  p = inputs["paths"]
  short = fx.write_tfds_labels(str(tmp_path / "short.txt"), inputs["val_labels"][:-1])
  _untouched_after(r"has 11 labels but --val has 12 images", tmp_path, train=p["train_tar"],
                   val=p["val_tar"], val_labels=short)


def test_unknown_synset(inputs, tmp_path):
  p = inputs["paths"]
  labels = list(inputs["val_labels"])
  labels[4] = "n09999999"
  path = fx.write_tfds_labels(str(tmp_path / "bad.txt"), labels)
  _untouched_after(r"1 synsets that are not among the training synsets \(5\): 'n09999999'",
                   tmp_path, train=p["train_tar"], val=p["val_tar"], val_labels=path)


def test_kaggle_csv_missing_an_image(inputs, tmp_path):
  p = inputs["paths"]
  names = sorted(inputs["val_files"])
  path = fx.write_kaggle_csv(str(tmp_path / "LOC.csv"), names[1:], inputs["val_labels"][1:])
  _untouched_after(r"1 images have no label \(e.g. ILSVRC2012_val_00000001.JPEG\)", tmp_path,
                   val=p["val_tar"], val_labels=path)


def test_labels_disagreeing_with_synset_folders(inputs, tmp_path):
  p = inputs["paths"]
  labels = list(inputs["val_labels"])
  labels[0], labels[1] = labels[1], labels[0]
  path = fx.write_tfds_labels(str(tmp_path / "swapped.txt"), labels)
  _untouched_after("disagrees with the synset folders", tmp_path, val=p["val_synset_dir"],
                   val_labels=path)


def test_flat_val_without_labels(inputs, tmp_path):
  _untouched_after("need labels: pass --val_labels", tmp_path, val=inputs["paths"]["val_tar"])


def test_devkit_without_meta_mat(inputs, tmp_path):
  gt = tmp_path / "ILSVRC2012_validation_ground_truth.txt"
  gt.write_bytes(open(inputs["paths"]["devkit_gt"], "rb").read())
  with pytest.raises(DataPrepError, match="must be mapped through the devkit's meta.mat"):
    imagenet_labels.read(str(gt))
  labels = imagenet_labels.read(str(gt), inputs["paths"]["devkit_meta"])
  assert labels.kind == "devkit"


def test_unrecognised_label_file(tmp_path):
  path = tmp_path / "labels.txt"
  path.write_text("cat\ndog\n")
  with pytest.raises(DataPrepError, match="unrecognised content .*expected "
                     "validation_labels.txt"):
    imagenet_labels.read(str(path))


def test_tfds_labels_with_a_bad_line(tmp_path):
  path = tmp_path / "labels.txt"
  path.write_text("n01440764\nn0144076\n")
  with pytest.raises(DataPrepError, match="line 2: 'n0144076' is not a synset"):
    imagenet_labels.read(str(path))


# ---------------------------------------------------------------------------------------
# Unexpected layouts.


def test_val_tar_passed_as_train(inputs):
  with pytest.raises(DataPrepError, match=r"expected ILSVRC2012_img_train.tar .*found "
                     r"'ILSVRC2012_val_00000012.JPEG'.*is this the validation tar\?"):
    imagenet.list_train(inputs["paths"]["val_tar"])


def test_train_tar_passed_as_val(inputs):
  with pytest.raises(DataPrepError, match=r"expected ILSVRC2012_img_val.tar .*'n01440764.tar'.*"
                     r"is this the training tar\?"):
    imagenet.list_val(inputs["paths"]["train_tar"])


def test_compressed_train_tar(inputs, tmp_path):
  path = fx.write_tar(str(tmp_path / "train.tar.gz"),
                      {f"{s}.tar": fx.tar_bytes(f) for s, f in inputs["train"].items()}, "w:gz")
  with pytest.raises(DataPrepError, match="is gzip-compressed; expected ILSVRC2012_img_train.tar"):
    imagenet.list_train(path)


def test_inner_member_that_is_not_a_tar(tmp_path):
  path = fx.write_tar(str(tmp_path / "train.tar"), {"n01440764.tar": b"just bytes" * 100})
  with pytest.raises(DataPrepError, match="n01440764.tar is not a tar archive"):
    imagenet.list_train(path)


def test_train_folder_with_unexpected_entries(inputs, tmp_path):
  fx.write_train_folder(str(tmp_path), {"n01440764": inputs["train"]["n01440764"]})
  (tmp_path / "README.txt").write_text("hi")
  (tmp_path / "cats").mkdir()
  with pytest.raises(DataPrepError, match=r"found 'README.txt', 'cats/'"):
    imagenet.list_train(str(tmp_path))


def test_truncated_archive_is_an_error_naming_the_image(inputs, tmp_path):
  data = open(inputs["paths"]["val_tar"], "rb").read()
  path = tmp_path / "val.tar"
  path.write_bytes(data)
  entries = imagenet.list_val(str(path))
  last = max(entries, key=lambda e: e.source[2])
  path.write_bytes(data[:last.source[2] + 10])
  with pytest.raises(DataPrepError, match=f"ends at byte .* inside {last.key}.*truncated"):
    writer.read_source(planning.Item(last.key, last.filename, 0, last.size, last.source))


# ---------------------------------------------------------------------------------------
# The command line, with a process pool.


def test_cli_with_workers_exit_codes_and_identical_output(inputs, converted, tmp_path):
  out, _ = converted
  p = inputs["paths"]
  args = [f"--train={p['train_tar']}", f"--val={p['val_tar']}", f"--val_labels={p['tfds']}",
          f"--output_dir={tmp_path / 'out'}", "--train_shards=3", "--val_shards=2",
          "--workers=2"]
  proc = fx.run_cli("imagenet", *args)
  assert proc.returncode == 1, proc.stderr[-3000:]
  assert "rejected: train n01440764_trunc.JPEG: truncated JPEG" in proc.stdout
  assert "--max_rejected=1" in proc.stdout
  assert not (tmp_path / "out" / "manifest.json").exists()
  proc = fx.run_cli("imagenet", *args, "--max_rejected=1")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "total     : seen 36 = written 32 + repaired 3 + rejected 1  (5 shards, 5 kept" \
      in proc.stdout
  assert fx.dir_bytes(str(tmp_path / "out")) == fx.dir_bytes(str(out))

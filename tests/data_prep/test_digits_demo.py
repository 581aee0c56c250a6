"""data_prep.digits_demo: scikit-learn's digits as a class-folder tree."""

import os

import numpy as np
from PIL import Image
import pytest

from data_prep import DataPrepFlagError
from data_prep import digits_demo


def test_writes_every_digit_once(tmp_path):
  written, held = digits_demo.write_digits(str(tmp_path), holdout_per_class=2)
  assert (written, held) == (1777, 20)  # 1,797 images in the dataset
  classes = sorted(os.listdir(tmp_path / "images"))
  assert classes == [str(d) for d in range(10)]
  counts = [len(os.listdir(tmp_path / "images" / c)) for c in classes]
  assert sum(counts) == 1777 and min(counts) >= 170
  holdout = sorted(os.listdir(tmp_path / "holdout"))
  assert len(holdout) == 20 and holdout[0].startswith("0_")
  names = {n.split("_")[1] for n in holdout}
  in_folders = {n for c in classes for n in os.listdir(tmp_path / "images" / c)}
  assert not names & in_folders  # held-out images are not in the folder
  image = Image.open(tmp_path / "images" / "3" / sorted(
      os.listdir(tmp_path / "images" / "3"))[0])
  assert image.format == "JPEG" and image.size == (32, 32)
  assert image.mode == "RGB" and np.asarray(image).max() > 200


def test_deterministic_and_validated(tmp_path):
  digits_demo.write_digits(str(tmp_path / "a"), 1)
  digits_demo.write_digits(str(tmp_path / "b"), 1)
  path = os.path.join("images", "7", sorted(os.listdir(tmp_path / "a" / "images" / "7"))[5])
  assert (tmp_path / "a" / path).read_bytes() == (tmp_path / "b" / path).read_bytes()
  with pytest.raises(DataPrepFlagError, match="leaves no image of digit 0"):
    digits_demo.write_digits(str(tmp_path / "c"), 1000)

"""Writes scikit-learn's handwritten digits as an image folder (offline demo data).

    python -m data_prep.digits_demo --output_dir=DIR [--holdout_per_class=2]

scikit-learn ships the UCI 8x8 handwritten digits (1,797 real images, 10 classes) inside its
wheel, so this needs no network. Each image is scaled from 0..16 to 0..255, enlarged to 32x32
(bicubic) and saved as an RGB JPEG (quality 95, so data_prep.folder stores it untouched):

    DIR/images/<digit>/<index>.jpg     one class folder per digit, for data_prep.folder
    DIR/holdout/<digit>_<index>.jpg    the last --holdout_per_class images of every digit,
                                       kept out of the folder, for trying `predict`

The split is by dataset index, so every run writes the same files.
"""

import dataclasses
import io
import os
from typing import List, Optional

from absl import flags

from pyramidnet_tf import errors

from data_prep import DataPrepError
from data_prep import DataPrepFlagError
from data_prep import cli

IMAGE_SIZE = 32


def define_flags():
  flags.DEFINE_string("output_dir", None, "Folder to write images/ and holdout/ into.")
  flags.DEFINE_integer("holdout_per_class", 2,
                       "Images per digit kept out of images/ (written to holdout/).")
  errors.register_number_validator("holdout_per_class", low=0, integer=True)


GROUPS = (("Output", ("output_dir", "holdout_per_class")),)


def _jpeg(pixels_0_16):
  """32x32 RGB JPEG bytes of one 8x8 digit."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  gray = np.clip(np.asarray(pixels_0_16) * (255.0 / 16.0), 0, 255).astype(np.uint8)
  image = Image.fromarray(gray, "L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
  out = io.BytesIO()
  image.convert("RGB").save(out, format="JPEG", quality=95)
  return out.getvalue()


def write_digits(output_dir: str, holdout_per_class: int):
  """Writes the folder; returns (images written to images/, images in holdout/)."""
  try:
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise DataPrepError("data_prep.digits_demo needs scikit-learn: pip install -e '.[demo]'"
                        ) from None
  digits = datasets.load_digits()
  by_class = {}
  for index, label in enumerate(digits.target):
    by_class.setdefault(int(label), []).append(index)
  written = held = 0
  for label, indices in sorted(by_class.items()):
    keep = len(indices) - holdout_per_class
    if keep < 1:
      raise DataPrepFlagError(f"--holdout_per_class={holdout_per_class} leaves no image "
                              f"of digit {label} (it has {len(indices)})")
    class_dir = os.path.join(output_dir, "images", str(label))
    os.makedirs(class_dir, exist_ok=True)
    os.makedirs(os.path.join(output_dir, "holdout"), exist_ok=True)
    for position, index in enumerate(indices):
      if position < keep:
        path = os.path.join(class_dir, f"{index:04d}.jpg")
        written += 1
      else:
        path = os.path.join(output_dir, "holdout", f"{label}_{index:04d}.jpg")
        held += 1
      with open(path, "wb") as f:
        f.write(_jpeg(digits.images[index]))
  return written, held


@dataclasses.dataclass(frozen=True)
class DigitsCommand:
  """data_prep.digits_demo's command line (each field is the flag of its name).

  Attributes:
    output_dir: where images/ and holdout/ go (None when left out).
    holdout_per_class: images per digit kept out of images/.
  """
  output_dir: Optional[str]
  holdout_per_class: int


def _problems(command: DigitsCommand) -> List[Optional[str]]:
  return [cli.required(command.output_dir, "output_dir",
                       "the folder to write images/ and holdout/ into")]


def _main(command: DigitsCommand) -> int:
  written, held = write_digits(command.output_dir, command.holdout_per_class)
  print(f"wrote {written} digit images in 10 class folders to "
        f"{os.path.join(command.output_dir, 'images')} and {held} held-out images to "
        f"{os.path.join(command.output_dir, 'holdout')}")
  return 0


def run() -> None:
  define_flags()
  cli.run("data_prep.digits_demo", _main, config=DigitsCommand, groups=GROUPS,
          problems=_problems,
          doc=__doc__ + "\n" + cli.exit_codes_text(
              "finished: the images written",
              "an expected failure, named in one line (scikit-learn missing, a full disk)"))


if __name__ == "__main__":
  run()

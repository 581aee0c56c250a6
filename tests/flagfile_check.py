"""Runs flagfiles' exact networks through the trainer: one train step and the
end-of-training evaluation (graph-mode inference) on CPU, at a tiny batch.

    python -m tests.flagfile_check [--all | --ci | FLAGFILE ...]

Each flagfile runs as users run it, ``python -m pyramidnet_tf.train
--flagfile=F`` on a small data directory of its dataset's kind (CIFAR-format
records, or JPEG records with 1,000 classes for ImageNet), with only the
run's length and batch overridden (``--train_steps=1 --batch_size=2``), in a
process of its own: a process abort fails that flagfile alone. Checked: exit
status 0, one step taken, a finite training loss, a finite evaluation over
every evaluation example, and the model directory's network equal to the
flagfile's (its model flags, parsed as the trainer parses them).

``--ci`` runs one flagfile of each kind of network a flagfile can build
(``CI_FLAGFILES``: stem x unit type x widening x ShakeDrop level x batch
mixing); ``--all`` runs every flagfile under flags/ (what
``scripts/check_flagfiles.sh`` runs). Prints one line per flagfile and a
table at the end; exits 1 if any failed.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One flagfile of each kind of network the flagfiles build, the cheapest of
# its kind (tests/cli/test_flagfile_networks.py checks that every flagfile's
# kind is represented here).
CI_FLAGFILES = (
    "flags/cifar10/pyramidnet110_a48.flags",             # CIFAR basic add
    "flags/cifar100/pyramidnet110_mul_a4.75.flags",      # CIFAR basic mul
    "flags/cifar10/pyramidnet164_a48_bottleneck.flags",  # CIFAR bottleneck
    # CutMix; its network is flags/cifar100/pyramidnet200_a240_bottleneck's.
    "flags/recipes/cifar100_pyramidnet200_a240_cutmix.flags",
    "flags/recipes/cifar100_pyramidnet110_a270_shakedrop.flags",  # pixel
    "flags/recipes/cifar10_pyramidnet272_a200_shakedrop.flags",  # sample
    "flags/imagenet/pyramidnet101_a360_pytorch.flags",   # ImageNet
    "flags/demo.flags",
    "flags/smoke.flags",
)

# absl's flags are process-wide: one flagfile is parsed at a time.
_FLAGS_LOCK = threading.Lock()

TRAIN_EXAMPLES = 4
EVAL_EXAMPLES = 2
BATCH = 2


def all_flagfiles():
  return sorted(os.path.relpath(p, REPO) for p in glob.glob(
      os.path.join(REPO, "flags", "**", "*.flags"), recursive=True))


def flag_values(flagfile: str) -> dict:
  """--name=value pairs of a flagfile (--flag / --noflag as booleans)."""
  values = {}
  with open(os.path.join(REPO, flagfile)) as f:
    for line in f:
      line = line.strip()
      if not line.startswith("--"):
        continue
      name, sep, value = line[2:].partition("=")
      if sep:
        values[name] = value
      elif name.startswith("no"):
        values[name[2:]] = False
      else:
        values[name] = True
  return values


def kind(flagfile: str) -> tuple:
  """What decides which code paths a flagfile's network runs."""
  values = flag_values(flagfile)
  dataset = values.get("dataset", "cifar10")
  if dataset == "synthetic":
    dataset = values.get("synthetic_like", "cifar10")
  stem = "imagenet" if dataset == "imagenet" else "cifar"
  depth = int(values.get("depth", 110))
  bottleneck = values.get("bottleneck")
  if bottleneck is None:  # the paper's choice: CIFAR 110 basic, others not
    bottleneck = stem == "imagenet" or depth != 110
  shakedrop = (values.get("shakedrop_level", "batch")
               if values.get("shakedrop") is True else "none")
  mixing = ("cutmix" if float(values.get("cutmix_prob", 0)) > 0 else
            "mixup" if float(values.get("mixup_alpha", 0)) > 0 else "none")
  return (stem, "bottleneck" if bottleneck else "basic",
          values.get("mode", "add"), shakedrop, mixing)


def _write_data(directory: str, dataset: str, image_size: int):
  """A data_prep-format directory: CIFAR raw records, or JPEG records."""
  sys.path.insert(0, REPO)
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tests import train_fixtures as fx  # pylint: disable=g-import-not-at-top
  num_classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}[dataset]
  encoding = "jpeg" if dataset == "imagenet" else "raw"
  fx.write_examples(directory, dataset, num_classes,
                    {"train": TRAIN_EXAMPLES, "validation": EVAL_EXAMPLES},
                    size=image_size, encoding=encoding, shards=1,
                    rng=np.random.default_rng(0))


def data_dir_for(root: str, flagfile: str, cache: dict) -> str:
  """The flagfile's data directory under ``root``, written on first use."""
  values = flag_values(flagfile)
  dataset = values.get("dataset", "cifar10")
  if dataset == "synthetic":
    return ""
  if dataset not in cache:
    path = os.path.join(root, f"data_{dataset}")
    # ImageNet's pipeline crops and resizes: small JPEGs are enough.
    _write_data(path, dataset, 64 if dataset == "imagenet" else 32)
    cache[dataset] = path
  return cache[dataset]


def network_of(flagfile: str) -> dict:
  """The network the flagfile asks for, as ``describe`` reads it: the
  trainer's model flags parsed from the file (no TensorFlow needed)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.cli import model_flags  # pylint: disable=g-import-not-at-top
  from pyramidnet_tf.cli import train_flags  # pylint: disable=g-import-not-at-top,unused-import # noqa: F401
  from pyramidnet_tf.model import widths  # pylint: disable=g-import-not-at-top
  with _FLAGS_LOCK:
    return _parse_network(flags.FLAGS, flagfile, model_flags, widths)


def _parse_network(values, flagfile, model_flags, widths) -> dict:
  saved = values.flags_into_string() if values.is_parsed() else None
  try:
    values.unparse_flags()
    values(["train", f"--flagfile={os.path.join(REPO, flagfile)}"])
    dataset = values.dataset
    arch = model_flags.architecture()
    return {"dataset": dataset, "depth": arch.depth, "alpha": arch.alpha,
            "mode": arch.mode, "bottleneck": arch.bottleneck,
            "rounding": arch.rounding,
            "num_classes": values.num_classes or widths.NUM_CLASSES[dataset]}
  finally:
    values.unparse_flags()
    if saved is not None:
      values(["train", *[line for line in saved.splitlines() if line]])


def _env() -> dict:
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2",
             CUDA_VISIBLE_DEVICES="")
  env.pop("TF_CONFIG", None)
  return env


def _result(stderr: str):
  for line in reversed(stderr.splitlines()):
    if "result: {" in line:
      return json.loads(line.split("result: ", 1)[1])
  return None


def check(flagfile: str, root: str, cache: dict, timeout: float = 1800
          ) -> dict:
  """Trains ``flagfile``'s network one step and evaluates it; returns a
  row: flagfile, ok, seconds, what was checked or why it failed."""
  start = time.time()
  row = {"flagfile": flagfile, "kind": "/".join(kind(flagfile))}
  model_dir = os.path.join(
      root, flagfile[:-len(".flags")].replace(os.sep, "_"))
  args = [sys.executable, "-m", "pyramidnet_tf.train",
          f"--flagfile={flagfile}", f"--model_dir={model_dir}",
          "--train_steps=1", f"--batch_size={BATCH}",
          f"--eval_batch_size={BATCH}", "--steps_per_loop=1",
          "--log_every_steps=1", "--eval_at_end"]
  data_dir = data_dir_for(root, flagfile, cache)
  if data_dir:
    args.append(f"--data_dir={data_dir}")
  try:
    proc = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    return dict(row, ok=False, seconds=round(time.time() - start, 1),
                detail=f"no result within {timeout:.0f} s")
  row["seconds"] = round(time.time() - start, 1)
  tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
  if proc.returncode != 0:
    return dict(row, ok=False,
                detail=f"exit code {proc.returncode}: {tail[-600:]}")
  result = _result(proc.stderr)
  problems = []
  if result is None:
    problems.append("no result line")
  else:
    if result.get("step") != 1:
      problems.append(f"step {result.get('step')} != 1")
    loss = (result.get("train") or {}).get("loss")
    if not isinstance(loss, (int, float)) or loss != loss or abs(
        loss) == float("inf"):
      problems.append(f"training loss {loss!r}")
    evaluation = result.get("eval")
    if data_dir:
      if not evaluation:
        problems.append("no evaluation")
      elif evaluation.get("examples") != EVAL_EXAMPLES or not (
          evaluation["loss"] == evaluation["loss"]):
        problems.append(f"evaluation {evaluation}")
  if data_dir:
    with open(os.path.join(model_dir, "model_config.json")) as f:
      saved = json.load(f)
    for key, want in network_of(flagfile).items():
      if saved["model"].get(key) != want:
        problems.append(f"model_config.json {key} {saved['model'].get(key)}"
                        f" != the flagfile's {want}")
  if problems:
    return dict(row, ok=False, detail="; ".join(problems))
  detail = f"loss {result['train']['loss']:.3f}"
  if result.get("eval"):
    detail += (f", eval loss {result['eval']['loss']:.3f} on "
               f"{result['eval']['examples']} examples")
  return dict(row, ok=True, detail=detail)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("flagfiles", nargs="*")
  parser.add_argument("--all", action="store_true")
  parser.add_argument("--ci", action="store_true")
  parser.add_argument("--jobs", type=int, default=2,
                      help="trainer processes at once (default 2)")
  parser.add_argument("--json", action="store_true",
                      help="one JSON row per flagfile on stdout")
  args = parser.parse_args(argv)
  flagfiles = list(args.flagfiles)
  if args.all:
    flagfiles = all_flagfiles()
  elif args.ci:
    flagfiles = list(CI_FLAGFILES)
  if not flagfiles:
    parser.error("give flagfiles, --ci or --all")
  rows = []
  cache = {}
  start = time.time()
  with tempfile.TemporaryDirectory(prefix="flagfile_check_") as root:
    for flagfile in flagfiles:
      data_dir_for(root, flagfile, cache)
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
      for row in pool.map(lambda f: check(f, root, cache), flagfiles):
        rows.append(row)
        if args.json:
          print(json.dumps(row), flush=True)
        else:
          print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['seconds']:7.1f} s"
                f"  {row['flagfile']}: {row['detail']}", flush=True)
  if not args.json:
    print(f"\n{sum(r['ok'] for r in rows)} of {len(rows)} flagfiles passed "
          f"in {time.time() - start:.0f} s ({args.jobs} at a time)")
  return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
  sys.exit(main())

"""Flagfiles' exact networks train a step and evaluate on CPU, through the
trainer's command line (``tests/flagfile_check.py``).

CI runs one flagfile of each kind of network (``CI_FLAGFILES``); every
flagfile runs with ``bash scripts/check_flagfiles.sh``. The first test keeps
the two lists honest: a new kind of flagfile must get a CI representative.
"""

import concurrent.futures
import os

import pytest

from tests import flagfile_check


def test_every_kind_of_flagfile_network_has_a_ci_representative():
  kinds = {flagfile_check.kind(f) for f in flagfile_check.all_flagfiles()}
  ci_kinds = {flagfile_check.kind(f) for f in flagfile_check.CI_FLAGFILES}
  assert kinds == ci_kinds, sorted(kinds - ci_kinds)
  for flagfile in flagfile_check.CI_FLAGFILES:
    assert os.path.isfile(os.path.join(flagfile_check.REPO, flagfile))


def test_kinds_tell_the_code_paths_apart():
  kind = flagfile_check.kind
  assert kind("flags/cifar10/pyramidnet110_a48.flags") == (
      "cifar", "basic", "add", "none", "none")
  assert kind("flags/cifar10/pyramidnet164_a48_bottleneck.flags") == (
      "cifar", "bottleneck", "add", "none", "none")
  assert kind("flags/cifar100/pyramidnet110_mul_a8.flags")[2] == "mul"
  assert kind("flags/recipes/cifar100_pyramidnet110_a270_shakedrop.flags")[
      3] == "pixel"
  assert kind("flags/recipes/cifar100_pyramidnet200_a240_cutmix.flags")[
      4] == "cutmix"
  assert kind("flags/imagenet/pyramidnet200_a450.flags")[:2] == (
      "imagenet", "bottleneck")


# Trainer processes at once: tracing and graph rewriting take most of a
# flagfile's time, on one core.
PARALLEL = 2


@pytest.fixture(scope="module")
def rows(request, tmp_path_factory):
  """{flagfile: flagfile_check.check row} for the flagfiles selected."""
  selected = [
      item.callspec.params["flagfile"] for item in request.session.items
      if item.originalname ==
      "test_flagfile_network_trains_a_step_and_evaluates"]
  root = str(tmp_path_factory.mktemp("flagfiles"))
  cache = {}
  for flagfile in selected:  # data directories first, once per dataset
    flagfile_check.data_dir_for(root, flagfile, cache)
  with concurrent.futures.ThreadPoolExecutor(PARALLEL) as pool:
    futures = {f: pool.submit(flagfile_check.check, f, root, cache)
               for f in selected}
    return {f: future.result() for f, future in futures.items()}


@pytest.mark.parametrize("flagfile", flagfile_check.CI_FLAGFILES)
def test_flagfile_network_trains_a_step_and_evaluates(flagfile, rows):
  assert rows[flagfile]["ok"], rows[flagfile]["detail"]

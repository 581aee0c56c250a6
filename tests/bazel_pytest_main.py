"""Runs pytest on the test files given as arguments; used as `main` of every py_test.

Bazel runs a py_test as a plain Python program, so this wrapper hands the test
file(s) (passed via `args` in //:BUILD) to pytest and exits with pytest's exit
code. Exit code 5 ("no tests were collected") is turned into a failure, so a
test file that silently collects nothing cannot pass.

Bazel-specific environment fixes, applied only when run by `bazel test`
(TEST_TMPDIR is set):
  * HOME and TMPDIR point at fresh writable directories under TEST_TMPDIR
    (the sandbox mounts the real home read-only; libraries such as TensorFlow,
    torch and tensorflow-datasets write caches under $HOME);
  * pytest's cache provider is disabled (the runfiles tree is not the repo);
  * bytecode is not written next to the (read-only) sources.
Extra pytest options can be given with `bazel test --test_arg=-k --test_arg=expr`.
"""

import os
import sys
import tempfile


def _bazel_environment() -> list:
    test_tmpdir = os.environ.get("TEST_TMPDIR")
    if not test_tmpdir:
        return []
    home = os.path.join(test_tmpdir, "home")
    tmp = os.path.join(test_tmpdir, "tmp")
    os.makedirs(home, exist_ok=True)
    os.makedirs(tmp, exist_ok=True)
    os.environ["HOME"] = home
    os.environ["TMPDIR"] = tmp
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    tempfile.tempdir = None  # re-read TMPDIR
    sys.dont_write_bytecode = True
    options = ["-p", "no:cacheprovider", "--basetemp", os.path.join(tmp, "pytest")]
    # Per-test-case results in Bazel's test.xml (bazel-testlogs/<test>/test.xml).
    xml_output = os.environ.get("XML_OUTPUT_FILE")
    if xml_output:
        options += ["--junitxml", xml_output]
    return options


def _fix_script_dir_on_path() -> None:
    # Python puts the *resolved* directory of this script on sys.path[0]. In a
    # runfiles tree the script is a symlink into the source checkout, so that
    # entry would be the real tests/ directory; use the runfiles one instead so
    # tests only see what their BUILD target declares.
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and sys.path[0] == os.path.dirname(os.path.realpath(__file__)):
        sys.path[0] = here


def main(argv: list) -> int:
    if not any(a.endswith(".py") for a in argv):
        print("bazel_pytest_main: no test file given in %r" % (argv,), file=sys.stderr)
        return 2
    options = _bazel_environment()

    import pytest  # imported only once HOME/TMPDIR are fixed

    code = int(pytest.main(options + ["-v"] + argv))
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("bazel_pytest_main: pytest collected no tests from %r; failing." % (argv,),
              file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    _fix_script_dir_on_path()
    sys.exit(main(sys.argv[1:]))

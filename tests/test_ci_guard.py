"""The CI guard of conftest.py: under CI=true a skip for a missing resource fails the run and names
the resource; a skip about the GPU stays a skip; outside CI skips stay skips, listed in one line."""
import os
import shutil
import subprocess
import sys

import pytest

from conftest import TESTS

SAMPLE = '''
import pytest
pytest.importorskip("a_module_nobody_has", reason="pip install the-missing-extra")

def test_never_runs():
    pass
'''
CASES = '''
import pytest

def test_needs_chromium():
    pytest.skip("no chromium binary: apt-get install chromium")

def test_needs_gpu():
    pytest.skip("needs a GPU (CUDA)")

def test_runs():
    assert True
'''


# As .ci/run runs the suite (two pytest-xdist workers, a file to each) and in one process.
MODES = pytest.mark.parametrize("workers", [[], ["-n", "2", "--dist", "loadfile"]], ids=["one-process", "xdist"])


def run_pytest(folder, ci: bool, workers=()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *workers, str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=300)


def make_suite(tmp_path):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_cases.py").write_text(CASES)
    (tmp_path / "test_module_skip.py").write_text(SAMPLE)
    return tmp_path


@MODES
def test_under_ci_a_missing_resource_fails_and_is_named(tmp_path, workers):
    res = run_pytest(make_suite(tmp_path), ci=True, workers=workers)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "apt-get install chromium" in out and "pip install the-missing-extra" in out, out
    assert "1 failed" in out and "1 passed" in out, out
    assert "FAILED (CI=true, a whole file would be skipped) test_module_skip.py" in out, out
    assert "needs a GPU" in out            # a skip left, with its reason


@MODES
def test_outside_ci_skips_stay_and_are_listed_in_one_line(tmp_path, workers):
    res = run_pytest(make_suite(tmp_path), ci=False, workers=workers)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    summary = [line for line in out.splitlines() if line.startswith("3 skipped; reasons:")]
    assert len(summary) == 1, out
    for reason in ("apt-get install chromium", "needs a GPU", "pip install the-missing-extra"):
        assert reason in summary[0], summary


@MODES
def test_under_ci_a_file_skipped_whole_fails_the_run_without_stopping_it(tmp_path, workers):
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_module_skip.py").write_text(SAMPLE)
    (tmp_path / "test_fine.py").write_text("def test_fine():\n    pass\n")
    res = run_pytest(tmp_path, ci=True, workers=workers)
    out = res.stdout + res.stderr
    assert res.returncode == 1 and "1 passed" in out, out     # the other file still ran
    assert "pip install the-missing-extra" in out, out

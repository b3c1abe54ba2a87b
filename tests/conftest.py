import os
import pathlib

# Before torch and numpy load. An explicit thread count: elit's automatic choice (from the load
# average) would make subprocess tests depend on what else runs on the machine.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
# Tiny test models gain nothing from threads, and two threads on a busy 2-core machine make
# small forwards far slower; tests that need more set it themselves.
torch.set_num_threads(1)

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent

# Under CI a test that would skip because setup left something out (the dataset, chromium, an extra)
# fails instead, naming what is missing: a green CI run must mean the tests ran. Only a skip whose
# reason is about the GPU stays a skip (a test that needs one, or a no-CUDA case on a machine with one).
IN_CI = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
GPU_SKIPS = ("needs a GPU", "a GPU is present")


def _fmnist_guard():
    from elit.data.fashion_mnist import missing_files
    folder, missing = missing_files()
    reason = (f"Fashion-MNIST is not in {folder} (missing {', '.join(missing)}): apt-get install "
              "dataset-fashion-mnist (scripts/setup.sh does), or set ELIT_FMNIST_ROOT to a folder with the four idx files")
    return pytest.mark.skipif(bool(missing), reason=reason)


# The one guard for every test that reads the real dataset (honours ELIT_FMNIST_ROOT).
needs_fmnist = _fmnist_guard()


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:    # (path, line, "Skipped: reason")
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


def _missing_resource(report) -> str | None:
    """Under CI, the reason of a skip that a missing resource caused; else None."""
    if not (IN_CI and report.skipped and not hasattr(report, "wasxfail")):
        return None
    reason = _skip_reason(report)
    return None if any(g in reason for g in GPU_SKIPS) else reason


_SKIPPED_FILES = []    # under CI: files skipped whole at collection (a module-level importorskip)


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    reason = _missing_resource(report)
    if reason is not None:
        report.outcome = "failed"
        report.longrepr = (f"CI=true and this test would be skipped: {reason}. Setup did not install what the "
                           "tests need; run `bash scripts/setup.sh` (CI must not pass with tests left out)")


def pytest_collectreport(report):
    # Failing the collection would stop the whole run: fail it at the end. Under pytest-xdist (-n) this
    # hook also runs in the controller, which receives every worker's skipped collection (once): the
    # controller's list decides the exit status, a worker's own would be lost.
    reason = _missing_resource(report)
    if reason is not None and f"{report.nodeid}: {reason}" not in _SKIPPED_FILES:
        _SKIPPED_FILES.append(f"{report.nodeid}: {reason}")


# The files that take minutes (the study smoke runs, the README walk-through; see --durations in CI),
# scheduled first. pytest-xdist's --dist loadfile hands out whole files in collection order (.ci/run
# turns off its own reordering, by test count, which sent these last): started last, the longest
# left one worker alone with it for the final minutes of the run.
LONGEST_FILES = ("test_study_front.py", "test_study.py", "test_readme.py", "test_precision.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: k for k, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))    # stable: the rest keep their order


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED_FILES and exitstatus == 0 and not _is_xdist_worker(session.config):
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter):
    """Outside CI skips stay skips; one line at the end says how many and why, so none goes unseen."""
    for line in _SKIPPED_FILES:
        terminalreporter.write_line(f"FAILED (CI=true, a whole file would be skipped) {line}; setup did not "
                                    "install what the tests need: run `bash scripts/setup.sh`", red=True)
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped:
        reasons = sorted({_skip_reason(r) for r in skipped})
        terminalreporter.write_line(f"{len(skipped)} skipped; reasons: " + " | ".join(reasons), yellow=True)


def load_script(relative: str, name: str | None = None):
    """A script of the repository (scripts/, benchmarks/: not a package) imported as a module."""
    import importlib.util
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def thread_settings_stay_in_their_test():
    """A command run in-process with --threads N keeps N in ELIT_THREADS and OMP_NUM_THREADS for the
    rest of the process, as it should in a user's session; a test must not pass them on to the next
    one, whose thread count (and so its last bits) would depend on which tests its worker ran before."""
    import elit._threads as threads
    names = (*threads.THREAD_VARIABLES, "ELIT_THREADS")
    saved, auto, count = {k: os.environ.get(k) for k in names}, threads.AUTO_SET, torch.get_num_threads()
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    threads.AUTO_SET = auto
    torch.set_num_threads(count)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Reference statistics cached by one test must not be read by another run of the suite, nor
    land in the user's ~/.cache."""
    old = os.environ.get("ELIT_CACHE_DIR")
    os.environ["ELIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("elit-cache"))
    yield
    if old is None:
        os.environ.pop("ELIT_CACHE_DIR", None)
    else:
        os.environ["ELIT_CACHE_DIR"] = old


@pytest.fixture
def fixtures_dir():
    """Reference inputs/outputs of the public reference implementations (see each folder's README)."""
    return TESTS / "fixtures"

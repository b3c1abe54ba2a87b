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


def load_script(relative: str, name: str | None = None):
    """A script of the repository (scripts/, benchmarks/: not a package) imported as a module."""
    import importlib.util
    path = REPO / relative
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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

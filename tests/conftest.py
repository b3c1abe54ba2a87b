import os
import pathlib

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test models gain nothing from threads, and two threads on a busy 2-core machine make
# small forwards far slower; tests that need more set it themselves.
torch.set_num_threads(1)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def fixtures_dir():
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.fail(f"reference fixtures not found at {path}: clone the repo beside shared/ as CI does")
    return path

import os
import pathlib

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def fixtures_dir():
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.fail(f"reference fixtures not found at {path}: clone the repo beside shared/ as CI does")
    return path

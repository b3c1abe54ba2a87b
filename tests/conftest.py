import os
import pathlib

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny test models gain nothing from threads, and two threads on a busy 2-core machine make
# small forwards far slower; tests that need more set it themselves.
torch.set_num_threads(1)

TESTS = pathlib.Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def fixtures_dir():
    """Reference inputs/outputs of the public reference implementations (see each folder's README)."""
    return TESTS / "fixtures"

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from refdata import faces_dir, reference_dir, require  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    """Tests are sized for 2 cores; keep torch from oversubscribing them."""
    torch.set_num_threads(2)


@pytest.fixture
def ref() -> Path:
    """The reference fixture folder (skips the test when it is absent)."""
    return require(reference_dir())


@pytest.fixture
def faces() -> Path:
    """The real labelled faces folder (skips the test when it is absent)."""
    return require(faces_dir())

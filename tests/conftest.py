import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from refdata import faces_dir, reference_dir, require  # noqa: E402
from smk import snakemake  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests' models are tiny: one thread is fastest for them and steady on a busy machine."""
    torch.set_num_threads(1)


@pytest.fixture
def ref() -> Path:
    """The reference fixture folder (skips the test when it is absent)."""
    return require(reference_dir())


@pytest.fixture
def faces() -> Path:
    """The real labelled faces folder (skips the test when it is absent)."""
    return require(faces_dir())


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """One full run of the workflow on the smoke config, shared by every test that inspects its results."""
    workdir = tmp_path_factory.mktemp("smoke")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    return workdir


@pytest.fixture(scope="session")
def paper_standins(tmp_path_factory) -> Path:
    """`python -m idiff_core.standins` written once: the paper run's inputs in their published formats.
    Tests take private copies (hard links) before changing anything."""
    from idiff_core.standins import write_standins

    folder = tmp_path_factory.mktemp("standins")
    write_standins(folder)
    return folder

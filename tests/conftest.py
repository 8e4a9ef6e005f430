import os
from pathlib import Path

import pyro
import pytest
import torch

import pyro_gen  # noqa: F401

# one torch thread per pytest-xdist worker (make test runs two on two cores), two otherwise
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


def shared_data_dir() -> Path | None:
    for candidate in (os.environ.get("PYRO_GEN_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "README.md").is_file():
            return Path(candidate)
    return None


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("real data sets not found: set PYRO_GEN_DATA or put ../shared/data beside the repository")
    return path


@pytest.fixture
def one_thread():
    """One torch thread for the test: models that run many small ops (sequence models) are
    slowed down, badly on a busy machine, by a second thread; the setting is restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
